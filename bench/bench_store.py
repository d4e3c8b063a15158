"""Catalog store benchmark (issue 5, Performance): cone search, healpix_nest, cross-match.

Generates a synthetic Object HATS catalog of --rows rows (uniform in a 20 x 20 deg patch, so the
density is survey-like: 1e8 rows = 2.5e5 per deg^2) leaf by leaf, so memory stays bounded by the
largest leaf, then measures in the same run and prints medians and ratios:
  - cone search of radius 1' through the cone() macro (partition + row-group pruning), warm median
    over --repeats random centres, against the same exact cut without pruning (full scan) and
    against LSDB's cone_search on the same HATS catalog (identical id sets are checked);
  - healpix_nest (SQL macro) rows per second on in-memory points, with healpy for reference;
  - cross-match of --xmatch-rows x --xmatch-rows within 1" (Catalog.crossmatch, the xmatch()
    macro) against astropy's match_to_catalog_sky and LSDB's crossmatch (same matches checked).
Usage: python bench/bench_store.py --rows 1e7 [--workdir DIR] [--keep]
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

from skydp.store import Catalog, build_database, write_hats
from skydp.store.hats import _plan_leaves, _prepare, _properties, _write_leaves, _write_metadata, healpix29
from skydp.store.synthetic import synthetic_table

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


def _median_time(fn, repeats: int) -> tuple[float, list]:
    times, results = [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        results.append(fn(i))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), results


def bench_cone(repo: Path, repeats: int, rng: np.random.Generator) -> list[tuple]:
    import lsdb
    centres = list(zip(*_patch(rng, repeats)))
    con = duckdb.connect(str(repo / "catalog.duckdb"), read_only=True)
    pruned = "SELECT objectId FROM cone('Object', $1, $2, $3)"
    scan = "SELECT objectId FROM Object WHERE ang_sep(coord_ra, coord_dec, $1, $2) <= $3"

    def run(sql):
        return lambda i: sorted(r[0] for r in con.execute(sql, [*centres[i], CONE_RADIUS]).fetchall())

    run(pruned)(0)  # warm: page cache, macro planning
    t_cone, ours = _median_time(run(pruned), repeats)
    t_scan, full = _median_time(run(scan), max(3, repeats // 2))
    assert ours[:len(full)] == full, "pruned and full-scan cones differ"
    cat = lsdb.open_catalog(repo / "hats" / "Object", columns=["objectId", "coord_ra", "coord_dec"])

    def run_lsdb(i):
        return sorted(cat.cone_search(*centres[i], CONE_RADIUS * 3600).compute()["objectId"].tolist())

    run_lsdb(0)
    t_lsdb, theirs = _median_time(run_lsdb, repeats)
    assert theirs == ours, "LSDB and cone() return different ids"
    con.close()
    n = statistics.median(len(r) for r in ours)
    return [("cone 1' (cone macro), warm median", t_cone, f"{n:.0f} rows"),
            ("cone 1' full scan (no pruning)", t_scan, f"ratio {t_scan / t_cone:.0f}x"),
            ("cone 1' LSDB cone_search", t_lsdb, f"ratio {t_lsdb / t_cone:.1f}x")]


def bench_healpix(repo: Path, n: int) -> list[tuple]:
    import healpy as hp
    con = duckdb.connect(str(repo / "catalog.duckdb"), read_only=True)
    ra, dec = _patch(np.random.default_rng(5), n)
    con.register("pts", pl.DataFrame({"ra": ra, "dec": dec}).to_arrow())
    con.execute("CREATE TEMP TABLE p AS SELECT * FROM pts")
    sql = "SELECT max(h) FROM (SELECT healpix_nest(29, ra, dec) AS h FROM p)"
    con.execute(sql).fetchall()
    t_sql, _ = _median_time(lambda i: con.execute(sql).fetchall(), 3)
    t_hp, _ = _median_time(lambda i: hp.ang2pix(1 << 29, ra, dec, nest=True, lonlat=True), 3)
    con.close()
    return [("healpix_nest SQL macro", t_sql, f"{n / t_sql / 1e6:.1f} Mrows/s ({n:.0e} rows)"),
            ("healpy ang2pix (reference)", t_hp, f"{n / t_hp / 1e6:.1f} Mrows/s")]


def bench_xmatch(workdir: Path, n: int) -> list[tuple]:
    import astropy.units as u
    import lsdb
    from astropy.coordinates import SkyCoord
    rng = np.random.default_rng(9)
    ra, dec = _patch(rng, n)
    repo = workdir / "xmatch_repo"
    write_hats("Object", synthetic_table("Object", ra, dec), repo / "hats", max_rows_per_partition=200_000)
    build_database(repo)
    k = int(0.7 * n)  # 70 % within ~0.3" of an Object, 30 % anywhere in the patch
    q_ra = np.concatenate([ra[:k] + rng.normal(0, 0.3, k) / 3600 / np.cos(np.radians(dec[:k])),
                           _patch(rng, n - k)[0]])
    q_dec = np.concatenate([dec[:k] + rng.normal(0, 0.3, k) / 3600, _patch(rng, n - k)[1]])
    left = pl.DataFrame({"ra": q_ra, "dec": q_dec, "k": np.arange(n)})
    radius = 1 / 3600
    with Catalog(repo) as cat:
        t0 = time.perf_counter()
        ours = cat.crossmatch(left, radius)
        t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx, sep, _ = SkyCoord(q_ra, q_dec, unit="deg").match_to_catalog_sky(SkyCoord(ra, dec, unit="deg"))
    ok = sep < 1 * u.arcsec
    t_astropy = time.perf_counter() - t0
    assert ours.height == int(ok.sum()), (ours.height, int(ok.sum()))
    right = lsdb.open_catalog(repo / "hats" / "Object", columns=["objectId", "coord_ra", "coord_dec"],
                              margin_cache=repo / "hats" / "_margin" / "Object")
    t0 = time.perf_counter()
    lcat = lsdb.from_dataframe(left.to_pandas(), ra_column="ra", dec_column="dec")
    theirs = lcat.crossmatch(right, radius_arcsec=1.0, n_neighbors=1).compute()
    t_lsdb = time.perf_counter() - t0
    assert len(theirs) == ours.height, (len(theirs), ours.height)
    return [(f"crossmatch {n:.0e} x {n:.0e} within 1\" (xmatch)", t_ours, f"{ours.height} matches"),
            ("crossmatch astropy match_to_catalog_sky", t_astropy, f"ratio {t_astropy / t_ours:.1f}x"),
            ("crossmatch LSDB (incl. from_dataframe)", t_lsdb, f"ratio {t_lsdb / t_ours:.1f}x")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=float, default=1e8, help="Object rows (default 1e8)")
    ap.add_argument("--max-rows", type=float, default=1e6, help="max rows per HATS partition")
    ap.add_argument("--xmatch-rows", type=float, default=1e6)
    ap.add_argument("--healpix-rows", type=float, default=1e7)
    ap.add_argument("--repeats", type=int, default=7, help="cone runs per method (>= 5)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to generate (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    args = ap.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="skydp_bench_"))
    repo = workdir / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    rows = int(args.rows)
    t0 = time.perf_counter()
    generate_object_catalog(repo / "hats", rows, int(args.max_rows))
    build_database(repo)
    t_gen = time.perf_counter() - t0
    size = subprocess.run(["du", "-sh", str(repo / "hats" / "Object")], capture_output=True, text=True).stdout.split()[0]
    nfiles = len(list((repo / "hats" / "Object" / "dataset").rglob("*.parquet")))
    table = [(f"generate Object {rows:.0e} rows ({size}, {nfiles} files)", t_gen, "")]
    rng = np.random.default_rng(1)
    table += bench_cone(repo, max(5, args.repeats), rng)
    table += bench_healpix(repo, int(args.healpix_rows))
    table += bench_xmatch(workdir, int(args.xmatch_rows))
    print(f"\n{'measurement':58s} {'median s':>10s}  notes")
    for name, seconds, note in table:
        print(f"{name:58s} {seconds:10.4f}  {note}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
