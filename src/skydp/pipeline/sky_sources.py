"""Sky sources (LSST SkyObjectsTask): blank-sky positions measured like sources, for noise checks."""

from __future__ import annotations

import numpy as np

from skydp.pipeline.stamps import StampCutter

TRIALS_PER_SOURCE = 20


def place_sky_sources(cutter: StampCutter, avoid_plane: str, shape: tuple[int, int], n: int, size: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` integer array positions whose ``size`` x ``size`` box holds no avoided pixel
    (the boolean plane ``avoid_plane`` in ``cutter``, e.g. detected or bad) and which lie at least
    ``size`` px from each other and from the image border."""
    ny, nx = shape
    h = size // 2
    if n <= 0 or nx <= 2 * size or ny <= 2 * size:
        return np.zeros(0), np.zeros(0)
    tx = rng.integers(size, nx - size, n * TRIALS_PER_SOURCE)
    ty = rng.integers(size, ny - size, n * TRIALS_PER_SOURCE)
    clear = ~np.any(cutter.cut(avoid_plane, tx, ty, 2 * h + 1), axis=(1, 2))
    tx, ty = tx[clear], ty[clear]
    chosen: list[int] = []
    for i in range(tx.size):
        if len(chosen) == n:
            break
        if not chosen or np.min(np.maximum(np.abs(tx[chosen] - tx[i]), np.abs(ty[chosen] - ty[i]))) >= size:
            chosen.append(i)
    return tx[chosen].astype(np.float64), ty[chosen].astype(np.float64)
