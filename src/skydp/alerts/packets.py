"""LSST alert packets (schema ``lsst.v11_1.alert``) from our DiaSource/DiaObject/forced tables.

Field mapping (the schema wins; a schema field we do not measure is null, a required count
such as ``trailNdata`` is 0):
- diaSource / prvDiaSources: DiaSource columns of the same name; ``timeProcessedMjdTai`` from
  ``time_processed`` (TAI timestamp -> MJD); ``exposureTime`` from the science image (current
  DiaSource only).
- diaObject: DiaObject columns of the same name; ``{b}_psfFluxNdata`` as int; ``validityStartMjdTai``
  = the time the triggering DiaSource was processed (the moment this DiaObject version became
  valid); ``{b}_fpFlux*`` (forced difference-flux means) are not in our DiaObject table: null.
- prvDiaForcedSources: ForcedSourceOnDiaObject rows; ``diaForcedSourceId`` =
  forcedSourceOnDiaObjectId, ``ra``/``dec`` = coord_ra/coord_dec, ``psfFlux*`` = psfDiffFlux*
  (forced flux on the difference image, as in the APDB), ``scienceFlux*`` = psfFlux* (on the visit
  image); ``timeProcessedMjdTai`` from a ``time_processed`` column when present, else the alert's
  processing time (an upper bound).
- prvDiaSources and prvDiaForcedSources cover the 365 days before the DiaSource, as LSST's alerts.
"""

from __future__ import annotations

import datetime
import math
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from skydp.alerts.cutouts import cutout_fits, cutouts_fits
from skydp.alerts.schema import record_fields
from skydp.exposure import Exposure

HISTORY_DAYS = 365.0
_MJD_EPOCH = datetime.datetime(1858, 11, 17)
_FORCED_RENAME = {
    "diaForcedSourceId": "forcedSourceOnDiaObjectId", "ra": "coord_ra", "dec": "coord_dec",
    "psfFlux": "psfDiffFlux", "psfFluxErr": "psfDiffFluxErr",
    "scienceFlux": "psfFlux", "scienceFluxErr": "psfFluxErr",
}
_CUTOUT_KEYS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")


def mjd_from_datetime(value: datetime.datetime) -> float:
    """MJD of a (time-zone naive, TAI) datetime."""
    return (value.replace(tzinfo=None) - _MJD_EPOCH).total_seconds() / 86400.0


def make_alert(
    dia_source: Mapping[str, Any],
    dia_object: Mapping[str, Any] | None,
    prv_dia_sources: pa.Table | None,
    prv_forced: pa.Table | None,
    science: Exposure | None,
    template: Exposure | None,
    difference: Exposure | None,
) -> dict:
    """One alert packet (a dict valid against the schema) for ``dia_source`` (a DiaSource row).

    ``prv_dia_sources`` / ``prv_forced``: earlier DiaSources / ForcedSourceOnDiaObject rows of the
    DiaSource's object (None: the field is null); rows of the 365 days before the DiaSource are
    kept, the DiaSource itself excluded. Cutouts are centred on the DiaSource ra, dec; a missing
    image gives a null cutout.
    """
    ra, dec = float(dia_source["ra"]), float(dia_source["dec"])
    cutouts = {key: None if image is None else cutout_fits(image, ra, dec)
               for key, image in zip(_CUTOUT_KEYS, (science, template, difference))}
    exposure_time = None if science is None else float(science.info.exptime)
    return _packet(dia_source, dia_object, prv_dia_sources, prv_forced, cutouts, exposure_time)


def visit_alerts(
    dia_sources: pa.Table,
    dia_objects: pa.Table,
    history: pa.Table | None,
    forced: pa.Table | None,
    science: Exposure | None,
    template: Exposure | None,
    difference: Exposure | None,
) -> list[dict]:
    """Alerts for every DiaSource of one visit+detector (whose images are given).

    ``dia_objects`` must hold the (updated) DiaObject of every DiaSource; ``history`` the earlier
    DiaSources and ``forced`` the ForcedSourceOnDiaObject rows of those objects (either may hold
    more rows; None gives null histories).
    """
    object_ids = dia_sources.column("diaObjectId").to_numpy()
    object_rows = {row["diaObjectId"]: row for row in dia_objects.filter(
        pc.is_in(dia_objects.column("diaObjectId"), pa.array(np.unique(object_ids)))).to_pylist()}
    missing = set(object_ids.tolist()) - set(object_rows)
    if missing:
        raise ValueError(f"visit_alerts: dia_objects lacks {len(missing)} DiaObject(s), e.g. {min(missing)}")
    history_of = _split_by_object(history, object_ids)
    forced_of = _split_by_object(forced, object_ids)
    ra, dec = dia_sources.column("ra").to_numpy(), dia_sources.column("dec").to_numpy()
    n = dia_sources.num_rows
    cutouts = {key: [None] * n if image is None else cutouts_fits(image, ra, dec)
               for key, image in zip(_CUTOUT_KEYS, (science, template, difference))}
    exposure_time = None if science is None else float(science.info.exptime)
    return [
        _packet(row, object_rows[row["diaObjectId"]], history_of(row["diaObjectId"]), forced_of(row["diaObjectId"]),
                {key: cutouts[key][k] for key in _CUTOUT_KEYS}, exposure_time)
        for k, row in enumerate(dia_sources.to_pylist())
    ]


def _packet(
    dia_source: Mapping[str, Any],
    dia_object: Mapping[str, Any] | None,
    prv_dia_sources: pa.Table | None,
    prv_forced: pa.Table | None,
    cutouts: Mapping[str, bytes | None],
    exposure_time: float | None,
) -> dict:
    """The packet of ``make_alert`` from its cutout FITS bytes and the science image's exposure time."""
    source = _dia_source_values(dia_source)
    if exposure_time is not None:
        source["exposureTime"] = exposure_time
    t = float(source["midpointMjdTai"])
    processed = float(source["timeProcessedMjdTai"])
    what = f"DiaSource {source['diaSourceId']}"
    return {
        "diaSourceId": int(source["diaSourceId"]),
        "observation_reason": None,
        "target_name": None,
        "diaSource": _avro_record("diaSource", source, what),
        "prvDiaSources": _previous(prv_dia_sources, t, "diaSource", processed, exclude=int(source["diaSourceId"])),
        "prvDiaForcedSources": _previous(prv_forced, t, "diaForcedSource", processed),
        "diaObject": None if dia_object is None else _avro_record(
            "diaObject", {"validityStartMjdTai": processed, **dia_object}, f"DiaObject of {what}"
        ),
        "ssSource": None,
        "mpc_orbits": None,
        **cutouts,
    }


def _split_by_object(table: pa.Table | None, object_ids: np.ndarray):
    """Function diaObjectId -> that object's rows of ``table`` (None when ``table`` is None)."""
    if table is None:
        return lambda _oid: None
    table = table.filter(pc.is_in(table.column("diaObjectId"), pa.array(np.unique(object_ids))))
    order = np.argsort(table.column("diaObjectId").to_numpy(), kind="stable")
    table = table.take(order)  # once: a zero-copy slice per object below (a take per object costs ~1 ms)
    sorted_ids = table.column("diaObjectId").to_numpy()

    def rows(oid: int) -> pa.Table:
        lo, hi = np.searchsorted(sorted_ids, [oid, oid + 1])
        return table.slice(lo, hi - lo)

    return rows


def _previous(table: pa.Table | None, t: float, record: str, processed: float, exclude: int | None = None) -> list | None:
    """Rows of ``table`` in the 365 days before ``t`` as alert records, oldest first."""
    if table is None:
        return None
    rows = table.to_pylist()
    out = []
    for row in sorted(rows, key=lambda r: r["midpointMjdTai"]):
        if not t - HISTORY_DAYS <= row["midpointMjdTai"] < t:
            continue
        if record == "diaSource":
            if row["diaSourceId"] == exclude:
                continue
            out.append(_avro_record(record, _dia_source_values(row), f"previous DiaSource {row['diaSourceId']}"))
        else:
            values = {name: row.get(ours) for name, ours in _FORCED_RENAME.items()}
            values["timeProcessedMjdTai"] = (
                mjd_from_datetime(row["time_processed"]) if row.get("time_processed") else processed
            )
            out.append(_avro_record(record, {**row, **values}, f"forced source {values['diaForcedSourceId']}"))
    return out


def _dia_source_values(row: Mapping[str, Any]) -> dict:
    values = dict(row)
    stamp = values.get("time_processed")
    if isinstance(stamp, datetime.datetime):
        values["timeProcessedMjdTai"] = mjd_from_datetime(stamp)
    return values


def _avro_record(record: str, values: Mapping[str, Any], what: str) -> dict:
    """Values for every field of the schema record type (see the module docstring for the rules)."""
    out = {}
    for spec in record_fields(record):
        value = values.get(spec.name)
        if isinstance(value, float) and math.isnan(value) and spec.nullable:
            value = None
        if value is None:
            if spec.nullable:
                out[spec.name] = None
                continue
            if spec.type in ("int", "long"):
                out[spec.name] = 0
                continue
            raise ValueError(f"{what}: alert field {record}.{spec.name} is required but has no value")
        if spec.type in ("int", "long"):
            out[spec.name] = int(value)
        elif spec.type in ("float", "double"):
            out[spec.name] = float(value)
        elif spec.type == "boolean":
            out[spec.name] = bool(value)
        else:
            out[spec.name] = str(value)
    return out
