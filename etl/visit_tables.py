"""Visit and CcdVisit rows from the metadata recorded at ingest (and the single-visit summary).

Zenith distance and altitude follow from the airmass with the plane-parallel relation
sec(z) = airmass; azimuth is not derivable from the contract headers and stays null.
Timestamps are TAI, written as naive datetimes like DP1's expMidpt/obsStart.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa
from astropy.time import Time

from skydp import tables
from skydp.etl.registry import Dataset
from skydp.ids import pack_visit_detector


def _tai_datetime(mjd: float):
    return Time(mjd, format="mjd", scale="tai").to_datetime()


def _pointing_columns(meta: dict[str, Any], exptime: float) -> dict[str, Any]:
    zenith = float(np.degrees(np.arccos(min(1.0, 1.0 / meta["airmass"])))) if meta["airmass"] >= 1 else None
    mid = meta["mjd"] + exptime / 2 / 86400
    return {
        "band": meta["band"],
        "physical_filter": meta["physical_filter"],
        "skyRotation": meta["rotpa"],
        "zenithDistance": zenith,
        "expTime": exptime,
        "expMidpt": _tai_datetime(mid),
        "expMidptMJD": mid,
        "obsStart": _tai_datetime(meta["mjd"]),
        "obsStartMJD": meta["mjd"],
    }


def _exposures_by_ccd(inputs: list[Dataset]) -> dict[tuple[int, int], list[Dataset]]:
    """Input images grouped per (visit, detector); two snaps make one CCD visit."""
    groups: dict[tuple[int, int], list[Dataset]] = defaultdict(list)
    for ds in inputs:
        groups[(ds.data_id["visit"], ds.data_id["detector"])].append(ds)
    return dict(sorted(groups.items()))


def visit_table(inputs: list[Dataset]) -> pa.Table:
    """One Visit row per visit: boresight pointing, filter, airmass and times."""
    rows: dict[int, dict[str, Any]] = {}
    for (visit, _detector), snaps in _exposures_by_ccd(inputs).items():
        if visit in rows:
            continue
        meta = min((s.meta for s in snaps), key=lambda m: m["mjd"])
        exptime = sum(s.meta["exptime"] for s in snaps)
        row = {"visit": visit, "ra": meta["boresight_ra"], "dec": meta["boresight_dec"],
               "airmass": meta["airmass"], "azimuth": None, **_pointing_columns(meta, exptime)}
        row["altitude"] = None if row["zenithDistance"] is None else 90.0 - row["zenithDistance"]
        rows[visit] = row
    return _to_table("Visit", list(rows.values()))


def ccd_visit_table(inputs: list[Dataset], summaries: dict[tuple[int, int], dict[str, Any]] | None = None) -> pa.Table:
    """One CcdVisit row per (visit, detector): geometry from ingest plus the single-visit summary if known."""
    summaries = summaries or {}
    rows = []
    for (visit, detector), snaps in _exposures_by_ccd(inputs).items():
        meta = min((s.meta for s in snaps), key=lambda m: m["mjd"])
        exptime = sum(s.meta["exptime"] for s in snaps)
        row = {
            "ccdVisitId": pack_visit_detector(visit, detector),
            "visitId": visit,
            "detector": detector,
            "ra": meta["ra"],
            "dec": meta["dec"],
            "pixelScale": meta["pixel_scale"],
            "xSize": meta["width"],
            "ySize": meta["height"],
            "darkTime": exptime,
            **{f"{c}{a}": meta[f"{c}{a}"] for c in ("llc", "ulc", "urc", "lrc") for a in ("ra", "dec")},
            **_pointing_columns(meta, exptime),
        }
        row.update(summaries.get((visit, detector), {}))
        rows.append(row)
    return _to_table("CcdVisit", rows)


def _to_table(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    names = sorted({key for row in rows for key in row})
    return tables.to_arrow(name, {c: [r.get(c) for r in rows] for c in names}) if rows else tables.empty_table(name)
