"""The inner pass of an iterative sigma clip, shared by the compiled local-sky and mesh-background
kernels: one sweep over a buffer of values, summing those inside the current limits."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, inline="always")
def sums_within(values: np.ndarray, count: int, shift: float, lo: float, hi: float) -> tuple[float, float, int]:
    """(sum, sum of squares, number) of (v - shift) over values[:count] with lo <= v <= hi; the
    sums are taken about ``shift``, a sample value, so that they do not cancel when |mean| >> std."""
    total = sq = 0.0
    n = 0
    for q in range(count):
        v = values[q]
        if lo <= v <= hi:
            d = v - shift
            total += d
            sq += d * d
            n += 1
    return total, sq, n
