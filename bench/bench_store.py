"""Catalog store benchmark (issue 5, Performance): cone search, healpix_nest, cross-match.

Generates a synthetic Object HATS catalog of --rows rows (uniform in a 20 x 20 deg patch, so the
density is survey-like: 1e8 rows = 2.5e5 per deg^2) leaf by leaf, so memory stays bounded by the
largest leaf, then measures in the same run and prints medians and ratios:
  - cone search of radius 1' (partition + row-group pruning) through Catalog.cone and through the
    cone() SQL macro, warm median over --repeats random centres, against the same exact cut
    without pruning (full scan) and against LSDB's cone_search on the same HATS catalog
    (identical id sets are checked); the macro also without DuckDB's Parquet metadata cache
    (every query then parses its file's footer);
  - healpix_nest (SQL macro) rows per second and CPU ns per row on in-memory points over the whole
    sky, default threads and one thread, with healpy for reference (--only healpix runs just this);
  - cross-match of --xmatch-rows x --xmatch-rows within 1" (Catalog.crossmatch: the xmatch_rows()
    macro, then objectId, coord_ra, coord_dec read back) against astropy's match_to_catalog_sky
    (same rows and Objects checked) and LSDB's crossmatch (same number of matches).
Every time is the median of >= 3 runs; "cpu s" is this process's CPU time (all threads), which the
other jobs on a shared machine disturb less than the wall time.
Usage: python bench/bench_store.py --rows 1e7 [--workdir DIR] [--keep]
       python bench/bench_store.py --only healpix [--healpix-rows 1e7]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from skydp.store import Catalog, build_database, write_hats
from skydp.store.database import sql_files
from skydp.store.hats import (
    _plan_leaves,
    _prepare,
    _properties,
    _write_leaves,
    _write_metadata,
    healpix29,
)
from skydp.store.synthetic import synthetic_table
from timing import median_time

RA0, RA1, DEC0, DEC1 = 150.0, 170.0, -10.0, 10.0
CONE_RADIUS = 1 / 60


def _patch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform on the sphere inside the patch."""
    s0, s1 = np.sin(np.radians(DEC0)), np.sin(np.radians(DEC1))
    return rng.uniform(RA0, RA1, n), np.degrees(np.arcsin(rng.uniform(s0, s1, n)))


def generate_object_catalog(hats_dir: Path, rows: int, max_rows: int, seed: int = 0) -> None:
    """Object catalog written leaf by leaf with the store's own partition planner and leaf writer
    (write_hats needs the whole table in memory; 1e8 Object rows with 433 columns do not fit)."""
    rng = np.random.default_rng(seed)
    ra, dec = _patch(rng, rows)
    hpx = healpix29(ra, dec)
    order = np.argsort(hpx, kind="stable")
    ra, dec, hpx = ra[order], dec[order], hpx[order]
    leaves = _plan_leaves(hpx, max_rows, [])
    catalog = hats_dir / "Object"
    dataset = catalog / "dataset"
    dataset.mkdir(parents=True)
    bounds = np.searchsorted(hpx, [leaf.lo for leaf in leaves] + [leaves[-1].hi])
    schema = None
    for i, leaf in enumerate(leaves):
        a, b = bounds[i], bounds[i + 1]
        data = _prepare("Object", synthetic_table("Object", ra[a:b], dec[a:b], seed=i, first_id=a + 1))
        schema = data.schema
        _write_leaves(data, [leaf], dataset)
    _write_metadata(catalog, schema, _properties("Object", max_rows))


def bench_cone(repo: Path, repeats: int, rng: np.random.Generator) -> list[tuple]:
    import lsdb
    centres = list(zip(*_patch(rng, repeats)))
    con = duckdb.connect(str(repo / "catalog.duckdb"), read_only=True)
    pruned = "SELECT objectId FROM cone('Object', $1, $2, $3)"
    scan = "SELECT objectId FROM Object WHERE ang_sep(coord_ra, coord_dec, $1, $2) <= $3"
    warm_footers = "SELECT count(*) FROM Object WHERE coord_dec > 1000"  # opens every file, reads no row

    def run(sql):
        return lambda i: sorted(r[0] for r in con.execute(sql, [*centres[i], CONE_RADIUS]).fetchall())

    # cold: no Parquet metadata cache, every query parses the footer of the file it reads
    con.execute("SET parquet_metadata_cache = false")
    run(pruned)(0)  # page cache, macro
    t_cold, c_cold, _ = median_time(run(pruned), repeats)
    # warm: parsed footers kept, as in a long session (Catalog turns the cache on)
    con.execute("SET parquet_metadata_cache = true")
    con.execute(warm_footers).fetchall()
    t_macro, c_macro, ours = median_time(run(pruned), repeats)
    with Catalog(repo) as cat:
        cat.sql(warm_footers)

        def run_catalog(i):
            return sorted(cat.cone("Object", *centres[i], CONE_RADIUS, columns=["objectId"])["objectId"].to_list())

        run_catalog(0)
        t_cone, c_cone, api = median_time(run_catalog, repeats)
    assert api == ours, "Catalog.cone and the cone() macro return different ids"
    t_scan, c_scan, full = median_time(run(scan), 3)
    assert ours[:len(full)] == full, "pruned and full-scan cones differ"
    cat = lsdb.open_catalog(repo / "hats" / "Object", columns=["objectId", "coord_ra", "coord_dec"])

    def run_lsdb(i):
        return sorted(cat.cone_search(*centres[i], CONE_RADIUS * 3600).compute()["objectId"].tolist())

    run_lsdb(0)
    t_lsdb, _, theirs = median_time(run_lsdb, repeats)
    assert theirs == ours, "LSDB and cone() return different ids"
    con.close()
    n = statistics.median(len(r) for r in ours)
    return [("cone 1' Catalog.cone, warm median", t_cone, c_cone, f"{n:.0f} rows, {repeats} centres"),
            ("cone 1' cone() SQL macro, warm median", t_macro, c_macro, ""),
            ("cone 1' cone() macro, no Parquet metadata cache", t_cold, c_cold, ""),
            ("cone 1' full scan (no pruning)", t_scan, c_scan,
             f"ratio {t_scan / t_cone:.0f}x (Catalog.cone), {t_scan / t_macro:.0f}x (macro)"),
            ("cone 1' LSDB cone_search", t_lsdb, None,
             f"ratio {t_lsdb / t_cone:.1f}x (Catalog.cone), {t_lsdb / t_macro:.1f}x (macro)")]


def bench_healpix(n: int) -> list[tuple]:
    """healpix_nest over n points uniform on the whole sky (both caps included) in an in-memory
    DuckDB table, with the default thread count and with one thread, at order 29 and order 10;
    each query is planned once per run (planning included).  Its order-29 result is checked
    against healpy, whose single-threaded rate is printed beside it."""
    import healpy as hp
    rng = np.random.default_rng(5)
    ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    con = duckdb.connect()
    con.execute(sql_files()[0])  # 10_healpix.sql, as stored in catalog.duckdb
    con.register("points", pa.table({"ra": ra, "dec": dec}))
    con.execute("CREATE TABLE p AS SELECT * FROM points")
    con.unregister("points")
    got = con.execute("SELECT healpix_nest(29, ra, dec) AS h FROM p").fetchnumpy()["h"]
    t_hp, c_hp, (expected, *_) = median_time(lambda i: hp.ang2pix(1 << 29, ra, dec, nest=True, lonlat=True), 3)
    assert np.array_equal(got, expected), "healpix_nest differs from healpy"
    default_threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    rows = []
    for threads in (default_threads, 1):
        con.execute(f"SET threads = {threads}")
        for order in (29, 10):
            sql = f"SELECT max(healpix_nest({order}, ra, dec)) FROM p"
            con.execute(sql).fetchall()
            t, c, _ = median_time(lambda i, sql=sql: con.execute(sql).fetchall(), 3)
            rows.append((f"healpix_nest order {order}, {threads} thread(s)", t, c,
                         f"{n / t / 1e6:.1f} Mrows/s, {c / n * 1e9:.0f} ns/row CPU ({n:.0e} rows)"))
    con.execute(f"SET threads = {default_threads}")
    t_one, c_one, _ = median_time(lambda i: con.execute("SELECT healpix_nest(29, 150.0, 1.0)").fetchall(), 3)
    con.close()
    return rows + [("healpix_nest one row (planning)", t_one, c_one, ""),
                   ("healpy ang2pix order 29 (reference, 1 thread)", t_hp, c_hp,
                    f"{n / t_hp / 1e6:.1f} Mrows/s, {c_hp / n * 1e9:.0f} ns/row CPU")]


def bench_xmatch(workdir: Path, n: int) -> list[tuple]:
    import astropy.units as u
    import lsdb
    from astropy.coordinates import SkyCoord
    rng = np.random.default_rng(9)
    ra, dec = _patch(rng, n)
    repo = workdir / "xmatch_repo"
    if _generated_rows(repo) != n:
        shutil.rmtree(repo, ignore_errors=True)
        write_hats("Object", synthetic_table("Object", ra, dec), repo / "hats", max_rows_per_partition=200_000)
        build_database(repo)
    k = int(0.7 * n)  # 70 % within ~0.3" of an Object, 30 % anywhere in the patch
    q_ra = np.concatenate([ra[:k] + rng.normal(0, 0.3, k) / 3600 / np.cos(np.radians(dec[:k])),
                           _patch(rng, n - k)[0]])
    q_dec = np.concatenate([dec[:k] + rng.normal(0, 0.3, k) / 3600, _patch(rng, n - k)[1]])
    left = pl.DataFrame({"ra": q_ra, "dec": q_dec, "k": np.arange(n)})
    radius = 1 / 3600
    columns = ["objectId", "coord_ra", "coord_dec"]  # what LSDB is opened with below
    with Catalog(repo) as cat:
        t_ours, c_ours, runs = median_time(lambda i: cat.crossmatch(left, radius, columns=columns), 3)
    ours = runs[0]

    def astropy_match(i):
        idx, sep, _ = SkyCoord(q_ra, q_dec, unit="deg").match_to_catalog_sky(SkyCoord(ra, dec, unit="deg"))
        return idx, sep < 1 * u.arcsec

    t_astropy, c_astropy, ((idx, ok), *_) = median_time(astropy_match, 3)
    assert ours["k"].to_list() == np.flatnonzero(ok).tolist(), "xmatch and astropy match different rows"
    assert (ours["match_objectId"].to_numpy() == idx[ok] + 1).all(), "xmatch and astropy pick different Objects"
    right = lsdb.open_catalog(repo / "hats" / "Object", columns=columns,
                              margin_cache=repo / "hats" / "_margin" / "Object")

    def lsdb_match(i):
        lcat = lsdb.from_dataframe(left.to_pandas(), ra_column="ra", dec_column="dec")
        return lcat.crossmatch(right, radius_arcsec=1.0, n_neighbors=1).compute()

    t_lsdb, _, (theirs, *_) = median_time(lsdb_match, 3)
    assert len(theirs) == ours.height, (len(theirs), ours.height)
    return [(f"crossmatch {n:.0e} x {n:.0e} within 1\" (xmatch_rows)", t_ours, c_ours,
             f"{ours.height} matches, columns {', '.join(columns)}"),
            ("crossmatch astropy match_to_catalog_sky", t_astropy, c_astropy, f"ratio {t_astropy / t_ours:.1f}x"),
            ("crossmatch LSDB (incl. from_dataframe)", t_lsdb, None, f"ratio {t_lsdb / t_ours:.1f}x")]


def _print_table(table: list[tuple]) -> None:
    print(f"\n{'measurement':58s} {'median s':>10s} {'cpu s':>8s}  notes")
    for name, seconds, cpu, note in table:
        cpu_text = "" if cpu is None else f"{cpu:.4f}"
        print(f"{name:58s} {seconds:10.4f} {cpu_text:>8s}  {note}")


def _generated_rows(repo: Path) -> int:
    """hats_nrows of a previously generated Object catalog, 0 when there is none."""
    props = repo / "hats" / "Object" / "hats.properties"
    if not props.exists() or not (repo / "catalog.duckdb").exists():
        return 0
    values = dict(line.split("=", 1) for line in props.read_text().splitlines() if "=" in line)
    return int(values.get("hats_nrows", 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=float, default=1e8, help="Object rows (default 1e8)")
    ap.add_argument("--max-rows", type=float, default=1e6, help="max rows per HATS partition")
    ap.add_argument("--xmatch-rows", type=float, default=1e6)
    ap.add_argument("--healpix-rows", type=float, default=1e7)
    ap.add_argument("--repeats", type=int, default=7, help="cone runs per method (>= 5)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to generate (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated data (reused by the next run "
                                                        "with the same --workdir and --rows)")
    ap.add_argument("--only", choices=["healpix"], help="run only this benchmark (healpix: no catalog is generated)")
    args = ap.parse_args()
    if args.only == "healpix":
        _print_table(bench_healpix(int(args.healpix_rows)))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="skydp_bench_"))
    repo = workdir / "repo"
    rows = int(args.rows)
    t0 = time.perf_counter()
    if _generated_rows(repo) == rows:
        how = "reused"
    else:
        shutil.rmtree(repo, ignore_errors=True)
        generate_object_catalog(repo / "hats", rows, int(args.max_rows))
        build_database(repo)
        how = "generated"
    t_gen = time.perf_counter() - t0
    size = subprocess.run(["du", "-sh", str(repo / "hats" / "Object")], capture_output=True, text=True).stdout.split()[0]
    nfiles = len(list((repo / "hats" / "Object" / "dataset").rglob("*.parquet")))
    table = [(f"Object {rows:.0e} rows {how} ({size} on disk, {nfiles} files)", t_gen, None, "")]
    rng = np.random.default_rng(1)
    table += bench_cone(repo, max(5, args.repeats), rng)
    table += bench_healpix(int(args.healpix_rows))
    table += bench_xmatch(workdir, int(args.xmatch_rows))
    _print_table(table)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
