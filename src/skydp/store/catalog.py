"""Python query API over REPO/catalog.duckdb: SQL, cone search, light curves, cross-match, images.

User values are always bound parameters; table and column names are checked against the schema
before they are placed in SQL text.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import duckdb
import numpy as np
import polars as pl

from skydp import tables
from skydp.store.layout import HEALPIX_COLUMN, HEALPIX_ORDER, position_columns, positional_tables
from skydp.store.translate import cone_pixel_ranges


def _check_position(ra: float, dec: float) -> tuple[float, float]:
    """ra normalised into [0, 360); |dec| <= 90; both finite."""
    ra, dec = float(ra), float(dec)
    if not math.isfinite(ra):
        raise ValueError(f"ra must be finite, got {ra}")
    if not math.isfinite(dec) or abs(dec) > 90:
        raise ValueError(f"dec must be finite and within [-90, 90], got {dec}")
    return ra % 360.0, dec


def _check_radius(radius: float, name: str = "radius") -> float:
    radius = float(radius)
    if not math.isfinite(radius) or radius <= 0:
        raise ValueError(f"{name} must be a positive finite number of degrees, got {radius}")
    return radius


def _check_table(table: str, allowed: Sequence[str]) -> str:
    if table not in allowed:
        raise ValueError(f"table must be one of {sorted(allowed)}, got {table!r}")
    return table


def _check_columns(table: str, columns: Sequence[str] | None) -> str:
    if columns is None:
        return "*"
    known = set(tables.column_names(table)) | {HEALPIX_COLUMN}
    unknown = [c for c in columns if c not in known]
    if unknown or not columns:
        raise ValueError(f"columns: {unknown or 'empty list'} not in table {table}")
    return ", ".join('"' + c + '"' for c in columns)


class Catalog:
    """Read-only access to a repository's catalog database."""

    def __init__(self, repo: str | os.PathLike) -> None:
        self.repo = Path(repo)
        path = self.repo / "catalog.duckdb"
        if not path.exists():
            raise ValueError(f"{path}: no catalog database (run the ETL publish stage or build_database)")
        self._con = duckdb.connect(str(path), read_only=True)
        # keep parsed Parquet footers: a cone search reads one row group but parses its file's footer
        self._con.execute("SET parquet_metadata_cache = true")
        self._leaf_ranges: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._recreated: dict[Path, Any] = {}  # the last recreated difference image: cutouts reuse it

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pl.DataFrame:
        """Run a query (DuckDB SQL with the skydp macros) with bound parameters; polars via Arrow."""
        relation = self._con.sql(query, params=params or None)
        if relation is None:  # a statement without a result (SET, CREATE TEMP ...)
            return pl.DataFrame()
        return pl.from_arrow(relation.to_arrow_table())

    def cone(self, table: str, ra: float, dec: float, radius: float,
             columns: Sequence[str] | None = None) -> pl.DataFrame:
        """Rows of ``table`` within ``radius`` degrees of (ra, dec): the same rows and columns as
        the SQL cone() macro, with its pruning computed here (healpy, as for Spark) and given to
        DuckDB as constants, which spares it planning the macro's subqueries."""
        table = _check_table(table, positional_tables())
        ra, dec = _check_position(ra, dec)
        radius = _check_radius(radius)
        select = _check_columns(table, columns)
        if select == "*":
            select = "* EXCLUDE (Norder, Dir, Npix)"
        ra_col, dec_col = position_columns(table)
        return self.sql(f'SELECT {select} FROM "{table}" WHERE {self._cone_pruning(table, ra, dec, radius)} '
                        f'AND in_cone("{ra_col}", "{dec_col}", $1, $2, $3)', [ra, dec, radius])

    def _cone_pruning(self, table: str, ra: float, dec: float, radius: float) -> str:
        """SQL filter with the partitions (a file filter) and _healpix_29 ranges (row-group
        statistics) of the HEALPix pixels that cover a cone."""
        if table not in self._leaf_ranges:
            leaves = self._con.execute("SELECT Norder, Npix FROM _skydp_partitions WHERE table_name = $1",
                                       [table]).fetchnumpy()
            shift = 2 * (HEALPIX_ORDER - leaves["Norder"].astype(np.int64))
            npix = leaves["Npix"].astype(np.int64)
            self._leaf_ranges[table] = (npix, npix << shift, (npix + 1) << shift)
        npix, leaf_lo, leaf_hi = self._leaf_ranges[table]
        ranges = np.array(cone_pixel_ranges(ra, dec, radius), dtype=np.int64)
        hit = ((leaf_lo[:, None] <= ranges[None, :, 1]) & (leaf_hi[:, None] > ranges[None, :, 0])).any(axis=1)
        if not hit.any():
            return "false"
        rows = " OR ".join(f"{HEALPIX_COLUMN} BETWEEN {lo} AND {hi}" for lo, hi in ranges)
        return f"Npix IN ({', '.join(str(p) for p in np.unique(npix[hit]))}) AND ({rows})"

    def lightcurve(self, object_id: int) -> pl.DataFrame:
        """Forced-photometry light curve of an Object (ObjectLightCurve) or, when no Object has that
        id, the DiaSource light curve of a DiaObject (DiaObjectLightCurve), ordered by MJD."""
        object_id = int(object_id)
        out = self.sql("SELECT * FROM ObjectLightCurve WHERE objectId = $1 ORDER BY mjd, band", [object_id])
        if out.height == 0:
            out = self.sql("SELECT * FROM DiaObjectLightCurve WHERE diaObjectId = $1 ORDER BY mjd, band",
                           [object_id])
        return out

    def crossmatch(self, df: pl.DataFrame, radius: float, table: str = "Object",
                   ra: str = "ra", dec: str = "dec", columns: Sequence[str] | None = None) -> pl.DataFrame:
        """Nearest ``table`` row within ``radius`` degrees of each row of ``df`` (columns ``ra``,
        ``dec`` in degrees): df's columns plus the matched row's ``columns`` (default: all) prefixed
        ``match_`` and ``sep_arcsec``; unmatched rows are dropped.  The SQL xmatch_rows() macro
        pairs row numbers; only the requested columns are read back."""
        table = _check_table(table, positional_tables())
        radius = _check_radius(radius)
        select = _check_columns(table, columns)
        for col in (ra, dec):
            if col not in df.columns:
                raise ValueError(f"df has no column {col!r}")
        left = df.select(pl.col(ra).cast(pl.Float64).alias("ra"), pl.col(dec).cast(pl.Float64).alias("dec"))
        if left.filter(~pl.col("ra").is_finite() | ~pl.col("dec").is_finite()
                       | (pl.col("dec").abs() > 90)).height:
            raise ValueError("df: ra/dec must be finite with |dec| <= 90")
        left = left.with_columns(pl.col("ra") % 360.0)
        con = self._con.cursor()
        try:
            con.register("_skydp_left", left.to_arrow())
            res = pl.from_arrow(con.sql(
                f"SELECT m._left_row, w.* EXCLUDE (_right_row), m.sep * 3600 AS sep_arcsec "
                f"FROM xmatch_rows('_skydp_left', '{table}', $1) m "
                f"JOIN (SELECT row_number() OVER () - 1 AS _right_row, {select} FROM \"{table}\") w "
                f"USING (_right_row) ORDER BY m._left_row", params=[radius]).to_arrow_table())
        finally:
            con.close()
        res = res.rename({c: f"match_{c}" for c in res.columns if c not in ("_left_row", "sep_arcsec")})
        return pl.concat([df[res["_left_row"]], res.drop("_left_row")], how="horizontal")

    def _image_path(self, dataset_type: str, visit: int, detector: int) -> Path:
        rows = self.sql("SELECT path FROM ImageMetadata WHERE dataset_type = $1 AND visit = $2 AND detector = $3",
                        [str(dataset_type), int(visit), int(detector)])
        if rows.height == 0:
            raise ValueError(f"no {dataset_type!r} image for visit {visit}, detector {detector}")
        path = Path(rows["path"][0])
        return path if path.is_absolute() else self.repo / path

    def image(self, dataset_type: str, visit: int, detector: int):
        """The stored image as a skydp.exposure.Exposure. A difference image whose FITS the repository
        dropped (ImageMetadata.path is then its ``.recipe.json``) is recreated from its recipe, bit for
        bit when the software is unchanged; the last one recreated is kept for further cutouts."""
        path = self._image_path(dataset_type, visit, detector)
        if dataset_type != "difference_image" or (path.suffix == ".fits" and path.is_file()):
            from skydp.exposure import read_exposure  # the store only touches image code here
            return read_exposure(path)
        from skydp.diffim.recreate import load_difference

        if path not in self._recreated:
            self._recreated = {path: load_difference(self.repo, path)}
        return self._recreated[path].copy()

    def cutout(self, ra: float, dec: float, size: int, visit: int, detector: int,
               dataset_type: str = "visit_image"):
        """A ``size`` x ``size`` pixel cutout centred on (ra, dec) of a stored image (an Exposure whose
        xy0 keeps parent pixel coordinates; a dropped difference image is recreated, see ``image``).  Raises ValueError when the position is off the image."""
        ra, dec = _check_position(ra, dec)
        size = int(size)
        if size < 1:
            raise ValueError(f"size must be >= 1 pixel, got {size}")
        exp = self.image(dataset_type, visit, detector)
        x, y = exp.sky_to_pixel(ra, dec)
        x0, y0 = int(round(float(x))) - size // 2, int(round(float(y))) - size // 2
        bx0, by0, bx1, by1 = exp.bbox
        if not (bx0 <= float(x) < bx1 and by0 <= float(y) < by1):
            raise ValueError(f"({ra}, {dec}) is outside visit {visit} detector {detector}")
        return _slice_exposure(exp, x0, y0, size)


def _slice_exposure(exp, x0: int, y0: int, size: int):
    """Sub-exposure of the parent-pixel box [x0, x0+size) x [y0, y0+size), clipped to the image."""
    bx0, by0, bx1, by1 = exp.bbox
    cx0, cy0 = max(x0, bx0), max(y0, by0)
    cx1, cy1 = min(x0 + size, bx1), min(y0 + size, by1)
    out = exp.copy()
    rows = slice(cy0 - exp.xy0[1], cy1 - exp.xy0[1])
    cols = slice(cx0 - exp.xy0[0], cx1 - exp.xy0[0])
    out.image = exp.image[rows, cols].copy()
    out.variance = None if exp.variance is None else exp.variance[rows, cols].copy()
    out.mask.array = exp.mask.array[rows, cols].copy()
    out.wcs = exp.wcs.slice((rows, cols))
    out.xy0 = (cx0, cy0)
    return out
