"""Build REPO/catalog.duckdb: a view (or table) per catalog over its HATS Parquet, the Visit,
CcdVisit and ImageMetadata tables, the spatial helper tables and everything in sql/.

The file is written with a storage version that the duckdb 1.5 shell (duckdb-cli) opens, into a
temporary file that replaces the old database atomically.  Views use absolute Parquet paths: after
moving a repository, rebuild the database.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import duckdb
import healpy as hp
import numpy as np
import pyarrow as pa

from skydp import tables
from skydp.store.hats import read_leaves
from skydp.store.layout import HEALPIX_COLUMN, position_columns, positional_tables

STORAGE_VERSION = "v1.5.0"  # newest format the duckdb-cli 1.5.x shell reads
PLAIN_TABLES = ("Visit", "CcdVisit", "ImageMetadata")
CELL_ORDER = 7  # _skydp_cells resolution used by cone() for pruning (27.5' pixels)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sql_files() -> list[str]:
    """The SQL scripts shipped in skydp._sql, in file-name order."""
    package = resources.files("skydp._sql")
    names = sorted(p.name for p in package.iterdir() if p.name.endswith(".sql"))
    return [package.joinpath(n).read_text() for n in names]


def cells_table() -> pa.Table:
    """Order-7 HEALPix cells with centre (ra, dec) and a radius (deg) enclosing the whole pixel:
    the largest distance from the centre to 16 points per pixel edge, plus 1 % and 1 arcsec."""
    nside = 1 << CELL_ORDER
    pix = np.arange(hp.nside2npix(nside))
    ra, dec = hp.pix2ang(nside, pix, nest=True, lonlat=True)
    centre = hp.ang2vec(ra, dec, lonlat=True)  # (npix, 3)
    edges = hp.boundaries(nside, pix, step=16, nest=True)  # (npix, 3, 64) unit vectors
    cosang = np.einsum("pk,pkn->pn", centre, edges).min(axis=1)
    rad = np.degrees(np.arccos(np.clip(cosang, -1, 1))) * 1.01 + 1 / 3600
    order = np.argsort(dec, kind="stable")
    return pa.table({"pix": pix[order], "ra": ra[order], "dec": dec[order], "rad": rad[order]})


def _position_macros(names: list[str]) -> str:
    ra_cases = " ".join(f"WHEN {_literal(n.lower())} THEN {_literal(position_columns(n)[0])}" for n in names)
    dec_cases = " ".join(f"WHEN {_literal(n.lower())} THEN {_literal(position_columns(n)[1])}" for n in names)
    return (f"CREATE OR REPLACE MACRO _skydp_ra_col(tbl) AS CASE lower(tbl) {ra_cases} ELSE 'ra' END;\n"
            f"CREATE OR REPLACE MACRO _skydp_dec_col(tbl) AS CASE lower(tbl) {dec_cases} ELSE 'dec' END;\n")


def _empty_catalog(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """An empty table with the schema columns plus _healpix_29 and the partition columns."""
    con.execute(tables.duckdb_create(name))
    for col, typ in ((HEALPIX_COLUMN, "BIGINT"), ("Norder", "BIGINT"), ("Dir", "BIGINT"), ("Npix", "BIGINT")):
        con.execute(f"ALTER TABLE {_quote(name)} ADD COLUMN {col} {typ}")


def build_database(repo: str | os.PathLike, *, materialize: bool = False,
                   source: str | os.PathLike | None = None) -> Path:
    """(Re)create ``REPO/catalog.duckdb``; ``materialize=True`` copies the Parquet into tables
    instead of creating views.  ``source`` is the directory holding ``hats/`` and ``tables/``
    (default: the repository itself; the ETL passes a read-only snapshot so that readers of the
    database never see files change under them).  Returns the database path."""
    repo = Path(repo).resolve()
    source = repo if source is None else Path(source).resolve()
    target = repo / "catalog.duckdb"
    tmp = repo / ".catalog.duckdb.tmp"
    for stale in (tmp, tmp.with_name(tmp.name + ".wal")):
        stale.unlink(missing_ok=True)
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {_literal(str(tmp))} AS build (STORAGE_VERSION {_literal(STORAGE_VERSION)})")
        con.execute("USE build")
        kind = "TABLE" if materialize else "VIEW"
        catalogs = positional_tables()
        partitions = {"table_name": [], "Norder": [], "Npix": []}
        for name in catalogs:
            dataset = source / "hats" / name / "dataset"
            leaves = read_leaves(source / "hats" / name)
            if not leaves:
                _empty_catalog(con, name)
                continue
            for leaf in leaves:
                partitions["table_name"].append(name)
                partitions["Norder"].append(leaf.order)
                partitions["Npix"].append(leaf.pixel)
            glob = _literal(str(dataset / "Norder=*" / "Dir=*" / "Npix=*" / "*.parquet"))
            con.execute(f"CREATE {kind} {_quote(name)} AS SELECT * FROM read_parquet({glob}, "
                        "hive_partitioning = true, hive_types = {'Norder': BIGINT, 'Dir': BIGINT, 'Npix': BIGINT})")
        for name in PLAIN_TABLES:
            path = source / "tables" / f"{name}.parquet"
            if path.exists():
                con.execute(f"CREATE {kind} {_quote(name)} AS SELECT * FROM read_parquet({_literal(str(path))})")
            else:
                con.execute(tables.duckdb_create(name))
        part_table = pa.table({"table_name": pa.array(partitions["table_name"], pa.string()),
                               "Norder": pa.array(partitions["Norder"], pa.int64()),
                               "Npix": pa.array(partitions["Npix"], pa.int64())})
        cells = cells_table()
        con.register("_part_src", part_table)
        con.register("_cells_src", cells)
        con.execute("CREATE TABLE _skydp_partitions AS SELECT * FROM _part_src")
        con.execute("CREATE TABLE _skydp_cells AS SELECT * FROM _cells_src")
        con.unregister("_part_src")
        con.unregister("_cells_src")
        con.execute(_position_macros(catalogs))
        for script in sql_files():
            con.execute(script)
        con.execute("CHECKPOINT build")
        con.execute("USE memory")
        con.execute("DETACH build")
    finally:
        con.close()
    os.replace(tmp, target)
    return target
