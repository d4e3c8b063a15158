"""DiaSource -> DiaObject association, visit by visit in time order (lsst_schema.md section 3.5).

Each visit's DiaSources are matched one-to-one to the DiaObjects known at that time (see
``skydp.association.matching`` for candidates, cost and assignment); a DiaObject gets at most one
DiaSource per visit. Unmatched DiaSources start new DiaObjects whose id is the diaSourceId of
that first DiaSource, as LSST's ap_association does. Object positions used for matching are the
running mean unit vectors, updated after every visit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from skydp.association.dia_objects import STAT_INPUTS, dia_object_table, numpy_columns
from skydp.association.matching import (
    match_one_to_one,
    pair_costs,
    sky_from_vectors,
    unit_vectors,
)
from skydp.association.object_state import ObjectState

DEFAULT_RADIUS_ARCSEC = 1.0
POSITION_ERROR_FLOOR_ARCSEC = 0.05  # added in quadrature: no pair is more certain than this
POSITION_ERROR_FALLBACK_ARCSEC = 0.2  # per axis, for a DiaSource or DiaObject without errors
_DEG2_TO_ARCSEC2 = 3600.0**2
_CORRELATION_ROUNDING = 1e-5  # |correlation| up to 1 + this is float32 rounding of a singular covariance


@dataclass
class Association:
    """Result of ``associate``.

    dia_sources: the input DiaSources (same rows and order) with diaObjectId filled.
    dia_objects: exact DiaObject schema, only the objects created or updated by these DiaSources,
        with statistics over all their DiaSources (``history`` plus the new ones).
    new_ids: diaObjectIds of the objects created here.
    """

    dia_sources: pa.Table
    dia_objects: pa.Table
    new_ids: np.ndarray


def _object_state(dia_objects: pa.Table | None) -> ObjectState:
    """ObjectState of the current DiaObject table (empty when None)."""
    if dia_objects is None or dia_objects.num_rows == 0:
        return ObjectState(np.empty(0, np.int64), np.empty((0, 3)), np.empty(0), np.empty((0, 3)))
    c = numpy_columns(
        dia_objects, ("diaObjectId", "ra", "dec", "raErr", "decErr", "ra_dec_Cov", "nDiaSources"),
        "associate(dia_objects)",
    )
    count = np.where(np.isfinite(c["nDiaSources"]) & (c["nDiaSources"] > 0), c["nDiaSources"], 1.0)
    # DiaObject errors are already on-sky; the mean's covariance times n^2 is the summed covariance
    cov = _covariance(c["raErr"], c["decErr"], c["ra_dec_Cov"], "associate(dia_objects)")
    return ObjectState(c["diaObjectId"], unit_vectors(c["ra"], c["dec"]) * count[:, None], count,
                       cov * count[:, None] ** 2)


def _covariance(err_east_deg: np.ndarray, err_north_deg: np.ndarray, cov_deg2: np.ndarray, what: str) -> np.ndarray:
    """(N, 3) on-sky covariance (ee, nn, en) in arcsec^2; the fallback where errors are missing.

    A covariance that is not positive semi-definite (|ra_dec_Cov| > raErr * decErr beyond float32
    rounding) is an error; within rounding (e.g. the singular scatter covariance of a two-source
    DiaObject read back from float32 columns) the correlation is clipped to +-1.
    """
    ee = (err_east_deg * 3600.0) ** 2
    nn = (err_north_deg * 3600.0) ** 2
    en = np.nan_to_num(cov_deg2 * _DEG2_TO_ARCSEC2)
    limit = np.sqrt(ee * nn)
    invalid = np.abs(en) > limit * (1.0 + _CORRELATION_ROUNDING)
    en = np.clip(en, -limit, limit)
    if invalid.any():
        raise ValueError(f"{what}: {int(invalid.sum())} row(s) have |ra_dec_Cov| > raErr * decErr (a position "
                         f"covariance that is not positive semi-definite), e.g. row {int(np.argmax(invalid))}")
    missing = ~(np.isfinite(ee) & np.isfinite(nn))
    fallback = POSITION_ERROR_FALLBACK_ARCSEC**2
    ee, nn = np.where(missing, fallback, ee), np.where(missing, fallback, nn)
    return np.stack([ee, nn, np.where(missing, 0.0, en)], axis=1)


def associate(
    dia_sources: pa.Table,
    dia_objects: pa.Table | None = None,
    radius_arcsec: float = DEFAULT_RADIUS_ARCSEC,
    *,
    history: pa.Table | None = None,
) -> Association:
    """Associate DiaSources (one or several visits) with DiaObjects, visit by visit in time order.

    ``dia_objects`` is the current DiaObject table (None or empty at the start). ``history`` holds
    the earlier DiaSources of those objects (extra rows of untouched objects are ignored); it is
    required when ``dia_objects`` has rows, because the statistics of an updated object are
    recomputed from all its DiaSources.
    """
    if dia_objects is not None and dia_objects.num_rows > 0 and history is None:
        raise ValueError("associate: history (the earlier DiaSources of dia_objects) is required"
                         " to update the statistics of existing DiaObjects")
    assigned, new_ids = assign_dia_object_ids(dia_sources, dia_objects, radius_arcsec)
    out_sources = _with_object_ids(dia_sources, assigned)
    parts = [out_sources.select([n for n in STAT_INPUTS if n in out_sources.column_names])]
    if history is not None and history.num_rows:
        old = history.filter(pc.is_in(history.column("diaObjectId"), pa.array(_sorted_unique(assigned))))
        if old.num_rows:
            old = old.filter(pc.invert(pc.is_in(old.column("diaSourceId"), out_sources.column("diaSourceId"))))
            parts.insert(0, old.select([n for n in STAT_INPUTS if n in old.column_names]))
    sources_of_touched = pa.concat_tables(parts, promote_options="permissive")
    return Association(out_sources, dia_object_table(sources_of_touched), new_ids)


def assign_dia_object_ids(
    dia_sources: pa.Table, dia_objects: pa.Table | None = None, radius_arcsec: float = DEFAULT_RADIUS_ARCSEC
) -> tuple[np.ndarray, np.ndarray]:
    """The matching step of ``associate`` alone: (diaObjectId per DiaSource row, ids of new objects)."""
    if not np.isfinite(radius_arcsec) or radius_arcsec <= 0:
        raise ValueError(f"radius_arcsec must be a positive number, got {radius_arcsec!r}")
    src = numpy_columns(
        dia_sources, ("diaSourceId", "visit", "midpointMjdTai", "ra", "dec", "raErr", "decErr", "ra_dec_Cov"),
        "associate(dia_sources)",
    )
    if _has_duplicates(src["diaSourceId"]):
        raise ValueError("associate: dia_sources has duplicate diaSourceId values")
    objects = _object_state(dia_objects)
    n_existing = objects.size
    if np.isin(src["diaSourceId"], objects.ids[:n_existing]).any():
        raise ValueError("associate: some diaSourceIds are already DiaObject ids (visit associated twice?)")

    cos_dec = np.cos(np.radians(src["dec"]))
    src_vec = unit_vectors(src["ra"], src["dec"])
    src_cov = _covariance(src["raErr"] * cos_dec, src["decErr"], src["ra_dec_Cov"] * cos_dec, "associate(dia_sources)")
    floor = POSITION_ERROR_FLOOR_ARCSEC**2
    assigned = np.zeros(src["diaSourceId"].size, np.int64)
    for rows in _visits_in_time_order(src["visit"], src["midpointMjdTai"]):
        s, o = objects.candidates(src_vec[rows], radius_arcsec)
        obj_ra, obj_dec = sky_from_vectors(objects.directions(o))
        d_east = (np.mod(src["ra"][rows[s]] - obj_ra + 180.0, 360.0) - 180.0) * np.cos(np.radians(obj_dec))
        d_north = src["dec"][rows[s]] - obj_dec
        cov = src_cov[rows[s]] + objects.covariance(o)
        cost = pair_costs(d_east * 3600.0, d_north * 3600.0, cov[:, 0] + floor, cov[:, 1] + floor, cov[:, 2])
        ms, mo = match_one_to_one(s, o, cost, rows.size, objects.size)
        matched_rows = rows[ms]
        assigned[matched_rows] = objects.ids[mo]
        objects.update(mo, src_vec[matched_rows], src_cov[matched_rows])
        unmatched = np.ones(rows.size, bool)
        unmatched[ms] = False
        new_rows = rows[unmatched]
        assigned[new_rows] = src["diaSourceId"][new_rows]
        objects.add(src["diaSourceId"][new_rows], src_vec[new_rows], np.ones(new_rows.size), src_cov[new_rows])
    return assigned, objects.ids[n_existing:objects.size].copy()


def _visits_in_time_order(visit: np.ndarray, mjd: np.ndarray) -> list[np.ndarray]:
    """Row indices of each visit, visits ordered by their earliest midpointMjdTai (then visit id)."""
    visits, inverse = np.unique(visit, return_inverse=True)
    start = np.full(visits.size, np.inf)
    np.minimum.at(start, inverse, mjd)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=visits.size))[:-1]
    groups = np.split(order, bounds)
    return [groups[k] for k in np.lexsort((visits, start))]


def _with_object_ids(dia_sources: pa.Table, ids: np.ndarray) -> pa.Table:
    column = pa.array(ids, pa.int64())
    if "diaObjectId" in dia_sources.column_names:
        index = dia_sources.column_names.index("diaObjectId")
        return dia_sources.set_column(index, dia_sources.schema.field(index).with_type(pa.int64()), column)
    return dia_sources.append_column("diaObjectId", column)


# np.unique without return_* arguments uses a hash table in numpy >= 2.3 that is ~100x slower than
# sorting on 1e6 int64 ids; these two helpers sort instead.
def _sorted_unique(values: np.ndarray) -> np.ndarray:
    ordered = np.sort(values)
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])] if ordered.size else ordered


def _has_duplicates(values: np.ndarray) -> bool:
    ordered = np.sort(values)
    return bool(np.any(ordered[1:] == ordered[:-1]))
