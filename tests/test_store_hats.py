"""HATS writer: validity (hats strict, lsdb), cone searches against lsdb, append, compaction,
byte-identical rewrites."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from skydp.store import append_hats, build_database, compact_hats, write_hats, Catalog
from skydp.store.layout import margin_path
from skydp.store.synthetic import synthetic_table


def _sky(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # a 30x20 deg field, dense enough for several partition orders
    return rng.uniform(100, 130, n), np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-10)),
                                                                        np.sin(np.radians(10)), n)))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    ra, dec = _sky(30_000, 1)
    write_hats("Object", synthetic_table("Object", ra, dec), repo / "hats", max_rows_per_partition=1500)
    return repo


def test_hats_strict_validation_and_lsdb_open(repo):
    from hats.io.validation import is_valid_catalog
    import lsdb
    cat = repo / "hats" / "Object"
    assert is_valid_catalog(cat, strict=True)
    assert is_valid_catalog(margin_path(repo / "hats", "Object"), strict=True)
    opened = lsdb.open_catalog(cat, margin_cache=margin_path(repo / "hats", "Object"))
    df = opened.compute()
    assert len(df) == 30_000
    assert len({p.order for p in opened.get_healpix_pixels()}) > 1  # adaptive orders
    # every leaf sorted by _healpix_29 and within its pixel
    for path in sorted((cat / "dataset").glob("Norder=*/Dir=*/Npix=*/*.parquet")):
        order = int(path.parts[-4].split("=")[1]); npix = int(path.parts[-2].split("=")[1])
        h = pq.read_table(path, columns=["_healpix_29"]).column(0).to_numpy()
        assert np.all(np.diff(h) >= 0)
        assert np.all(h >> (2 * (29 - order)) == npix)


def test_cone_matches_lsdb_on_random_cones(repo):
    import lsdb
    build_database(repo)
    opened = lsdb.open_catalog(repo / "hats" / "Object")
    rng = np.random.default_rng(7)
    with Catalog(repo) as cat:
        for _ in range(20):
            ra, dec, r = rng.uniform(101, 129), rng.uniform(-9, 9), rng.uniform(0.05, 2.0)
            ours = set(cat.cone("Object", ra, dec, r, columns=["objectId"])["objectId"].to_list())
            theirs = set(opened.cone_search(ra, dec, r * 3600).compute()["objectId"].tolist())
            assert ours == theirs
        # Catalog.cone plans the pruning in Python: the same table as the SQL macro
        macro = cat.sql("SELECT * FROM cone('Object', 115, 2, 0.5) ORDER BY objectId")
        assert cat.cone("Object", 115, 2, 0.5).sort("objectId").equals(macro) and macro.height > 0


def test_margin_holds_every_neighbour_within_threshold(repo):
    """Each row within 5" of a partition but stored in another one is in that partition's margin."""
    cat = repo / "hats" / "Object"
    prim = {}
    for path in (cat / "dataset").glob("Norder=*/Dir=*/Npix=*/*.parquet"):
        key = (int(path.parts[-4].split("=")[1]), int(path.parts[-2].split("=")[1]))
        prim[key] = pq.read_table(path, columns=["objectId", "coord_ra", "coord_dec"]).to_pandas()
    margin = {}
    for path in (margin_path(repo / "hats", "Object") / "dataset").glob("Norder=*/Dir=*/Npix=*/*.parquet"):
        key = (int(path.parts[-4].split("=")[1]), int(path.parts[-2].split("=")[1]))
        margin[key] = set(pq.read_table(path, columns=["objectId"]).column(0).to_pylist())
    import pandas as pd
    allrows = pd.concat([df.assign(order=k[0], npix=k[1]) for k, df in prim.items()])
    # brute force: for each leaf, rows of other leaves within 5" of one of its rows' pixel boundary is
    # hard to compute exactly; use the definition on the sky: a row within 5" of any row of the leaf
    from astropy.coordinates import SkyCoord, search_around_sky
    import astropy.units as u
    c = SkyCoord(allrows.coord_ra.values, allrows.coord_dec.values, unit="deg")
    i, j, _, _ = search_around_sky(c, c, 5 * u.arcsec)
    oi = allrows.order.values; ni = allrows.npix.values; ids = allrows.objectId.values
    other = (oi[i] != oi[j]) | (ni[i] != ni[j])
    for a, b in zip(i[other], j[other]):
        # row b is within 5" of row a, which lies inside leaf (oi[a], ni[a]): b must be in its margin
        assert ids[b] in margin.get((oi[a], ni[a]), set())


def test_append_writes_new_files_only_and_compaction(tmp_path):
    hats_dir = tmp_path / "hats"
    ra, dec = _sky(6000, 2)
    write_hats("Object", synthetic_table("Object", ra, dec), hats_dir, max_rows_per_partition=1000)
    before = {p: p.stat().st_mtime_ns for p in (hats_dir / "Object" / "dataset").rglob("*.parquet")}
    ra2, dec2 = _sky(3000, 3)
    append_hats("Object", synthetic_table("Object", ra2, dec2, first_id=10_000), hats_dir)
    after = {p: p.stat().st_mtime_ns for p in (hats_dir / "Object" / "dataset").rglob("*.parquet")}
    assert all(after[p] == t for p, t in before.items())  # untouched files not rewritten
    assert len(after) > len(before)
    total = sum(pq.read_metadata(p).num_rows for p in after)
    assert total == 9000
    md = pq.read_metadata(hats_dir / "Object" / "dataset" / "_metadata")
    assert md.num_rows == 9000
    # appending the same rows again is idempotent (content-named files)
    append_hats("Object", synthetic_table("Object", ra2, dec2, first_id=10_000), hats_dir)
    assert pq.read_metadata(hats_dir / "Object" / "dataset" / "_metadata").num_rows == 9000
    assert compact_hats(hats_dir, "Object")
    from hats.io.validation import is_valid_catalog
    assert is_valid_catalog(hats_dir / "Object", strict=True)
    counts = [pq.read_metadata(p).num_rows for p in (hats_dir / "Object" / "dataset").rglob("*.parquet")]
    assert sum(counts) == 9000 and max(counts) <= 1000


def test_rewrite_is_byte_identical(tmp_path):
    ra, dec = _sky(3000, 4)
    table = synthetic_table("DiaObject", ra, dec)
    files = []
    for name in ("a", "b"):
        write_hats("DiaObject", table, tmp_path / name, max_rows_per_partition=700)
        root = tmp_path / name
        files.append({p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})
    assert files[0].keys() == files[1].keys() and files[0] == files[1]


def test_bad_positions_raise(tmp_path):
    with pytest.raises(ValueError, match="dec"):
        write_hats("Object", synthetic_table("Object", np.array([1.0]), np.array([95.0])), tmp_path)
