"""Catalog store: HATS Parquet writer, DuckDB database with spatial SQL, Python query API.

Works on Arrow tables whose schemas come from skydp.tables; never imports image-processing code
(except Catalog.image/cutout, lazily).
"""

from skydp.store.catalog import Catalog
from skydp.store.database import build_database
from skydp.store.hats import append_hats, compact_hats, healpix29, write_hats
from skydp.store.translate import translate_adql, translate_to_spark

__all__ = ["Catalog", "append_hats", "build_database", "compact_hats", "healpix29", "translate_adql",
           "translate_to_spark", "write_hats"]
