"""The single-visit stage inside `skydp run` on the tiny simulated survey."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from skydp import tables
from skydp.cli import main
from skydp.etl.ingest import INPUT_TYPE
from skydp.etl.repository import Repository
from skydp.etl.single_visit import SOURCE_TYPE
from skydp.etl.visit_tables import ccd_visit_table, visit_table
from skydp.sim import simulate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return simulate(tmp_path_factory.mktemp("sim"), preset="tiny", seed=3, progress=False).outdir


def _repo(tmp_path: Path, images: list[Path]) -> Path:
    root = tmp_path / "repo"
    assert main(["init", str(root)]) == 0
    assert main(["ingest", str(root), *map(str, images)]) == 0
    return root


def test_run_produces_sources_and_ccd_visits(tiny: Path, tmp_path: Path, capsys) -> None:
    images = sorted((tiny / "images").glob("*.fits"))
    root = _repo(tmp_path, images)
    assert main(["run", str(root), "--quiet"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("skydp run") and "ok" in line
    with Repository(root) as repo:
        catalogs = repo.registry.find(SOURCE_TYPE, status="ok")
        inputs = repo.registry.find(INPUT_TYPE)
    assert len(catalogs) == len(images)
    schema = tables.arrow_schema("Source")
    for ds in catalogs:
        part = pq.read_table(root / ds.path)
        assert part.schema.equals(schema, check_metadata=False)
        assert ds.meta["rows"] == part.num_rows > 0
        assert set(part.column("visit").to_pylist()) == {ds.data_id["visit"]}
    summaries = [ds.meta["ccd_visit"] for ds in catalogs]
    ccd = ccd_visit_table(summaries)
    assert ccd.num_rows == len(images)
    assert all(s > 0 for s in ccd.column("seeing").to_pylist())
    visits = visit_table(summaries, {d.data_id["visit"]: d.meta for d in inputs})
    assert visits.num_rows == len({d.data_id["visit"] for d in inputs})
    # a second run has nothing to do
    assert main(["run", str(root), "--quiet"]) == 0
    assert "0 task(s) ran" in capsys.readouterr().out


def test_a_bad_image_is_recorded_and_the_others_go_on(tiny: Path, tmp_path: Path, capsys) -> None:
    images = sorted((tiny / "images").glob("*.fits"))[:2]
    root = _repo(tmp_path, images)
    with Repository(root) as repo:
        victim = root / repo.registry.find(INPUT_TYPE)[0].path
    victim.write_bytes(victim.read_bytes()[:20000])  # the stored copy is damaged after ingest
    assert main(["run", str(root), "--quiet"]) == 1
    capsys.readouterr()
    assert main(["status", str(root)]) == 1
    out = capsys.readouterr().out
    assert "FAILED source_catalog" in out and victim.name in out
    with Repository(root) as repo:
        assert len(repo.registry.find(SOURCE_TYPE, status="ok")) == 1
    shutil.copyfile(images[0] if images[0].name.split("_")[1] in victim.name else images[1], victim)
    assert main(["run", str(root), "--retry-failed", "--quiet"]) == 0


def test_new_visit_runs_only_its_work_and_equals_a_run_from_scratch(tiny: Path, tmp_path: Path) -> None:
    from skydp.etl.pipeline import STAGES
    from skydp.etl.runner import run
    from table_compare import assert_tables_equal, published_tables

    images = sorted((tiny / "images").glob("*.fits"))[:3]
    incremental = _repo(tmp_path / "inc", images[:2])
    run(incremental, STAGES)
    assert main(["ingest", str(incremental), str(images[2])]) == 0
    report = run(incremental, STAGES)
    executed = {s.name: s.executed for s in report.stages}
    assert executed["single_visit"] == 1 and executed["publish"] == 1 and executed["database"] == 1
    assert sum(s.up_to_date for s in report.stages) > 0  # earlier work that the new image does not touch stays
    scratch = _repo(tmp_path / "scratch", images)
    run(scratch, STAGES)
    got, expected = published_tables(incremental), published_tables(scratch)
    for name in expected:
        assert_tables_equal(got[name], expected[name], name)


def test_a_reader_keeps_a_consistent_view_while_a_run_rewrites_the_catalogs(tiny: Path, tmp_path: Path) -> None:
    from skydp.etl.pipeline import STAGES
    from skydp.etl.runner import run
    from skydp.store import Catalog

    images = sorted((tiny / "images").glob("*.fits"))[:3]
    root = _repo(tmp_path, images[:2])
    run(root, STAGES)
    query = "SELECT count(*) AS n, count(DISTINCT visit) AS visits, sum(psfFlux) AS total FROM Source"
    with Catalog(root) as reader:
        before = reader.sql(query).row(0)
        assert main(["ingest", str(root), str(images[2])]) == 0
        run(root, STAGES)  # rewrites hats/, tables/ and catalog.duckdb under the open reader
        assert reader.sql(query).row(0) == before
        assert reader.sql("SELECT count(*) FROM Source JOIN CcdVisit ON visitId = visit").row(0)[0] == before[0]
    with Catalog(root) as fresh:
        after = fresh.sql(query).row(0)
    assert after[1] == before[1] + 1 and after[0] > before[0]
