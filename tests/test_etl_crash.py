"""Crash safety: `skydp run` killed with SIGKILL at every stage boundary, between placing files
and registering them, and in the middle of a Parquet write; the rerun must give exactly the
tables of an uninterrupted run (no lost rows, no duplicates)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from skydp.cli import main
from skydp.sim import simulate
from table_compare import assert_tables_equal, published_tables

KILL_POINTS = [
    "single_visit:start", "single_visit:mid-parquet", "single_visit:before-commit", "single_visit:placed",
    "single_visit:after-commit", "publish:start", "publish:hats-written", "publish:placed",
    "publish:after-commit", "database:start", "database:snapshot", "database:placed",
    "database:after-commit",
]


def _skydp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    code = "import sys; from skydp.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=900)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    """A repository with two ingested images of the tiny survey."""
    base = tmp_path_factory.mktemp("crash")
    sim = simulate(base / "sim", preset="tiny", seed=5, progress=False)
    root = base / "template"
    assert main(["init", str(root)]) == 0
    assert main(["ingest", str(root), *map(str, sim.images[:2])]) == 0
    return root


@pytest.fixture(scope="module")
def reference(ingested: Path, tmp_path_factory) -> dict[str, pa.Table]:
    root = tmp_path_factory.mktemp("ref") / "repo"
    shutil.copytree(ingested, root)
    assert _skydp("run", str(root), "--quiet").returncode == 0
    return published_tables(root)


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_run_then_rerun_equals_uninterrupted(point: str, ingested: Path, reference, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(ingested, root)
    killed = _skydp("run", str(root), "--quiet", env={"SKYDP_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    rerun = _skydp("run", str(root), "--quiet")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    got = published_tables(root)
    for name, table in reference.items():
        assert_tables_equal(got[name], table, name)
    assert not any((root / "tmp").iterdir())
