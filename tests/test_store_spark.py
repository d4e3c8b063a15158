"""Spark reading of the HATS repository, DuckDB -> Spark translation (same results on both engines)
and ADQL -> DuckDB translation checked against astropy/numpy on the input positions."""

from __future__ import annotations

import math

import duckdb
import healpy as hp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skydp import tables
from skydp.store import build_database, translate_adql, translate_to_spark, write_hats
from skydp.store.layout import positional_tables
from skydp.store.spark import local_session, register_tables, run_spark_sql
from skydp.store.synthetic import synthetic_table
from skydp.store.translate import TranslationError

VISITS = np.arange(2026032400001, 2026032400011)
DETECTORS = np.arange(4)


@pytest.fixture(scope="session")
def spark():
    session = local_session(cores=2, shuffle_partitions=4)
    yield session
    session.stop()


def _field(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(148, 152, n), rng.uniform(0, 4, n)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A small repository: every positional table as HATS (several partition orders), Visit,
    CcdVisit and ImageMetadata as plain Parquet, with ids that join."""
    repo = tmp_path_factory.mktemp("sparkrepo")
    rng = np.random.default_rng(3)
    hats = repo / "hats"
    ra, dec = _field(rng, 4000)
    write_hats("Object", synthetic_table("Object", ra, dec), hats, max_rows_per_partition=400)
    # DiaObjects: 800 near Objects (0.3" offsets), 400 elsewhere
    near = rng.choice(4000, 800, replace=False)
    d_ra = np.concatenate([ra[near] + rng.normal(0, 0.3, 800) / 3600 / np.cos(np.radians(dec[near])),
                           _field(rng, 400)[0]])
    d_dec = np.concatenate([dec[near] + rng.normal(0, 0.3, 800) / 3600, _field(rng, 400)[1]])
    write_hats("DiaObject", synthetic_table("DiaObject", d_ra, d_dec, seed=1), hats, max_rows_per_partition=300)
    # ForcedSource: 150 objects x 10 visits
    obj = np.repeat(np.arange(1, 151), len(VISITS))
    vis = np.tile(VISITS, 150)
    n = len(obj)
    flux = rng.normal(2000, 1500, n)
    fs = synthetic_table("ForcedSource", ra[obj - 1], dec[obj - 1], seed=2, extra={
        "objectId": obj, "visit": vis, "detector": rng.integers(0, 4, n),
        "band": np.array(list("ugrizy"))[vis % 6], "midpointMjdTai": 61123.0 + (vis - VISITS[0]) * 0.9,
        "psfFlux": flux, "psfFluxErr": np.abs(rng.normal(100, 10, n))})
    write_hats("ForcedSource", fs, hats, max_rows_per_partition=500)
    s_ra, s_dec = _field(rng, 3000)
    src = synthetic_table("Source", s_ra, s_dec, seed=3, extra={
        "visit": rng.choice(VISITS, 3000), "detector": rng.integers(0, 4, 3000).astype(np.int32)})
    write_hats("Source", src, hats, max_rows_per_partition=600)
    dia_obj = rng.integers(1, 1201, 1500)
    dsrc = synthetic_table("DiaSource", d_ra[dia_obj - 1], d_dec[dia_obj - 1], seed=4, extra={
        "diaObjectId": dia_obj, "visit": rng.choice(VISITS, 1500), "detector": rng.integers(0, 4, 1500),
        "psfFlux": rng.normal(500, 300, 1500), "psfFluxErr": np.full(1500, 50.0)})
    write_hats("DiaSource", dsrc, hats, max_rows_per_partition=400)
    (repo / "tables").mkdir()
    pq.write_table(tables.to_arrow("Visit", {
        "visit": VISITS, "physical_filter": np.array(list("ugrizy"))[VISITS % 6],
        "band": np.array(list("ugrizy"))[VISITS % 6], "expMidptMJD": 61123.0 + np.arange(10) * 0.9,
        "airmass": np.linspace(1.0, 1.9, 10)}), repo / "tables" / "Visit.parquet")
    vv, dd = np.meshgrid(VISITS, DETECTORS, indexing="ij")
    pq.write_table(tables.to_arrow("CcdVisit", {
        "ccdVisitId": vv.ravel() * 1000 + dd.ravel(), "visitId": vv.ravel(), "detector": dd.ravel(),
        "band": np.array(list("ugrizy"))[vv.ravel() % 6], "seeing": rng.uniform(0.6, 1.2, vv.size),
        "zeroPoint": rng.uniform(31, 32, vv.size)}), repo / "tables" / "CcdVisit.parquet")
    nim = vv.size
    im = {name: np.zeros(nim) for name in ("s_ra", "s_dec", "llcra", "llcdec", "ulcra", "ulcdec",
                                           "urcra", "urcdec", "lrcra", "lrcdec")}
    im.update({"imageId": np.arange(nim), "dataset_type": np.full(nim, "visit_image"),
               "dataproduct_type": np.full(nim, "image"), "calib_level": np.full(nim, 2, np.int16),
               "band": np.array(list("ugrizy"))[vv.ravel() % 6],
               "path": [f"visit_image/{v}/{d}.fits" for v, d in zip(vv.ravel(), dd.ravel())],
               "sha256": np.full(nim, "0" * 64), "s_region": np.full(nim, ""),
               "s_xel1": np.full(nim, 4096), "s_xel2": np.full(nim, 4096),
               "visit": vv.ravel(), "detector": dd.ravel()})
    pq.write_table(tables.to_arrow("ImageMetadata", im), repo / "tables" / "ImageMetadata.parquet")
    build_database(repo)
    return {"path": repo, "ra": ra, "dec": dec, "d_ra": d_ra, "d_dec": d_dec}


@pytest.fixture(scope="module")
def registered(spark, repo):
    register_tables(spark, repo["path"])
    return spark


def _duck(repo, query: str) -> pa.Table:
    con = duckdb.connect(str(repo["path"] / "catalog.duckdb"), read_only=True)
    try:
        return con.sql(query).to_arrow_table()
    finally:
        con.close()


def _rows(table: pa.Table) -> list[tuple]:
    def flat(v):
        return tuple(sorted(v.items())) if isinstance(v, dict) else v
    rows = [tuple(flat(v) for v in row.values()) for row in table.to_pylist()]
    return sorted(rows, key=lambda r: tuple((v is None, v if v is not None else 0) for v in r))


def _same(a: pa.Table, b: pa.Table) -> None:
    assert [c.lower() for c in a.column_names] == [c.lower() for c in b.column_names]
    ra, rb = _rows(a), _rows(b)
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        for u, v in zip(x, y):
            if isinstance(u, float) and isinstance(v, float):
                assert math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-12), (x, y)
            else:
                assert u == v, (x, y)


def test_spark_reads_every_table_with_partition_columns(registered, repo):
    for name in positional_tables():
        df = registered.table(name)
        types = dict(df.dtypes)
        assert all(types[c] == "bigint" for c in ("Norder", "Dir", "Npix")), name
        n_duck = _duck(repo, f'SELECT count(*) AS n FROM "{name}"')["n"][0].as_py()
        assert df.count() == n_duck, name
    for name in ("Visit", "CcdVisit", "ImageMetadata"):
        assert registered.table(name).count() == _duck(repo, f"SELECT count(*) AS n FROM {name}")["n"][0].as_py()
    # the partition columns are those of the directories: every row lies in its pixel
    bad = registered.sql("SELECT count(*) FROM Object WHERE shiftright(_healpix_29, 2 * (29 - Norder)) != Npix "
                         "OR Dir != Npix DIV 10000 * 10000").first()[0]
    assert bad == 0 and registered.sql("SELECT count(DISTINCT Norder) FROM Object").first()[0] > 1


QUERIES = {
    "cone": "SELECT objectId, coord_ra, coord_dec FROM cone('Object', 150.3, 1.7, 0.4)",
    "cone_expression_radius": "SELECT count(*) AS n FROM cone('Object', 149.0, 3.5, 30.0 / 60)",
    "in_cone_ang_sep": "SELECT objectId, ang_sep(coord_ra, coord_dec, 150.3, 1.7) * 3600 AS d FROM Object "
                       "WHERE in_cone(coord_ra, coord_dec, 150.3, 1.7, 0.25)",
    "join_ccdvisit": "SELECT s.sourceId, cv.ccdVisitId, cv.seeing FROM Source s JOIN CcdVisit cv "
                     "ON cv.visitId = s.visit AND cv.detector = s.detector WHERE s.band = 'r'",
    "cone_join_visit": "SELECT d.diaSourceId, v.band, v.airmass FROM cone('DiaSource', 150, 2, 1.0) d "
                       "JOIN Visit v ON v.visit = d.visit",
    "source_image": "SELECT sourceId, visit_image_path, expMidptMJD, zeroPoint FROM SourceImage "
                    "WHERE in_cone(coord_ra, coord_dec, 151, 1, 0.6)",
    "lightcurve": "SELECT objectId, mjd, band, psfFlux, psfMag, psfMagErr FROM ObjectLightCurve "
                  "WHERE objectId = 17 ORDER BY mjd",
    "per_band": "SELECT band, count(*) AS n, avg(psfFlux) AS mean_flux, min(midpointMjdTai) AS first, "
                "sum(CASE WHEN psfFlux > 0 THEN 1 ELSE 0 END) AS n_pos FROM ForcedSource GROUP BY band",
    "dia_lightcurve": "SELECT diaObjectId, count(*) AS n, max(psfMag) AS faintest FROM DiaObjectLightCurve "
                      "GROUP BY diaObjectId HAVING count(*) > 2",
    "cone_forced_aggregate": "SELECT c.objectId, count(*) AS n, avg(f.psfFlux) AS flux "
                             "FROM cone('Object', 149.5, 0.5, 1.5) c JOIN ForcedSource f USING (objectId) "
                             "GROUP BY c.objectId",
    "xmatch": "SELECT x.match.objectId AS objectId, x.sep * 3600 AS sep_arcsec "
              "FROM xmatch('DiaObject', 'Object', 1.0 / 3600) x",
    "healpix_nest": "SELECT objectId, healpix_nest(12, coord_ra, coord_dec) AS h12, "
                    "healpix_nest(29, coord_ra, coord_dec) AS h29 FROM Object WHERE objectId <= 500",
    "partitions": "SELECT Norder, Npix, count(*) AS n FROM Object GROUP BY Norder, Npix",
}


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_duckdb_and_spark_agree(registered, repo, name):
    query = QUERIES[name]
    duck = _duck(repo, query)
    spark = registered.sql(translate_to_spark(query)).toArrow()
    assert duck.num_rows > 0, "a query returning nothing compares nothing"
    _same(duck, spark)


def test_spark_results_against_independent_references(registered, repo):
    """The translated macros are right, not only equal to DuckDB's: astropy and healpy."""
    from astropy.coordinates import SkyCoord
    ra, dec = repo["ra"], repo["dec"]
    got = registered.sql(translate_to_spark(QUERIES["cone"])).toPandas()
    sep = SkyCoord(ra, dec, unit="deg").separation(SkyCoord(150.3, 1.7, unit="deg")).deg
    assert sorted(got.objectId) == list(np.flatnonzero(sep <= 0.4) + 1)
    hpx = registered.sql(translate_to_spark(QUERIES["healpix_nest"])).toPandas().sort_values("objectId")
    i = hpx.objectId.to_numpy() - 1
    np.testing.assert_array_equal(hpx.h12, hp.ang2pix(1 << 12, ra[i], dec[i], nest=True, lonlat=True))
    np.testing.assert_array_equal(hpx.h29, hp.ang2pix(1 << 29, ra[i], dec[i], nest=True, lonlat=True))
    idx, sep2, _ = (SkyCoord(repo["d_ra"], repo["d_dec"], unit="deg")
                    .match_to_catalog_sky(SkyCoord(ra, dec, unit="deg")))
    xm = registered.sql(translate_to_spark(QUERIES["xmatch"])).toPandas()
    ok = sep2.arcsec <= 1.0
    assert sorted(xm.objectId) == sorted(idx[ok] + 1)


def _scan(df) -> tuple[list, int]:
    """Rows of a single-scan query and the number of files its Parquet scan read (Spark metric)."""
    rows = df.collect()
    plan = df._jdf.queryExecution().executedPlan()
    leaves = plan.collectLeaves()
    assert leaves.size() == 1
    return sorted(r[0] for r in rows), leaves.apply(0).metrics().apply("numFiles").value()


def test_spark_cone_prunes_partitions(registered, repo):
    pruned, n_pruned = _scan(registered.sql(translate_to_spark(
        "SELECT objectId FROM cone('Object', 150.3, 1.7, 0.05)")))
    full, n_full = _scan(registered.sql(translate_to_spark(
        "SELECT objectId FROM Object WHERE in_cone(coord_ra, coord_dec, 150.3, 1.7, 0.05)")))
    assert 0 < n_pruned <= n_full / 4
    assert pruned == full != []


def test_run_spark_sql(spark, repo):
    out = run_spark_sql(repo["path"], "SELECT count(*) AS n FROM Object", spark=spark)
    assert out.column("n")[0].as_py() == 4000


def test_translation_errors():
    with pytest.raises(TranslationError, match="ang_sep"):
        translate_to_spark("SELECT ang_sep(1, 2, 3) FROM Object")
    with pytest.raises(TranslationError, match="string literal"):
        translate_to_spark("SELECT * FROM cone(t, 1, 2, 3)")
    with pytest.raises(TranslationError, match="unknown table"):
        translate_to_spark("SELECT * FROM cone('Nope', 1, 2, 3)")
    with pytest.raises(ValueError, match="one SQL statement"):
        translate_to_spark("SELECT 1; SELECT 2")


# --------------------------------------------------------------------------------------------- ADQL

def test_adql_top_and_circle(repo):
    from astropy.coordinates import SkyCoord
    ra, dec = repo["ra"], repo["dec"]
    q = ("SELECT TOP 5 objectId FROM Object WHERE CONTAINS(POINT('ICRS', coord_ra, coord_dec), "
         "CIRCLE('ICRS', 150.3, 1.7, 0.4)) = 1 ORDER BY objectId")
    got = _duck(repo, translate_adql(q))["objectId"].to_pylist()
    inside = np.flatnonzero(SkyCoord(ra, dec, unit="deg").separation(SkyCoord(150.3, 1.7, unit="deg")).deg <= 0.4)
    assert got == list(inside[:5] + 1)
    hand = _duck(repo, "SELECT objectId FROM cone('Object', 150.3, 1.7, 0.4) ORDER BY objectId LIMIT 5")
    assert got == hand["objectId"].to_pylist()
    outside = _duck(repo, translate_adql(
        "SELECT COUNT(*) AS n FROM Object WHERE 0 = CONTAINS(POINT('ICRS', coord_ra, coord_dec), "
        "CIRCLE('ICRS', 150.3, 1.7, 0.4))"))["n"][0].as_py()
    assert outside == len(ra) - len(inside)


def test_adql_distance(repo):
    from astropy.coordinates import SkyCoord
    ra, dec = repo["ra"], repo["dec"]
    q = ("SELECT objectId, DISTANCE(POINT('ICRS', coord_ra, coord_dec), POINT('ICRS', 151.0, 2.0)) AS d "
         "FROM Object ORDER BY objectId")
    got = _duck(repo, translate_adql(q))
    ref = SkyCoord(ra, dec, unit="deg").separation(SkyCoord(151.0, 2.0, unit="deg")).deg
    np.testing.assert_allclose(got["d"].to_numpy(), ref, rtol=1e-9)
    four = _duck(repo, translate_adql("SELECT DISTANCE(coord_ra, coord_dec, 151.0, 2.0) AS d FROM Object "
                                      "ORDER BY objectId"))
    np.testing.assert_allclose(four["d"].to_numpy(), ref, rtol=1e-9)


def test_adql_box(repo):
    ra, dec = repo["ra"], repo["dec"]
    q = ("SELECT objectId FROM Object WHERE CONTAINS(POINT('ICRS', coord_ra, coord_dec), "
         "BOX('ICRS', 150.5, 2.2, 1.0, 0.6)) = 1")
    got = sorted(_duck(repo, translate_adql(q))["objectId"].to_pylist())
    inside = (np.abs(ra - 150.5) <= 0.5) & (np.abs(dec - 2.2) <= 0.3)
    assert got == list(np.flatnonzero(inside) + 1) and got
    # a box across ra = 0 wraps
    wrap = _duck(repo, translate_adql(
        "SELECT count(*) AS n FROM (SELECT 359.9 AS ra, 0.0 AS dec UNION ALL SELECT 0.1, 0.0 UNION ALL "
        "SELECT 1.0, 0.0) t WHERE CONTAINS(POINT('ICRS', ra, dec), BOX('ICRS', 0.0, 0.0, 0.4, 0.4)) = 1"))
    assert wrap["n"][0].as_py() == 2


def test_adql_errors():
    with pytest.raises(ValueError, match="ICRS"):
        translate_adql("SELECT * FROM Object WHERE CONTAINS(POINT('GALACTIC', l, b), "
                       "CIRCLE('GALACTIC', 1, 2, 3)) = 1")
    with pytest.raises(ValueError, match="CIRCLE or BOX"):
        translate_adql("SELECT * FROM Object WHERE CONTAINS(POINT('ICRS', ra, dec), "
                       "POLYGON('ICRS', 1, 2, 3, 4, 5, 6)) = 1")
    with pytest.raises(ValueError, match="compared with 1 or 0"):
        translate_adql("SELECT * FROM Object WHERE CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 1, 2, 3))")
