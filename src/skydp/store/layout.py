"""Where each catalog table keeps its sky position, and the fixed names of the HATS layout."""

from __future__ import annotations

from pathlib import Path

from skydp import tables

HEALPIX_COLUMN = "_healpix_29"
HEALPIX_ORDER = 29
PARTITION_COLUMNS = ("Norder", "Dir", "Npix")
MARGIN_DIR = "_margin"  # hats_dir/_margin/<Table>/: outside the primary, which hats scans recursively
DEFAULT_MARGIN_ARCSEC = 5.0
DEFAULT_MAX_ROWS = 1_000_000
# Tables with a margin catalog (cross-matches against them are exact across partition edges).
MARGIN_TABLES = ("Object", "DiaObject")

# Every positional table is partitioned by the position of its own rows (coord_ra/coord_dec where
# the schema has them, else ra/dec): simple, and a cone search on any table is then a partition
# lookup.  (Qserv instead partitions dependents by their Object's position; joins between Object and
# Source here go through DuckDB or Spark, which do not need co-partitioning.)
_OBJECT_TABLES = ("Object", "DiaObject")


def position_columns(table: str) -> tuple[str, str]:
    """(ra, dec) column names of a catalog table: coord_ra/coord_dec where the schema has them,
    else ra/dec; DiaSource uses ra/dec (its measured position; coord_* duplicate it)."""
    names = tables.column_names(table)
    pairs = (("ra", "dec"),) if table == "DiaSource" else (("coord_ra", "coord_dec"), ("ra", "dec"))
    for ra, dec in pairs:
        if ra in names and dec in names:
            return ra, dec
    raise ValueError(f"table {table!r} has no position columns (coord_ra/coord_dec or ra/dec)")


def positional_tables() -> list[str]:
    """The schema tables stored as HATS catalogs (those with a sky position per row)."""
    out = []
    for name in tables.table_names():
        try:
            position_columns(name)
        except ValueError:
            continue
        if name not in ("Visit", "CcdVisit", "ImageMetadata"):
            out.append(name)
    return out


def dataproduct_type(table: str) -> str:
    """HATS dataproduct_type: 'object' for Object/DiaObject, 'source' for the detection tables."""
    return "object" if table in _OBJECT_TABLES else "source"


def margin_path(hats_dir: Path, table: str) -> Path:
    """The margin catalog of ``table`` (a HATS catalog with dataproduct_type=margin)."""
    return Path(hats_dir) / MARGIN_DIR / table


def pixel_dir(dataset: Path, order: int, pixel: int) -> Path:
    """dataset/Norder=k/Dir=d/Npix=n (a directory: hats_npix_suffix='/')."""
    return dataset / f"Norder={order}" / f"Dir={(pixel // 10000) * 10000}" / f"Npix={pixel}"
