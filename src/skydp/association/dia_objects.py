"""The DiaObject table from DiaSources (``dia_object_table``) and column access shared with ``associate``."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from skydp import tables
from skydp.association.statistics import dia_object_columns

STAT_INPUTS = (
    "diaObjectId", "band", "midpointMjdTai", "ra", "dec", "raErr", "decErr", "ra_dec_Cov",
    "psfFlux", "psfFluxErr", "scienceFlux", "scienceFluxErr",
)
_REQUIRED = {"diaObjectId", "diaSourceId", "visit", "band", "midpointMjdTai", "ra", "dec"}


def numpy_columns(table: pa.Table, names: Iterable[str], what: str) -> dict[str, np.ndarray]:
    """Columns of ``table`` as numpy: ids int64, band str, everything else float64 with nulls -> NaN.

    A missing required column raises ValueError naming it; a missing optional one is all NaN.
    """
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name not in table.column_names:
            if name in _REQUIRED:
                raise ValueError(f"{what}: required column {name!r} is missing")
            out[name] = np.full(table.num_rows, np.nan)
            continue
        column = table.column(name)
        if name.endswith("Id") or name == "visit":
            if column.null_count:
                raise ValueError(f"{what}: column {name!r} has {column.null_count} null(s)")
            out[name] = column.to_numpy().astype(np.int64)
        elif name == "band":
            if column.null_count:
                raise ValueError(f"{what}: column 'band' has {column.null_count} null(s)")
            out[name] = column.to_numpy(zero_copy_only=False).astype(str)
        else:
            out[name] = pc.fill_null(column.cast(pa.float64()), np.nan).to_numpy()
            if name in _REQUIRED and not np.isfinite(out[name]).all():
                raise ValueError(f"{what}: column {name!r} has null or non-finite values")
    return out


def dia_object_table(dia_sources: pa.Table, previous: pa.Table | None = None) -> pa.Table:
    """DiaObject rows (exact DiaObject schema, sorted by diaObjectId) from their DiaSources.

    ``dia_sources`` must hold ALL DiaSources of every object to be (re)computed (any extra columns
    are ignored); each such object's row is computed from scratch. With ``previous`` (a DiaObject
    table), its rows of objects absent from ``dia_sources`` are kept unchanged, so the result is
    the whole updated table. Statistics are defined in ``skydp.association.statistics``.
    """
    cols = numpy_columns(dia_sources, STAT_INPUTS, "dia_object_table(dia_sources)")
    if np.any(cols["diaObjectId"] == 0):
        n = int(np.sum(cols["diaObjectId"] == 0))
        raise ValueError(f"dia_object_table: {n} DiaSource(s) have diaObjectId 0 (not associated)")
    values = dia_object_columns(cols)
    arrays = {
        name: pa.array(v, mask=~np.isfinite(v)) if v.dtype.kind == "f" else pa.array(v)
        for name, v in values.items()
    }
    return update_dia_objects(previous, tables.to_arrow("DiaObject", arrays))


def update_dia_objects(current: pa.Table | None, updated: pa.Table) -> pa.Table:
    """``current`` DiaObject table with the rows of ``updated`` replacing or adding theirs, by diaObjectId."""
    if current is None or current.num_rows == 0:
        return tables.to_arrow("DiaObject", updated)
    current = tables.to_arrow("DiaObject", current)
    kept = current.filter(pc.invert(pc.is_in(current.column("diaObjectId"), updated.column("diaObjectId"))))
    merged = pa.concat_tables([kept, tables.to_arrow("DiaObject", updated)])
    return merged.take(pc.sort_indices(merged, [("diaObjectId", "ascending")]))
