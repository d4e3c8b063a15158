"""ETL orchestration benchmark: overhead of `skydp run` beyond the stage work, and the speed-up of
--jobs 2 on per-detector work.

    python bench/bench_etl.py [--preset demo] [--repeat 3]

Simulates the preset once, then for each repeat runs the whole ETL on a fresh repository with
--jobs 1 and with --jobs 2. Overhead = (run wall time - time inside stage tasks) / time inside
tasks, on the --jobs 1 runs. Speed-up = single-visit stage wall time, jobs 1 / jobs 2. Medians.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from skydp.etl.ingest import ingest
from skydp.etl.pipeline import STAGES
from skydp.etl.repository import Repository
from skydp.etl.runner import RunOptions, run
from skydp.sim import simulate


def one_run(images: list[Path], workdir: Path, jobs: int) -> tuple[float, float, float]:
    """(whole run wall s, seconds inside tasks, single-visit stage wall s) on a fresh repository."""
    root = workdir / f"repo-j{jobs}"
    shutil.rmtree(root, ignore_errors=True)
    with Repository.init(root) as repo:
        ingest(repo, images, link=True)
    start = time.perf_counter()
    report = run(root, STAGES, RunOptions(jobs=jobs, progress=False))
    wall = time.perf_counter() - start
    assert report.ok, report.failures
    inside = sum(s.task_seconds for s in report.stages)
    single = next(s.seconds for s in report.stages if s.name == "single_visit")
    return wall, inside, single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = simulate(work / "sim", preset=args.preset, seed=1, jobs=2, progress=False).images
        rows = {1: [], 2: []}
        for _ in range(args.repeat):
            for jobs in (1, 2):
                rows[jobs].append(one_run(images, work, jobs))
    wall1 = statistics.median(r[0] for r in rows[1])
    inside1 = statistics.median(r[1] for r in rows[1])
    single1 = statistics.median(r[2] for r in rows[1])
    single2 = statistics.median(r[2] for r in rows[2])
    overhead = statistics.median((r[0] - r[1]) / r[1] for r in rows[1])
    print(f"preset {args.preset}: {len(images)} detector images, {args.repeat} repeats, medians")
    print(f"{'quantity':<44} {'value':>10}  target")
    print(f"{'run wall time, --jobs 1 (s)':<44} {wall1:>10.1f}")
    print(f"{'time inside stage tasks, --jobs 1 (s)':<44} {inside1:>10.1f}")
    print(f"{'orchestration overhead':<44} {100 * overhead:>9.1f}%  <= 10%")
    print(f"{'single-visit stage, --jobs 1 (s)':<44} {single1:>10.1f}")
    print(f"{'single-visit stage, --jobs 2 (s)':<44} {single2:>10.1f}")
    print(f"{'speed-up of --jobs 2':<44} {single1 / single2:>10.2f}  >= 1.6")


if __name__ == "__main__":
    main()
