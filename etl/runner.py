"""`skydp run`: every stage, in dependency order, for what is new.

For each stage the runner asks for its units, keeps those whose fingerprint the registry does not
hold yet (or that failed, with ``retry_failed``), runs them on the chosen executor and commits each
result as it arrives: staged files are moved into place, then one registry transaction records
them. A run killed at any moment therefore leaves only complete, registered outputs plus files the
next run overwrites; rerunning converges to the same tables as an uninterrupted run.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from skydp.checksums import sha256_of
from skydp.etl.executors import execute
from skydp.etl.faults import checkpoint
from skydp.etl.lock import run_lock
from skydp.etl.repository import Repository
from skydp.etl.stage import Stage, TaskResult, Unit
from skydp.progress import ProgressBar


@dataclass
class RunOptions:
    jobs: int = 1
    executor: str = "local"
    retry_failed: bool = False
    since: int | None = None  # only units of nights >= this DAY_OBS
    progress: bool | None = None  # None: a bar when stderr is a terminal


@dataclass
class StageReport:
    name: str
    executed: int = 0
    failed: int = 0
    up_to_date: int = 0
    seconds: float = 0.0
    task_seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)


@dataclass
class RunReport:
    run_id: int
    log_path: Path
    stages: list[StageReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def table(self) -> str:
        """The final summary: units, failures, rows added and time per stage."""
        lines = [f"{'stage':<16} {'ran':>5} {'failed':>6} {'current':>7} {'seconds':>8}  rows added"]
        for s in self.stages:
            rows = ", ".join(f"{t} {n}" for t, n in sorted(s.rows.items())) or "-"
            lines.append(f"{s.name:<16} {s.executed:>5} {s.failed:>6} {s.up_to_date:>7} {s.seconds:>8.1f}  {rows}")
        return "\n".join(lines)

    def one_line(self) -> str:
        ran = sum(s.executed for s in self.stages)
        rows = sum(sum(s.rows.values()) for s in self.stages)
        status = "ok" if self.ok else f"{len(self.failures)} failed"
        return f"skydp run {self.run_id}: {status}; {ran} task(s) ran, {rows} rows added; log {self.log_path}"


def pending(repo: Repository, stage: Stage, units: list[Unit], retry_failed: bool) -> list[Unit]:
    """Units whose output is missing, stale (inputs changed) or failed and retried."""
    todo = []
    for unit in units:
        row = repo.registry.get(stage.output_type, unit.data_id)
        fresh = row is not None and row.meta.get("fingerprint") == unit.fingerprint(stage.version)
        if not fresh or (row.status == "failed" and retry_failed):
            todo.append(unit)
    return todo


def commit(repo: Repository, stage: Stage, unit: Unit, result: TaskResult, run_id: int) -> None:
    """Move staged outputs into place, then register them (or the failure) in one transaction."""
    fingerprint = unit.fingerprint(stage.version)
    registry = repo.registry
    if result.error is not None:
        with registry.transaction() as conn:
            registry.put(conn, stage.output_type, unit.data_id, run_id=run_id, status="failed",
                         error=result.error, meta={"fingerprint": fingerprint})
        return
    placed = [(out, repo.place(out.staged, out.relative)) for out in result.outputs]
    checkpoint(f"{stage.name}:placed")
    with registry.transaction() as conn:
        if not any(out.dataset_type == stage.output_type for out in result.outputs):
            # a stage whose product is not one file (a catalog rebuilt in place) leaves a marker row
            registry.put(conn, stage.output_type, unit.data_id, sha256=fingerprint, run_id=run_id,
                         meta={"fingerprint": fingerprint})
        for out, path in placed:
            meta = dict(out.meta)
            if out.dataset_type == stage.output_type:
                meta["fingerprint"] = fingerprint
            registry.put(conn, out.dataset_type, out.data_id, path=out.relative, sha256=sha256_of(path),
                         run_id=run_id, meta=meta)


def _logger(log_path: Path) -> logging.Logger:
    logger = logging.getLogger(f"skydp.run.{log_path.stem}")
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


def run(root: Path, stages: list[Stage], options: RunOptions | None = None, command: str = "skydp run") -> RunReport:
    """Run ``stages`` in order on the repository at ``root`` under its run lock."""
    options = options or RunOptions()
    with run_lock(root), Repository(root) as repo:
        repo.clear_staging()
        now = datetime.datetime.now(datetime.timezone.utc)
        run_id = repo.registry.start_run(command, now.isoformat())
        log_path = repo.path(f"logs/run-{run_id:05d}-{now:%Y%m%dT%H%M%S}.log")
        logger = _logger(log_path)
        report = RunReport(run_id, log_path)
        logger.info("run %d started: %s", run_id, command)
        for stage in stages:
            stage_report = StageReport(stage.name)
            start = time.perf_counter()
            units = stage.plan(repo)
            repo.registry.forget_unplanned((stage.output_type, *stage.other_outputs), [u.data_id for u in units])
            if options.since is not None:
                units = [u for u in units if u.day_obs is None or u.day_obs >= options.since]
            todo = pending(repo, stage, units, options.retry_failed)
            stage_report.up_to_date = len(units) - len(todo)
            logger.info("stage %s: %d unit(s), %d to run", stage.name, len(units), len(todo))
            if todo:
                jobs = options.jobs if stage.per_detector else 1
                executor = options.executor if stage.per_detector else "local"
                checkpoint(f"{stage.name}:start")
                with ProgressBar(len(todo), stage.name, options.progress) as bar:
                    for unit, result in execute(stage.task, repo.root, todo, jobs=jobs, executor=executor):
                        checkpoint(f"{stage.name}:before-commit")
                        commit(repo, stage, unit, result, run_id)
                        checkpoint(f"{stage.name}:after-commit")
                        stage_report.executed += 1
                        stage_report.task_seconds += result.seconds
                        if result.error is not None:
                            stage_report.failed += 1
                            report.failures.append(f"{stage.name} {unit.data_id}: {result.error}")
                            logger.error("%s %s failed: %s", stage.name, unit.data_id, result.error)
                        else:
                            for table, n in result.rows.items():
                                stage_report.rows[table] = stage_report.rows.get(table, 0) + n
                            logger.info("%s %s done in %.2f s", stage.name, unit.data_id, result.seconds)
                        bar.update()
            stage_report.seconds = time.perf_counter() - start
            report.stages.append(stage_report)
        status = "ok" if report.ok else "failed"
        repo.registry.finish_run(run_id, datetime.datetime.now(datetime.timezone.utc).isoformat(), status)
        logger.info("run %d finished: %s\n%s", run_id, status, report.table())
        for handler in list(logger.handlers):
            handler.close()
            logger.removeHandler(handler)
        return report
