"""The whole `skydp run` chain on the tiny simulated survey: every table is filled and the tables
agree with each other (keys, counts, images) and with the simulator's truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skydp.alerts import read_alerts
from skydp.cli import main
from skydp.etl.repository import Repository
from skydp.sim import simulate
from skydp.store import Catalog


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("chain")
    sim = simulate(base / "sim", preset="tiny", seed=11, progress=False)
    root = base / "repo"
    assert main(["init", str(root)]) == 0
    assert main(["ingest", str(root), *map(str, sim.images)]) == 0
    assert main(["run", str(root), "--quiet"]) == 0
    return root


def _count(catalog: Catalog, query: str) -> int:
    return int(catalog.sql(query).row(0)[0])


def test_every_table_is_filled(repo: Path) -> None:
    with Catalog(repo) as catalog:
        for table in ("Source", "Object", "ForcedSource", "DiaSource", "DiaObject", "ForcedSourceOnDiaObject",
                      "Visit", "CcdVisit", "ImageMetadata"):
            assert _count(catalog, f'SELECT count(*) FROM "{table}"') > 0, table


def test_keys_hold_across_tables(repo: Path) -> None:
    with Catalog(repo) as catalog:
        assert _count(catalog, "SELECT count(*) - count(DISTINCT objectId) FROM Object") == 0
        assert _count(catalog, "SELECT count(*) FROM ForcedSource f ANTI JOIN Object o USING (objectId)") == 0
        assert _count(catalog, "SELECT count(*) FROM DiaSource s ANTI JOIN DiaObject o USING (diaObjectId)") == 0
        assert _count(catalog, """SELECT count(*) FROM DiaObject o JOIN
                                  (SELECT diaObjectId, count(*) AS n FROM DiaSource GROUP BY ALL) s USING (diaObjectId)
                                  WHERE o.nDiaSources <> s.n""") == 0
        assert _count(catalog, "SELECT count(*) FROM ForcedSourceOnDiaObject f ANTI JOIN DiaObject USING (diaObjectId)") == 0
        assert _count(catalog, "SELECT count(*) FROM Source s ANTI JOIN Object o USING (objectId) "
                               "WHERE s.objectId IS NOT NULL") == 0
        # forced photometry lands on the visits that cover each object, with that visit's band
        assert _count(catalog, "SELECT count(*) FROM ForcedSource f ANTI JOIN CcdVisit c "
                               "ON c.visitId = f.visit AND c.detector = f.detector AND c.band = f.band") == 0


def test_bright_sources_are_matched_to_objects(repo: Path) -> None:
    with Catalog(repo) as catalog:
        matched = catalog.sql("""SELECT avg(CASE WHEN objectId IS NOT NULL THEN 1 ELSE 0 END) AS f FROM Source
                                 WHERE NOT sky_source AND psfFlux / psfFluxErr > 20 AND parentSourceId = 0""")["f"][0]
    assert matched > 0.9


def test_forced_photometry_of_objects_agrees_with_the_coadd(repo: Path) -> None:
    """Bright point sources: the median over visits of forced psfFlux matches the coadd psfFlux."""
    with Catalog(repo) as catalog:
        rows = catalog.sql("""SELECT o.objectId, f.band,
                                     median(f.psfFlux) AS visit_flux,
                                     any_value(CASE f.band WHEN 'g' THEN o.g_psfFlux ELSE o.r_psfFlux END) AS coadd_flux
                              FROM ForcedSource f JOIN Object o USING (objectId)
                              WHERE o.detect_isPrimary AND o.refExtendedness = 0
                                    AND NOT f.psfFlux_flag
                              GROUP BY ALL HAVING count(*) >= 2""")
    ratio = (rows["visit_flux"] / rows["coadd_flux"]).to_numpy()
    bright = rows["coadd_flux"].to_numpy() > 5e4
    assert bright.sum() >= 5
    assert abs(np.median(ratio[bright]) - 1) < 0.02


def test_images_are_listed_and_exist(repo: Path) -> None:
    with Catalog(repo) as catalog:
        images = catalog.sql("SELECT dataset_type, path FROM ImageMetadata")
    kinds = set(images["dataset_type"].to_list())
    assert kinds == {"visit_image", "deep_coadd", "template_coadd", "difference_image"}
    for path in images["path"].to_list():
        assert (repo / path).is_file(), path


def test_one_alert_per_dia_source(repo: Path) -> None:
    with Repository(repo) as r:
        files = r.registry.find("alert_packets", status="ok")
    alerts = [a for d in files for a in read_alerts(repo / d.path)]
    with Catalog(repo) as catalog:
        n_dia = _count(catalog, "SELECT count(*) FROM DiaSource")
        visits_with_alerts = set(catalog.sql("SELECT DISTINCT visit FROM DiaSource")["visit"].to_list())
    assert len(alerts) == n_dia
    assert {a["diaSource"]["visit"] for a in alerts} == visits_with_alerts
    for alert in alerts[:20]:
        assert alert["diaObject"]["diaObjectId"] == alert["diaSource"]["diaObjectId"]
        assert alert["cutoutDifference"] and alert["cutoutScience"] and alert["cutoutTemplate"]
