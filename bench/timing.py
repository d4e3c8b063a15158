"""Timing shared by the bench/ scripts (run as `python bench/<script>.py`, so this imports as `timing`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_time(fn: Callable[[int], Any], repeats: int) -> tuple[float, float, list]:
    """(median wall s, median CPU s of this process over all threads, the results) of ``fn(i)`` for
    i in range(repeats); the run index lets a benchmark vary its input (e.g. cone centres) per run."""
    walls, cpus, results = [], [], []
    for i in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        results.append(fn(i))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), results
