"""HATS writer: adaptive HEALPix partitions, margin catalogs, appends and compaction.

A catalog directory holds ``hats.properties`` (and a ``properties`` copy for older readers),
``partition_info.csv`` and ``dataset/`` with ``_common_metadata``, ``_metadata`` and one directory
per leaf pixel, ``Norder=k/Dir=d/Npix=n/`` (``hats_npix_suffix=/``, so Spark and DuckDB see Npix as a
partition column).  Leaf files are named after the SHA-256 of their bytes: the same rows give the
same file name and bytes, so a repeated append is idempotent and writes are reproducible.
Files are written under a temporary name and renamed; the metadata files are replaced last.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from importlib.metadata import version
from dataclasses import dataclass
from pathlib import Path

import healpy as hp
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skydp import tables
from skydp.store.layout import (DEFAULT_MARGIN_ARCSEC, DEFAULT_MAX_ROWS, HEALPIX_COLUMN,
                                HEALPIX_ORDER, MARGIN_TABLES, dataproduct_type, margin_path,
                                pixel_dir, position_columns)

ROW_GROUP_ROWS = 20_000
HIGHEST_ORDER = 13
_WRITE_OPTIONS = dict(compression="zstd", write_statistics=True, use_dictionary=True)


def healpix29(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """int64 NESTED order-29 HEALPix index of (ra, dec) in degrees (healpy, same as SQL healpix_nest)."""
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    bad = ~np.isfinite(ra) | ~np.isfinite(dec) | (np.abs(dec) > 90)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"row {i}: position ({ra[i]}, {dec[i]}) is not a finite ra with |dec| <= 90")
    return hp.ang2pix(1 << HEALPIX_ORDER, ra, dec, nest=True, lonlat=True).astype(np.int64)


@dataclass(frozen=True)
class Leaf:
    """One partition pixel."""
    order: int
    pixel: int

    @property
    def lo(self) -> int:
        return self.pixel << (2 * (HEALPIX_ORDER - self.order))

    @property
    def hi(self) -> int:
        return (self.pixel + 1) << (2 * (HEALPIX_ORDER - self.order))


def _prepare(table_name: str, data: pa.Table) -> pa.Table:
    """Cast to the exact schema, add _healpix_29 and sort by it (stable, so reproducible)."""
    if HEALPIX_COLUMN in data.column_names:
        data = data.drop_columns([HEALPIX_COLUMN])
    data = tables.to_arrow(table_name, data)
    ra_col, dec_col = position_columns(table_name)
    if data.column(ra_col).null_count or data.column(dec_col).null_count:
        raise ValueError(f"{table_name}: {ra_col}/{dec_col} must not be null in a HATS catalog")
    ra = data.column(ra_col).to_numpy()
    hpx = healpix29(np.mod(ra, 360.0), data.column(dec_col).to_numpy())
    data = data.append_column(pa.field(HEALPIX_COLUMN, pa.int64(), nullable=False), pa.array(hpx))
    order = np.argsort(hpx, kind="stable")
    return data.take(pa.array(order))


def _leaf_index(leaves: list[Leaf], hpx: np.ndarray) -> np.ndarray:
    """Index into ``leaves`` (sorted by lo) of the leaf holding each order-29 index, -1 if none."""
    if not leaves:
        return np.full(len(hpx), -1, dtype=np.int64)
    lo = np.array([leaf.lo for leaf in leaves], dtype=np.int64)
    hi = np.array([leaf.hi for leaf in leaves], dtype=np.int64)
    idx = np.searchsorted(lo, hpx, side="right") - 1
    ok = (idx >= 0) & (hpx < hi[np.clip(idx, 0, None)])
    return np.where(ok, idx, -1)


def _plan_leaves(hpx: np.ndarray, max_rows: int, existing: list[Leaf]) -> list[Leaf]:
    """New leaves for sorted order-29 indices: the coarsest pixels holding <= max_rows rows that do
    not overlap an existing leaf (top-down split, like hats-import's threshold partitioning)."""
    ex_lo = np.array([leaf.lo for leaf in existing], dtype=np.int64)
    ex_hi = np.array([leaf.hi for leaf in existing], dtype=np.int64)
    out: list[Leaf] = []
    remaining = hpx
    for order in range(HIGHEST_ORDER + 1):
        if remaining.size == 0:
            break
        shift = 2 * (HEALPIX_ORDER - order)
        pix, counts = np.unique(remaining >> shift, return_counts=True)
        lo, hi = pix << shift, (pix + 1) << shift
        overlaps = np.zeros(len(pix), dtype=bool)
        if ex_lo.size:
            # any existing leaf intersecting [lo, hi)?
            first = np.searchsorted(ex_hi, lo, side="right")
            overlaps = (first < ex_lo.size) & (ex_lo[np.clip(first, 0, ex_lo.size - 1)] < hi)
        done = ((counts <= max_rows) | (order == HIGHEST_ORDER)) & ~overlaps
        out.extend(Leaf(order, int(p)) for p in pix[done])
        keep = ~np.isin(remaining >> shift, pix[done])
        remaining = remaining[keep]
    return sorted(out, key=lambda leaf: leaf.lo)


def _write_file(table: pa.Table, directory: Path) -> Path:
    """Write one sorted leaf file under a temporary name, then rename it to part-<sha256>.parquet."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / ".part.parquet.tmp"
    sorting = [pq.SortingColumn(table.schema.get_field_index(HEALPIX_COLUMN))]
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, sorting_columns=sorting, **_WRITE_OPTIONS)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:20]
    final = directory / f"part-{digest}.parquet"
    os.replace(tmp, final)
    return final


def _write_leaves(data: pa.Table, leaves: list[Leaf], dataset: Path) -> None:
    hpx = data.column(HEALPIX_COLUMN).to_numpy()
    idx = _leaf_index(leaves, hpx)
    if (idx < 0).any():
        raise AssertionError("row outside every leaf")  # _plan_leaves covers every row
    bounds = np.searchsorted(idx, np.arange(len(leaves) + 1))  # data sorted by hpx => idx sorted
    for i, leaf in enumerate(leaves):
        if bounds[i + 1] > bounds[i]:
            _write_file(data.slice(bounds[i], bounds[i + 1] - bounds[i]),
                        pixel_dir(dataset, leaf.order, leaf.pixel))


def read_leaves(catalog: Path) -> list[Leaf]:
    """Leaves listed in partition_info.csv, sorted by their order-29 range."""
    path = catalog / "partition_info.csv"
    if not path.exists():
        return []
    rows = path.read_text().split()[1:]
    leaves = [Leaf(int(o), int(p)) for o, p in (r.split(",") for r in rows)]
    return sorted(leaves, key=lambda leaf: leaf.lo)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _data_files(dataset: Path) -> list[Path]:
    return sorted(dataset.glob("Norder=*/Dir=*/Npix=*/*.parquet"))


def _write_metadata(catalog: Path, schema: pa.Schema, properties: dict[str, str]) -> int:
    """(Re)write _common_metadata, _metadata, partition_info.csv and the properties files from the
    leaf files on disk; returns the row count."""
    dataset = catalog / "dataset"
    files = _data_files(dataset)
    merged = None
    nrows = 0
    leaves = set()
    for path in files:
        md = pq.read_metadata(path)
        md.set_file_path(path.relative_to(dataset).as_posix())
        nrows += md.num_rows
        if merged is None:
            merged = md
        else:
            merged.append_row_groups(md)
        parts = dict(p.split("=") for p in path.relative_to(dataset).parts[:3])
        leaves.add((int(parts["Norder"]), int(parts["Npix"])))
    tmp = dataset / "_common_metadata.tmp"
    pq.write_metadata(schema, tmp)
    os.replace(tmp, dataset / "_common_metadata")
    tmp = dataset / "_metadata.tmp"
    if merged is None:
        pq.write_metadata(schema, tmp)
    else:
        merged.write_metadata_file(str(tmp))
    os.replace(tmp, dataset / "_metadata")
    _atomic_write_text(catalog / "partition_info.csv",
                       "Norder,Npix\n" + "".join(f"{o},{p}\n" for o, p in sorted(leaves)))
    orders = [o for o, _ in leaves]
    sky = sum(1.0 / (12 * 4 ** o) for o in orders)
    props = dict(properties)
    props.update({
        "hats_nrows": str(nrows),
        "hats_order": str(max(orders, default=0)),
        "moc_sky_fraction": f"{sky:.5f}",
        "hats_estsize": str(sum(p.stat().st_size for p in files) // 1024),
    })
    text = "#HATS catalog\n" + "".join(f"{k}={v}\n" for k, v in props.items())
    _atomic_write_text(catalog / "hats.properties", text)
    _atomic_write_text(catalog / "properties", text)
    return nrows


def _properties(table_name: str, max_rows: int, catalog_type: str | None = None,
                margin_arcsec: float | None = None) -> dict[str, str]:
    ra_col, dec_col = position_columns(table_name)
    props = {
        "obs_collection": table_name if margin_arcsec is None else f"{table_name}_margin",
        "dataproduct_type": catalog_type or dataproduct_type(table_name),
        "hats_col_ra": ra_col,
        "hats_col_dec": dec_col,
        "hats_col_healpix": HEALPIX_COLUMN,
        "hats_col_healpix_order": str(HEALPIX_ORDER),
        "hats_npix_suffix": "/",
        "hats_max_rows": str(max_rows),
        "hats_builder": f"skydp {version('skydp')}",
        "hats_version": "v1.0",
        "hats_release_date": "2025-08-22",
    }
    if margin_arcsec is not None:
        props["hats_primary_table_url"] = f"../../{table_name}"
        props["hats_margin_threshold"] = repr(float(margin_arcsec))
    return props


def _read_properties(catalog: Path) -> dict[str, str]:
    lines = (catalog / "hats.properties").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def _margin_order(margin_arcsec: float) -> int:
    """Highest order whose pixels are still >= 2x the threshold wide (healpy's max_pixrad is the
    largest centre-to-corner distance; the narrowest width is taken as half of it to be safe)."""
    for order in range(HEALPIX_ORDER, -1, -1):
        if hp.max_pixrad(1 << order, degrees=True) * 3600 * 0.5 >= 2 * margin_arcsec:
            return order
    return 0


def _margin_rows(data: pa.Table, leaves: list[Leaf], margin_arcsec: float) -> tuple[pa.Table, np.ndarray]:
    """Rows of ``data`` that lie near another leaf, each paired with the index of that leaf.
    A row qualifies when its margin-order pixel touches (8-neighbourhood) a pixel of the other
    leaf: a superset of the rows within the threshold, as in hats-import."""
    order = _margin_order(margin_arcsec)
    if leaves and max(leaf.order for leaf in leaves) > order:
        raise ValueError(f"a partition is finer than the margin order {order} for "
                         f"margin_arcsec={margin_arcsec}: raise max_rows_per_partition or lower the margin")
    hpx = data.column(HEALPIX_COLUMN).to_numpy()
    shift = 2 * (HEALPIX_ORDER - order)
    own = _leaf_index(leaves, hpx)
    pix = hpx >> shift
    neighbours = hp.get_all_neighbours(1 << order, pix, nest=True).T  # (n, 8), -1 = none
    valid = neighbours >= 0
    flat = np.where(valid, neighbours, 0).ravel() << shift
    nb_leaf = np.where(valid.ravel(), _leaf_index(leaves, flat), -1).reshape(-1, 8)
    row, col = np.nonzero((nb_leaf >= 0) & (nb_leaf != own[:, None]))
    pairs = np.unique(np.stack([row, nb_leaf[row, col]], axis=1), axis=0)
    return data.take(pa.array(pairs[:, 0])), pairs[:, 1]


def _write_margin(margin: Path, data: pa.Table, leaves: list[Leaf], margin_arcsec: float,
                  table_name: str, max_rows: int) -> None:
    """Add the margin rows of ``data`` to the margin catalog directory ``margin``."""
    rows, target = _margin_rows(data, leaves, margin_arcsec)
    dataset = margin / "dataset"
    dataset.mkdir(parents=True, exist_ok=True)
    order = np.lexsort((rows.column(HEALPIX_COLUMN).to_numpy(), target))
    rows, target = rows.take(pa.array(order)), target[order]
    bounds = np.searchsorted(target, np.arange(len(leaves) + 1))
    for i, leaf in enumerate(leaves):
        if bounds[i + 1] > bounds[i]:
            _write_file(rows.slice(bounds[i], bounds[i + 1] - bounds[i]),
                        pixel_dir(dataset, leaf.order, leaf.pixel))
    _write_metadata(margin, data.schema, _properties(table_name, max_rows, "margin", margin_arcsec))


def _margin_for(table_name: str, margin_arcsec: float | None) -> float | None:
    if table_name not in MARGIN_TABLES:
        return None
    value = DEFAULT_MARGIN_ARCSEC if margin_arcsec is None else float(margin_arcsec)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"margin_arcsec must be a positive number, got {margin_arcsec!r}")
    return value


def write_hats(table_name: str, arrow_table: pa.Table, hats_dir: str | os.PathLike, *,
               max_rows_per_partition: int = DEFAULT_MAX_ROWS,
               margin_arcsec: float | None = None) -> Path:
    """Write ``arrow_table`` as the HATS catalog ``hats_dir/<table_name>/``, replacing any previous
    one atomically (built in a sibling temporary directory, then renamed).  Object and DiaObject
    also get ``<catalog>/margin/`` (threshold ``margin_arcsec``, default 5").  Returns the path."""
    if max_rows_per_partition < 1:
        raise ValueError(f"max_rows_per_partition must be >= 1, got {max_rows_per_partition}")
    margin = _margin_for(table_name, margin_arcsec)
    data = _prepare(table_name, arrow_table)
    final = Path(hats_dir) / table_name
    tmp = final.with_name(f".{table_name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset = tmp / "dataset"
    dataset.mkdir(parents=True)
    leaves = _plan_leaves(data.column(HEALPIX_COLUMN).to_numpy(), max_rows_per_partition, [])
    _write_leaves(data, leaves, dataset)
    props = _properties(table_name, max_rows_per_partition)
    if margin is not None:
        props["hats_margin_threshold"] = repr(margin)
        _write_margin(tmp / "margin", data, leaves, margin, table_name, max_rows_per_partition)
    _write_metadata(tmp, data.schema, props)
    if margin is not None:
        _swap_in(tmp / "margin", margin_path(hats_dir, table_name))
    _swap_in(tmp, final)
    return final


def _swap_in(new: Path, final: Path) -> None:
    """Replace directory ``final`` by ``new`` with renames (the old copy is removed afterwards)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def append_hats(table_name: str, arrow_table: pa.Table, hats_dir: str | os.PathLike, *,
                max_rows_per_partition: int | None = None,
                margin_arcsec: float | None = None) -> Path:
    """Add rows (e.g. a new night) to an existing catalog: new files in the leaves they fall in,
    new leaves only where no leaf covers them; untouched files are never rewritten.  Only the
    metadata files are replaced.  Leaves may outgrow the limit: see compact_hats."""
    catalog = Path(hats_dir) / table_name
    if not (catalog / "hats.properties").exists():
        return write_hats(table_name, arrow_table, hats_dir,
                          max_rows_per_partition=max_rows_per_partition or DEFAULT_MAX_ROWS,
                          margin_arcsec=margin_arcsec)
    props = _read_properties(catalog)
    max_rows = max_rows_per_partition or int(props.get("hats_max_rows", DEFAULT_MAX_ROWS))
    if margin_arcsec is None and "hats_margin_threshold" in props:
        margin_arcsec = float(props["hats_margin_threshold"])
    margin = _margin_for(table_name, margin_arcsec)
    data = _prepare(table_name, arrow_table)
    hpx = data.column(HEALPIX_COLUMN).to_numpy()
    existing = read_leaves(catalog)
    uncovered = hpx[_leaf_index(existing, hpx) < 0]
    leaves = sorted(existing + _plan_leaves(uncovered, max_rows, existing), key=lambda leaf: leaf.lo)
    _write_leaves(data, leaves, catalog / "dataset")
    if margin is not None:
        if len(leaves) != len(existing):
            # new leaves change which rows are margin rows of which leaf: rebuild the margin
            data = _read_catalog(catalog)
            tmp = catalog.with_name(f".{table_name}.margin.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            _write_margin(tmp, data, leaves, margin, table_name, max_rows)
            _swap_in(tmp, margin_path(hats_dir, table_name))
        else:
            _write_margin(margin_path(hats_dir, table_name), data, leaves, margin, table_name, max_rows)
    props = _properties(table_name, max_rows)
    if margin is not None:
        props["hats_margin_threshold"] = repr(margin)
    _write_metadata(catalog, data.schema, props)
    return catalog


def _read_catalog(catalog: Path) -> pa.Table:
    """All rows of a catalog, in leaf-file order, without the partition columns."""
    files = _data_files(catalog / "dataset")
    schema = pq.read_schema(catalog / "dataset" / "_common_metadata")
    parts = [pq.read_table(p, schema=schema) for p in files]
    return pa.concat_tables(parts) if parts else schema.empty_table()


def compact_hats(hats_dir: str | os.PathLike, table_name: str | None = None, *,
                 max_rows_per_partition: int | None = None) -> list[Path]:
    """Repartition catalogs whose leaves outgrew the limit (or hold several files after appends):
    rewrite them from all their rows with write_hats.  ``table_name=None`` compacts every catalog in
    ``hats_dir``.  Returns the catalogs rewritten."""
    hats_dir = Path(hats_dir)
    names = [table_name] if table_name else sorted(
        p.name for p in hats_dir.iterdir() if (p / "hats.properties").exists())
    rewritten = []
    for name in names:
        catalog = hats_dir / name
        props = _read_properties(catalog)
        max_rows = max_rows_per_partition or int(props.get("hats_max_rows", DEFAULT_MAX_ROWS))
        counts: dict[tuple[str, ...], int] = {}
        files: dict[tuple[str, ...], int] = {}
        for path in _data_files(catalog / "dataset"):
            key = path.parent.parts[-3:]
            counts[key] = counts.get(key, 0) + pq.read_metadata(path).num_rows
            files[key] = files.get(key, 0) + 1
        if all(c <= max_rows for c in counts.values()) and all(f == 1 for f in files.values()):
            continue
        data = _read_catalog(catalog)
        # order-29 index first, then the previous file order: reproducible
        data = data.take(pc.sort_indices(data, [(HEALPIX_COLUMN, "ascending")]))
        margin = float(props["hats_margin_threshold"]) if "hats_margin_threshold" in props else None
        write_hats(name, data, hats_dir, max_rows_per_partition=max_rows, margin_arcsec=margin)
        rewritten.append(catalog)
    return rewritten
