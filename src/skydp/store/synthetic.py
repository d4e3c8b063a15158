"""Synthetic rows for any schema table: used by the store tests and the benchmark.

Required columns get plausible values (ids unique, bands from ugrizy, MJDs in 2026, fluxes in
nJy), nullable columns other than the ones asked for stay null.  Positions are supplied by the
caller so that tests control the sky distribution.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from skydp import tables
from skydp.store.layout import position_columns

BANDS = np.array(list("ugrizy"))


def synthetic_table(table: str, ra: np.ndarray, dec: np.ndarray, *, seed: int = 0,
                    first_id: int = 1, extra: dict[str, np.ndarray] | None = None) -> pa.Table:
    """Rows of ``table`` at the given positions (deg); ``extra`` sets further columns."""
    rng = np.random.default_rng(seed)
    n = len(ra)
    data: dict[str, object] = {}
    ra_col, dec_col = position_columns(table)
    data[ra_col], data[dec_col] = np.asarray(ra, float), np.asarray(dec, float)
    for col in ("coord_ra", "ra"):
        data.setdefault(col, data[ra_col])
    for col in ("coord_dec", "dec"):
        data.setdefault(col, data[dec_col])
    for field in tables.arrow_schema(table):
        if field.name in data or field.nullable:
            continue
        t = field.type
        if field.name.endswith("Id") or field.name in ("visit",):
            data[field.name] = np.arange(first_id, first_id + n, dtype=np.int64)
        elif field.name == "band":
            data[field.name] = BANDS[rng.integers(0, 6, n)]
        elif "Mjd" in field.name or "MJD" in field.name:
            data[field.name] = 61100.0 + rng.uniform(0, 30, n)
        elif pa.types.is_timestamp(t):
            data[field.name] = np.full(n, np.datetime64("2026-03-24T00:00:00", "us"))
        elif pa.types.is_integer(t):
            data[field.name] = rng.integers(0, 100, n)
        elif pa.types.is_floating(t):
            data[field.name] = rng.normal(1000.0, 100.0, n)
        elif pa.types.is_boolean(t):
            data[field.name] = np.zeros(n, bool)
        else:
            data[field.name] = np.full(n, "x")
    names = set(tables.column_names(table))
    data.update(extra or {})
    return tables.to_arrow(table, {k: v for k, v in data.items() if k in names})
