"""Detector effects applied to an image in electrons: cosmic rays, bad columns, bleeding saturation
and the vignetted NO_DATA corner.

Constants: 10 um pixels, full well 1e5 e-, read noise 6 e- (LSST-like). Cosmic rays follow the muon
geometry of a 100 um thick sensor: zenith angle with cos(theta) = U^(1/4) (flux ~ cos^2 theta on a
horizontal plane), track length 10 tan(theta) px (capped at 300 px), ~80 e-/um of path with gamma
fluctuations along the track; 30 % are compact low-energy hits (1-4 px, 500-3000 e-). They are
added to the pixels and not masked; their per-pixel electrons are returned as truth.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PIXEL_SIZE_CM = 1.0e-3
FULL_WELL = 1.0e5  # e-
READ_NOISE = 6.0  # e-
SENSOR_THICKNESS_PX = 10.0  # 100 um in 10 um pixels
NO_DATA_FRACTION = 0.06  # legs of the vignetted corner triangle, as a fraction of the detector width


def cosmic_rays(rng: np.random.Generator, shape: tuple[int, int], rate: float, exptime: float) -> np.ndarray:
    """Electrons deposited by cosmic rays, array of ``shape`` (ny, nx)."""
    ny, nx = shape
    out = np.zeros(shape)
    n = rng.poisson(rate * nx * ny * PIXEL_SIZE_CM**2 * exptime)
    for _ in range(n):
        x0, y0 = rng.uniform(0, nx), rng.uniform(0, ny)
        if rng.uniform() < 0.3:  # compact hit
            npix = rng.integers(1, 5)
            xs = np.clip(np.floor(x0 + rng.integers(-1, 2, npix)), 0, nx - 1).astype(int)
            ys = np.clip(np.floor(y0 + rng.integers(-1, 2, npix)), 0, ny - 1).astype(int)
            np.add.at(out, (ys, xs), rng.uniform(500.0, 3000.0) / npix)
            continue
        cos_theta = rng.uniform() ** 0.25
        length = min(SENSOR_THICKNESS_PX * np.sqrt(1.0 - cos_theta**2) / cos_theta, 300.0)
        phi = rng.uniform(0.0, 2.0 * np.pi)
        nsamp = int(np.ceil(length * 10.0)) + 1
        t = np.linspace(-0.5, 0.5, nsamp) * length
        xs = np.floor(x0 + t * np.cos(phi) + 0.5).astype(int)
        ys = np.floor(y0 + t * np.sin(phi) + 0.5).astype(int)
        keep = (xs >= 0) & (xs < nx) & (ys >= 0) & (ys < ny)
        total = 8000.0 / cos_theta  # 80 e-/um over the path through 100 um
        deposit = total / nsamp * rng.gamma(2.0, 0.5, nsamp)
        np.add.at(out, (ys[keep], xs[keep]), deposit[keep])
    return out


def bad_columns(rng: np.random.Generator, shape: tuple[int, int]) -> list[tuple[int, int, bool]]:
    """1-3 defective columns as (column, first bad row, hot) — a property of the detector, not the visit.

    A column is bad from its first bad row to the top (a charge trap blocks the transfer below it).
    Hot columns get 3000-20000 e- of garbage per pixel, dead ones read 0 e-.
    """
    ny, nx = shape
    n = rng.integers(1, 4)
    cols = rng.choice(np.arange(8, nx - 8), n, replace=False)
    return [(int(c), int(rng.integers(0, ny // 2)), bool(rng.uniform() < 0.5)) for c in cols]


def apply_bad_columns(rng: np.random.Generator, counts: np.ndarray, columns: list[tuple[int, int, bool]]) -> np.ndarray:
    """Overwrite the bad columns in ``counts`` (electrons) in place; returns the BAD mask."""
    bad = np.zeros(counts.shape, bool)
    for col, row, hot in columns:
        n = counts.shape[0] - row
        counts[row:, col] = rng.uniform(3000.0, 20000.0, n) if hot else 0.0
        bad[row:, col] = True
    return bad


def bleed_saturation(counts: np.ndarray, full_well: float = FULL_WELL) -> np.ndarray:
    """Clip at the full well, moving the excess charge up and down the column (in place).

    Charge is conserved until it leaves the detector. Returns the SAT mask (pixels at full well).
    """
    ny = counts.shape[0]
    for c in np.flatnonzero((counts > full_well).any(axis=0)):
        col = counts[:, c]
        labels, _ = ndimage.label(col > full_well)
        for run in ndimage.find_objects(labels):
            lo, hi = run[0].start, run[0].stop
            excess = float((col[lo:hi] - full_well).sum())
            col[lo:hi] = full_well
            up, down = hi, lo - 1
            while excess > 0.0 and (up < ny or down >= 0):
                for j in (up, down):
                    if 0 <= j < ny and excess > 0.0:
                        take = min(max(full_well - col[j], 0.0), excess)
                        col[j] += take
                        excess -= take
                up += 1
                down -= 1
    return counts >= full_well


def no_data_corner(shape: tuple[int, int], corner: tuple[int, int]) -> np.ndarray:
    """Triangular vignetted corner: True within legs of NO_DATA_FRACTION * width of ``corner``.

    ``corner`` is (0 or 1, 0 or 1) for (low/high x, low/high y).
    """
    ny, nx = shape
    leg = NO_DATA_FRACTION * nx
    y, x = np.ogrid[:ny, :nx]
    dx = x if corner[0] == 0 else nx - 1 - x
    dy = y if corner[1] == 0 else ny - 1 - y
    return dx + dy < leg
