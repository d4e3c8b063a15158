"""Where per-detector tasks run: in this process, a local process pool, or on Spark.

Each executor takes a stage's task and a list of units and yields (unit, TaskResult) as tasks
finish. A task that raises becomes a failed TaskResult carrying the reason, so one bad image never
stops the others. Tasks only stage files; committing them is the runner's job, in this process.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from skydp.etl.stage import TaskResult, Unit

Task = Callable[[Path, Unit], TaskResult]


def guarded(task: Task, root: Path, unit: Unit) -> TaskResult:
    """Run one task; an exception becomes a failed result whose error names the inputs and the reason."""
    start = time.perf_counter()
    try:
        return task(root, unit)
    except Exception as err:  # noqa: BLE001 - any failure of one unit is recorded, not raised
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        last = traceback.extract_tb(err.__traceback__)[-1]
        where = f"{Path(last.filename).name}:{last.lineno}"
        inputs = ", ".join(unit.inputs) or str(unit.data_id)
        return TaskResult(error=f"{inputs}: {reason} (at {where})", seconds=time.perf_counter() - start)


def run_serial(task: Task, root: Path, units: list[Unit]) -> Iterator[tuple[Unit, TaskResult]]:
    for unit in units:
        yield unit, guarded(task, root, unit)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def run_pool(task: Task, root: Path, units: list[Unit], jobs: int) -> Iterator[tuple[Unit, TaskResult]]:
    """A process pool of ``jobs`` workers; each worker holds one detector at a time, which bounds memory.

    Workers fork from a forkserver that has already imported the task's module (so a new worker
    costs no imports), run numpy's BLAS single-threaded (the pool is the parallelism), and are
    replaced every few tasks so memory fragmentation cannot accumulate over a long night.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([task.__module__])
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: "1" for name in THREAD_VARIABLES})  # inherited by the forkserver
    try:
        pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context, max_tasks_per_child=16)
        pool.submit(int).result()  # start the forkserver now, while the variables are set
    finally:
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
    with pool:
        futures = {pool.submit(guarded, task, root, unit): unit for unit in units}
        for future in cf.as_completed(futures):
            yield futures[future], future.result()


def run_spark(task: Task, root: Path, units: list[Unit], jobs: int) -> Iterator[tuple[Unit, TaskResult]]:
    """The same tasks as Spark jobs (one partition per unit); the repository must be on a shared filesystem.

    Uses the active SparkSession (spark-submit, a cluster) or starts a local one with ``jobs`` cores.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ValueError("--executor spark needs pyspark: pip install 'skydp[spark]'") from None

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = SparkSession.getActiveSession() or (
        SparkSession.builder.appName("skydp").master(f"local[{jobs}]")
        .config("spark.ui.enabled", "false").getOrCreate())
    rdd = spark.sparkContext.parallelize(list(enumerate(units)), numSlices=max(1, len(units)))
    for index, result in rdd.map(lambda item: (item[0], guarded(task, root, item[1]))).toLocalIterator():
        yield units[index], result


def execute(task: Task, root: Path, units: list[Unit], *, jobs: int = 1, executor: str = "local") -> Iterator[tuple[Unit, TaskResult]]:
    """Dispatch to the chosen executor."""
    if executor == "spark":
        return run_spark(task, root, units, jobs)
    if executor != "local":
        raise ValueError(f"executor must be 'local' or 'spark', got {executor!r}")
    if jobs > 1 and len(units) > 1:
        return run_pool(task, root, units, jobs)
    return run_serial(task, root, units)
