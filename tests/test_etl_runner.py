"""The ETL runner with stand-in stages: incremental, idempotent, failure recording, retries, the lock."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from skydp.etl.lock import RepositoryBusy, run_lock
from skydp.etl.repository import Repository
from skydp.etl.runner import RunOptions, run
from skydp.etl.stage import Output, Stage, TaskResult, Unit

CALLS: list[dict] = []


def _plan(repo: Repository) -> list[Unit]:
    units = []
    for p in sorted((repo.root / "inbox").glob("*.json")):
        doc = json.loads(p.read_text())
        units.append(Unit({"n": doc["n"]}, (f"inbox/{p.name}",), (str(doc["value"]),), day_obs=doc["day_obs"]))
    return units


def _task(root: Path, unit: Unit) -> TaskResult:
    CALLS.append(unit.data_id)
    doc = json.loads((root / unit.inputs[0]).read_text())
    if doc["value"] < 0:
        raise ValueError("negative value")
    staged = Repository(root).staging_path(".txt")
    staged.write_text(str(doc["value"] * 2))
    return TaskResult(outputs=[Output("doubled", unit.data_id, staged, f"out/{unit.data_id['n']}.txt")], rows={"T": 1})


STAGE = Stage("double", "1", "doubled", _plan, _task)


def _put(root: Path, n: int, value: int, day_obs: int = 20260101) -> None:
    (root / "inbox").mkdir(exist_ok=True)
    (root / "inbox" / f"{n}.json").write_text(json.dumps({"n": n, "value": value, "day_obs": day_obs}))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    CALLS.clear()
    return Repository.init(tmp_path / "repo").root


def test_second_run_does_nothing_and_new_input_runs_only_itself(repo: Path) -> None:
    _put(repo, 1, 10)
    _put(repo, 2, 20)
    first = run(repo, [STAGE])
    assert first.ok and sorted(c["n"] for c in CALLS) == [1, 2]
    outputs = {p.name: p.read_bytes() for p in (repo / "out").iterdir()}
    CALLS.clear()
    second = run(repo, [STAGE])
    assert CALLS == [] and second.stages[0].up_to_date == 2
    assert {p.name: p.read_bytes() for p in (repo / "out").iterdir()} == outputs
    _put(repo, 3, 30)
    run(repo, [STAGE])
    assert CALLS == [{"n": 3}]
    assert (repo / "out" / "3.txt").read_text() == "60"


def test_changed_input_reruns_its_unit(repo: Path) -> None:
    _put(repo, 1, 10)
    run(repo, [STAGE])
    _put(repo, 1, 11)
    CALLS.clear()
    run(repo, [STAGE])
    assert CALLS == [{"n": 1}] and (repo / "out" / "1.txt").read_text() == "22"


def test_failure_is_recorded_others_go_on_and_retry(repo: Path) -> None:
    _put(repo, 1, -5)
    _put(repo, 2, 20)
    report = run(repo, [STAGE])
    assert not report.ok and len(report.failures) == 1
    assert "inbox/1.json" in report.failures[0] and "negative value" in report.failures[0]
    with Repository(repo) as r:
        failed = r.registry.find("doubled", status="failed")
    assert [d.data_id for d in failed] == [{"n": 1}] and "negative value" in failed[0].error
    assert (repo / "out" / "2.txt").read_text() == "40"
    CALLS.clear()
    run(repo, [STAGE])
    assert CALLS == []  # a recorded failure is not retried unless asked
    run(repo, [STAGE], RunOptions(retry_failed=True))
    assert CALLS == [{"n": 1}]


def test_since_limits_the_run_to_new_nights(repo: Path) -> None:
    _put(repo, 1, 10, day_obs=20260101)
    _put(repo, 2, 20, day_obs=20260105)
    run(repo, [STAGE], RunOptions(since=20260103))
    assert CALLS == [{"n": 2}]


def test_process_pool_gives_the_same_outputs(repo: Path, tmp_path: Path) -> None:
    for n in range(4):
        _put(repo, n, n + 1)
    report = run(repo, [STAGE], RunOptions(jobs=2))
    assert report.ok and report.stages[0].executed == 4
    assert sorted((p.name, p.read_text()) for p in (repo / "out").iterdir()) == [(f"{n}.txt", str(2 * (n + 1))) for n in range(4)]


def _hold_lock(root: str, ready, release) -> None:
    with run_lock(Path(root)):
        ready.set()
        release.wait(30)


@contextmanager
def lock_held_elsewhere(root: Path) -> Iterator[None]:
    """Another process holds the repository's run lock for the duration of the block."""
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(root), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        yield
    finally:
        release.set()
        holder.join(30)


def test_second_runner_is_refused_while_one_is_active(repo: Path) -> None:
    with lock_held_elsewhere(repo):
        with pytest.raises(RepositoryBusy, match="another skydp run is active"):
            run(repo, [STAGE])
    assert run(repo, [STAGE]).ok


def test_cli_second_run_exits_3_and_touches_nothing(repo: Path, capsys) -> None:
    from skydp.cli import main
    from test_ingest import snapshot

    with lock_held_elsewhere(repo):
        before = snapshot(repo)
        assert main(["run", str(repo)]) == 3
        assert snapshot(repo) == before
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another skydp run is active (pid" in err[0]
