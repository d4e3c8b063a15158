"""Exact comparison of Arrow tables in which NaN equals NaN (pyarrow's Table.equals says NaN != NaN)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def assert_tables_equal(got: pa.Table, expected: pa.Table, name: str = "") -> None:
    """Same schema, same rows in the same order, every value identical (NaN == NaN, null == null)."""
    assert got.schema.equals(expected.schema, check_metadata=False), f"{name}: schemas differ"
    assert got.num_rows == expected.num_rows, f"{name}: {got.num_rows} rows, expected {expected.num_rows}"
    for column in expected.column_names:
        a, b = got[column], expected[column]
        if pa.types.is_floating(b.type):
            x = a.to_numpy(zero_copy_only=False)
            y = b.to_numpy(zero_copy_only=False)
            same = np.array_equal(x, y, equal_nan=True) and a.null_count == b.null_count
        else:
            same = a.equals(b)
        assert same, f"{name}: column {column!r} differs"
