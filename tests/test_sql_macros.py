"""SQL macros against independent references: healpy, astropy, and the duckdb shell binary."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import healpy as hp
import numpy as np
import pyarrow as pa
import pytest

from skydp.store import Catalog, build_database, write_hats
from skydp.store.database import sql_files
from skydp.store.synthetic import synthetic_table


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    c.execute(sql_files()[0])  # 10_healpix.sql needs no tables
    return c


def _healpy_nest(order: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    expected = np.empty(len(ra), np.int64)
    for o in np.unique(order):
        m = order == o
        expected[m] = hp.ang2pix(1 << int(o), ra[m], dec[m], nest=True, lonlat=True)
    return expected


def test_healpix_nest_bit_exact_with_healpy(con):
    rng = np.random.default_rng(11)
    n = 1_000_000
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    # poles, the belt/cap transition |z| = 2/3, face edges (ra multiples of 45) and pixel corners
    edge_dec = np.degrees(np.arcsin(2 / 3))
    special_ra = np.concatenate([np.arange(0, 360, 45.0), np.nextafter(np.arange(0, 360, 45.0), 0)])
    special_dec = np.array([90, -90, edge_dec, -edge_dec, np.nextafter(edge_dec, 0), 0.0, 89.999999, -89.43])
    sr, sd = np.meshgrid(special_ra, special_dec)
    k = rng.integers(0, 30, n)
    corners = np.concatenate([hp.vec2ang(hp.boundaries(1 << int(o), rng.integers(0, 12 * 4 ** int(o), 50),
                                                       nest=True).transpose(0, 2, 1).reshape(-1, 3), lonlat=True)
                              for o in (3, 10, 20)], axis=1)
    ra = np.concatenate([ra, sr.ravel(), corners[0]])
    dec = np.concatenate([dec, sd.ravel(), corners[1]])
    order = np.concatenate([k, rng.integers(0, 30, sr.size + corners.shape[1])])
    con.register("hpx_random", pa.table({"o": order, "ra": ra, "dec": dec}))
    got = con.execute("SELECT healpix_nest(o, ra, dec) AS h FROM hpx_random").fetchnumpy()["h"]
    assert len(ra) >= 1_000_000
    np.testing.assert_array_equal(got, _healpy_nest(order, ra, dec))


def test_healpix_nest_on_pixel_boundaries(con):
    """Points on (and one ulp either side of) the edges and corners of pixels of 13 orders from 0 to
    29, each evaluated at every order 0..29 (an edge at order k is one at every finer order), plus
    the belt/cap transition, the poles, theta = 0.01 (sin replaces sqrt) and longitudes outside
    [0, 360) (-1e-300 is fmodulo's rounded case)."""
    rng = np.random.default_rng(7)
    lon, lat = [], []
    for o in (0, 1, 2, 4, 7, 10, 13, 16, 19, 22, 25, 27, 29):
        pix = rng.integers(0, 12 * 4 ** o, 40)
        vec = hp.boundaries(1 << o, pix, step=3, nest=True).transpose(0, 2, 1).reshape(-1, 3)
        a, b = hp.vec2ang(vec, lonlat=True)
        lon.append(a); lat.append(b)
    lon, lat = np.concatenate(lon), np.concatenate(lat)
    lon = np.concatenate([lon, np.nextafter(lon, -1), np.nextafter(lon, 400), lon, lon])
    lat = np.concatenate([lat, lat, lat, np.nextafter(lat, -90), np.nextafter(lat, 90)])
    edge = np.degrees(np.arcsin(2 / 3))
    below_edge = np.nextafter(edge, 0)  # |z| = 2/3 exactly: belt, faces 4 and 12 at tt = 4 - ulp
    special_lat = np.array([90, -90, edge, -edge, below_edge, -below_edge, np.nextafter(edge, 90), 0.0,
                            np.degrees(np.pi / 2 - 0.01), np.nextafter(np.degrees(np.pi / 2 - 0.01), 90)])
    special_lon = np.array([0.0, -0.0, 45.0, 90.0, 359.99999999999994, 360.0, -1e-300, -30.0, 720.5, -1079.0])
    sl, sb = np.meshgrid(special_lon, special_lat)
    lon, lat = np.concatenate([lon, sl.ravel()]), np.concatenate([lat, sb.ravel()])
    order = np.repeat(np.arange(30), len(lon))
    lon, lat = np.tile(lon, 30), np.tile(lat, 30)
    con.register("hpx_edges", pa.table({"o": order, "ra": lon, "dec": lat}))
    got = con.execute("SELECT healpix_nest(o, ra, dec) AS h FROM hpx_edges").fetchnumpy()["h"]
    assert len(lon) > 100_000
    np.testing.assert_array_equal(got, _healpy_nest(order, lon, lat))


def test_healpix_nest_null_where_healpy_raises(con):
    rows = con.execute("SELECT healpix_nest(k, ra, dec) FROM (VALUES (30, 10.0, 20.0), (-1, 10.0, 20.0), "
                       "(3, 10.0, 90.5), (3, 10.0, -91.0), (3, 'nan'::DOUBLE, 0.0), (3, 'inf'::DOUBLE, 0.0), "
                       "(3, 10.0, 'nan'::DOUBLE), (NULL, 1.0, 2.0), (3, 10.0, 20.0)) v(k, ra, dec)").fetchall()
    assert [r[0] for r in rows] == [None] * 8 + [int(hp.ang2pix(8, 10.0, 20.0, nest=True, lonlat=True))]


def test_ang_sep_against_astropy(con):
    from astropy.coordinates import SkyCoord
    con.execute(sql_files()[1].split("-- (ra, dec) within radius")[0])
    rng = np.random.default_rng(5)
    ra1 = rng.uniform(0, 360, 2000); dec1 = rng.uniform(-90, 90, 2000)
    scale = 10.0 ** rng.uniform(-7, 2.3, 2000)  # ~0.4 mas .. 180 deg
    ra2 = ra1 + rng.normal(0, 1, 2000) * scale; dec2 = np.clip(dec1 + rng.normal(0, 1, 2000) * scale, -90, 90)
    t = pa.table({"ra1": ra1, "dec1": dec1, "ra2": ra2, "dec2": dec2})
    got = con.execute("SELECT ang_sep(ra1, dec1, ra2, dec2) AS s FROM t").fetchnumpy()["s"]
    ref = SkyCoord(ra1, dec1, unit="deg").separation(SkyCoord(ra2, dec2, unit="deg")).deg
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    assert con.execute("SELECT ang_sep(0, 0, 180, 0)").fetchone()[0] == pytest.approx(180.0, abs=1e-12)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("sqlrepo")
    rng = np.random.default_rng(9)
    n = 20_000
    ra = rng.uniform(0, 360, n); dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    write_hats("Object", synthetic_table("Object", ra, dec), repo / "hats", max_rows_per_partition=800)
    build_database(repo)
    return repo, ra, dec


def test_crossmatch_against_astropy(repo):
    from astropy.coordinates import SkyCoord
    import polars as pl
    path, ra, dec = repo
    rng = np.random.default_rng(2)
    pick = rng.choice(len(ra), 3000, replace=False)
    q_ra = np.concatenate([ra[pick] + rng.normal(0, 1e-4, 3000), rng.uniform(0, 360, 500)])
    q_dec = np.concatenate([np.clip(dec[pick] + rng.normal(0, 1e-4, 3000), -90, 90),
                            rng.uniform(-90, 90, 500)])
    radius = 2.0 / 3600
    with Catalog(path) as cat:
        res = cat.crossmatch(pl.DataFrame({"ra": q_ra, "dec": q_dec, "k": np.arange(len(q_ra))}), radius)
    idx, sep, _ = SkyCoord(q_ra, q_dec, unit="deg").match_to_catalog_sky(SkyCoord(ra, dec, unit="deg"))
    ok = sep.deg <= radius
    assert res["k"].to_list() == list(np.flatnonzero(ok))  # in df's order
    assert (res["match_objectId"].to_numpy() == idx[ok] + 1).all()
    assert {"match_coord_ra", "match_g_psfFlux", "match__healpix_29"} <= set(res.columns)
    with Catalog(path) as cat:
        few = cat.crossmatch(pl.DataFrame({"ra": q_ra, "dec": q_dec}), radius, columns=["objectId"])
    assert few.columns == ["ra", "dec", "match_objectId", "sep_arcsec"]
    assert few["match_objectId"].to_list() == res["match_objectId"].to_list()
    np.testing.assert_allclose(few["sep_arcsec"], sep.arcsec[ok], rtol=1e-7)


def test_catalog_rejects_bad_values(repo):
    path, _, _ = repo
    with Catalog(path) as cat:
        for kwargs, name in ((dict(ra=1, dec=91, radius=1), "dec"), (dict(ra=1, dec=0, radius=0), "radius"),
                             (dict(ra=float("nan"), dec=0, radius=1), "ra")):
            with pytest.raises(ValueError, match=name):
                cat.cone("Object", **kwargs)
        with pytest.raises(ValueError, match="table"):
            cat.cone("Object; DROP TABLE x", 1, 1, 1)
        with pytest.raises(ValueError, match="columns"):
            cat.cone("Object", 1, 1, 1, columns=["nope"])
        # ra outside [0, 360) is normalised
        a = cat.cone("Object", 370, 10, 5, columns=["objectId"])["objectId"].sort().to_list()
        b = cat.cone("Object", 10, 10, 5, columns=["objectId"])["objectId"].sort().to_list()
        assert a == b and a


def test_duckdb_shell_opens_database(repo):
    path, ra, dec = repo
    shell = shutil.which("duckdb") or str(Path(sys.executable).parent / "duckdb")
    query = ("SELECT count(*) FROM cone('Object', 120.0, 10.0, 5.0);"
             "SELECT count(*) FROM Object o JOIN cone('Object', 120.0, 10.0, 5.0) c USING (objectId);"
             "SELECT healpix_nest(29, 120.0, 10.0);")
    out = subprocess.run([shell, "-readonly", "-csv", "-noheader", str(path / "catalog.duckdb"), "-c", query],
                         capture_output=True, text=True, check=True).stdout.split()
    from astropy.coordinates import SkyCoord
    expected = int((SkyCoord(ra, dec, unit="deg").separation(SkyCoord(120, 10, unit="deg")).deg <= 5).sum())
    assert out == [str(expected), str(expected),
                   str(hp.ang2pix(1 << 29, 120.0, 10.0, nest=True, lonlat=True))]


@pytest.mark.parametrize("radius", [1 / 3600, 0.5, 5.0])
def test_xmatch_rows_near_poles_and_across_ra_zero(tmp_path, radius):
    """Nearest neighbour within radius, against astropy, where the RA buckets are widest or wrap:
    both caps, the pole itself and RA 0/360."""
    from astropy.coordinates import SkyCoord
    build_database(tmp_path)  # no catalogs: the macros only
    rng = np.random.default_rng(int(radius * 3600))

    def field(n):
        dec = np.concatenate([rng.uniform(80, 90, n // 3), rng.uniform(-90, -80, n // 3),
                              rng.uniform(-10, 10, n - 2 * (n // 3))])
        ra = np.where(np.abs(dec) < 80, rng.uniform(-5, 5, n) % 360, rng.uniform(0, 360, n))
        return ra, dec

    r_ra, r_dec = field(3000)
    r_ra, r_dec = np.append(r_ra, [0.0, 123.0]), np.append(r_dec, [90.0, -90.0])  # the poles
    near = rng.choice(len(r_ra), 1000)
    l_ra = np.concatenate([(r_ra[near] + rng.normal(0, radius / 2, 1000)) % 360, field(1000)[0]])
    l_dec = np.concatenate([np.clip(r_dec[near] + rng.normal(0, radius / 2, 1000), -90, 90), field(1000)[1]])
    con = duckdb.connect(str(tmp_path / "catalog.duckdb"), read_only=True)
    con.register("l", pa.table({"ra": l_ra, "dec": l_dec}))
    con.register("r", pa.table({"ra": r_ra, "dec": r_dec}))
    got = con.sql(f"SELECT * FROM xmatch_rows('l', 'r', {radius!r}) ORDER BY _left_row").fetchnumpy()
    idx, sep, _ = SkyCoord(l_ra, l_dec, unit="deg").match_to_catalog_sky(SkyCoord(r_ra, r_dec, unit="deg"))
    ok = sep.deg <= radius
    assert ok.sum() > 500
    np.testing.assert_array_equal(got["_left_row"], np.flatnonzero(ok))
    np.testing.assert_array_equal(got["_right_row"], idx[ok])
    np.testing.assert_allclose(got["sep"], sep.deg[ok], rtol=1e-9, atol=1e-12)
