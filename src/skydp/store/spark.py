"""Run skydp queries on Spark: the repository's tables as Spark temporary views.

Every HATS catalog ``REPO/hats/<Table>/dataset`` is read directly (Norder, Dir and Npix come from
the directory names, as BIGINT like in DuckDB), the plain tables ``REPO/tables/<Table>.parquet``
too, and a table that does not exist yet is an empty view with the schema columns, as in
catalog.duckdb.  The views of sql/*.sql (SourceImage, light curves) are translated and created
as well, so a DuckDB query runs unchanged through translate_to_spark.  pyspark is an optional
dependency (extras ``spark``/``test``): it is imported only inside these functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import sqlglot
from sqlglot import exp

from skydp import tables
from skydp.store.database import PLAIN_TABLES, sql_files
from skydp.store.layout import HEALPIX_COLUMN, PARTITION_COLUMNS, positional_tables
from skydp.store.translate import translate_to_spark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def local_session(cores: int = 2, shuffle_partitions: int = 4) -> "SparkSession":
    """A local SparkSession for skydp (no UI, few shuffle partitions, Arrow transfers)."""
    from pyspark.sql import SparkSession
    return (SparkSession.builder.master(f"local[{int(cores)}]").appName("skydp")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", str(int(shuffle_partitions)))
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.session.timeZone", "UTC")
            .getOrCreate())


def _empty(spark: "SparkSession", table: str, extra: list[str]) -> "DataFrame":
    from pyspark.sql.pandas.types import from_arrow_schema
    schema = tables.arrow_schema(table)
    for name in extra:
        schema = schema.append(pa.field(name, pa.int64()))
    return spark.createDataFrame([], from_arrow_schema(schema))


def read_hats(spark: "SparkSession", catalog: str | os.PathLike) -> "DataFrame":
    """A HATS catalog directory as a DataFrame with BIGINT Norder/Dir/Npix partition columns."""
    from pyspark.sql import functions as F
    dataset = Path(catalog) / "dataset"
    if not dataset.is_dir():
        raise ValueError(f"{catalog}: not a HATS catalog (no dataset/ directory)")
    df = spark.read.option("basePath", str(dataset)).parquet(str(dataset))
    missing = [c for c in PARTITION_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{dataset}: no {missing} partition directories (expected Norder=k/Dir=d/Npix=n/)")
    return df.withColumns({c: F.col(c).cast("bigint") for c in PARTITION_COLUMNS})


def _views() -> list[tuple[str, str]]:
    """(name, DuckDB SELECT) of every CREATE VIEW in sql/*.sql."""
    out = []
    for script in sql_files():
        for stmt in sqlglot.parse(script, read="duckdb"):
            if isinstance(stmt, exp.Create) and stmt.args.get("kind") == "VIEW":
                out.append((stmt.this.name, stmt.expression.sql("duckdb")))
    return out


def register_tables(spark: "SparkSession", repo: str | os.PathLike) -> list[str]:
    """Register the repository's tables and views as Spark temporary views; returns their names."""
    repo = Path(repo)
    if not repo.is_dir():
        raise ValueError(f"{repo}: repository directory does not exist")
    names = []
    for name in positional_tables():
        catalog = repo / "hats" / name
        has_data = (catalog / "dataset").is_dir() and any((catalog / "dataset").glob("Norder=*"))
        df = read_hats(spark, catalog) if has_data else _empty(spark, name, [HEALPIX_COLUMN, *PARTITION_COLUMNS])
        df.createOrReplaceTempView(name)
        names.append(name)
    for name in PLAIN_TABLES:
        path = repo / "tables" / f"{name}.parquet"
        df = spark.read.parquet(str(path)) if path.exists() else _empty(spark, name, [])
        df.createOrReplaceTempView(name)
        names.append(name)
    for name, select in _views():
        spark.sql(f"CREATE OR REPLACE TEMP VIEW `{name}` AS {translate_to_spark(select)}")
        names.append(name)
    return names


def run_spark_sql(repo: str | os.PathLike, query: str, spark: "SparkSession | None" = None) -> pa.Table:
    """Run a DuckDB query (with the skydp macros) on Spark over the repository; result as Arrow.
    Uses ``spark`` if given, else a local session; the tables are (re)registered every call."""
    spark = spark or local_session()
    register_tables(spark, repo)
    return spark.sql(translate_to_spark(query)).toArrow()


__all__ = ["local_session", "read_hats", "register_tables", "run_spark_sql"]
