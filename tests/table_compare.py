"""Exact comparison of Arrow tables in which NaN equals NaN (pyarrow's Table.equals says NaN != NaN),
and the published tables of a repository in a canonical order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def published_tables(root: Path) -> dict[str, pa.Table]:
    """Every published table of a repository, rows in a canonical order; run ids are left out
    (they differ between runs by design)."""
    source = ds.dataset(root / "hats" / "Source" / "dataset", format="parquet", partitioning="hive").to_table()
    partition_columns = [c for c in ("Norder", "Dir", "Npix") if c in source.column_names]
    out = {"Source": source.drop_columns(partition_columns).sort_by("sourceId")}
    for name in ("Visit", "CcdVisit", "ImageMetadata"):
        out[name] = pq.read_table(root / "tables" / f"{name}.parquet")
    out["ImageMetadata"] = out["ImageMetadata"].drop_columns(["created_by_run"])
    return out


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
