"""`skydp run --executor spark` runs the same per-detector tasks on (local) Spark and gives the
same tables as the local executor."""

from __future__ import annotations

from pathlib import Path

import pytest

from skydp.cli import main
from skydp.etl.pipeline import STAGES
from skydp.etl.runner import RunOptions, run
from skydp.sim import simulate
from table_compare import assert_tables_equal, published_tables


@pytest.mark.slow
def test_spark_executor_gives_the_local_tables(tmp_path: Path) -> None:
    sim = simulate(tmp_path / "sim", preset="tiny", seed=7, progress=False)
    roots = {}
    for executor in ("local", "spark"):
        root = roots[executor] = tmp_path / executor
        assert main(["init", str(root)]) == 0
        assert main(["ingest", str(root), *map(str, sim.images[:3])]) == 0
        report = run(root, STAGES, RunOptions(executor=executor, jobs=2))
        assert report.ok, report.failures
        assert report.stages[0].executed == 3
    local, spark = published_tables(roots["local"]), published_tables(roots["spark"])
    for name in local:
        assert_tables_equal(spark[name], local[name], name)
