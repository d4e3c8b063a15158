"""Cosmic rays: pixels sharper than the PSF allows, masked CR and interpolated over (INTRP).

For a PSF-shaped source centred anywhere within a pixel, the mean of the two neighbours along any
direction d is at least r_d = P(step_d) / P(0) times the central value (r_d from the PSF image).
A pixel is a cosmic-ray pixel when it is ``min_sigma`` above the background and, for some
direction, (I_c - k s_c) r_d exceeds the neighbour mean + k s_m, with s the noise and k the margin
(the test of LSST's findCosmicRays, cond3); pixels within 2 px of unusable (e.g. saturated)
pixels are not candidates. Hits are grown by one pixel and replaced by the mean of
the good pixels in the surrounding 5x5 box.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))  # (dy, dx): along x, along y, two diagonals
NEAR_UNUSABLE = 2  # px


def psf_sharpness_ratios(psf_image: np.ndarray) -> np.ndarray:
    """r_d = mean of the two neighbours / centre of a centred PSF image, for the 4 directions."""
    c = psf_image.shape[0] // 2
    p0 = psf_image[c, c]
    return np.array([0.5 * (psf_image[c + dy, c + dx] + psf_image[c - dy, c - dx]) / p0
                     for dy, dx in _DIRECTIONS])


def find_cosmic_rays(image: np.ndarray, variance: np.ndarray, unusable: np.ndarray, ratios: np.ndarray,
                     min_sigma: float, margin: float) -> np.ndarray:
    """Boolean map of cosmic-ray pixels (grown by one pixel) in a background-subtracted image."""
    ny, nx = image.shape
    flat_image, flat_var, flat_unusable = image.ravel(), variance.ravel(), unusable.ravel()
    # candidates: pixels min_sigma above the noise; a cheap cut at the smallest noise comes first
    positive_var = flat_var[flat_var > 0]
    floor = min_sigma * np.sqrt(positive_var.min()) if positive_var.size else 0.0
    idx = np.flatnonzero(flat_image > floor)
    centre = flat_image[idx].astype(np.float64)
    var_c = flat_var[idx].astype(np.float64)
    keep = (centre * centre > min_sigma**2 * var_c) & ~flat_unusable[idx]
    iy, ix = np.divmod(idx, nx)
    keep &= (iy > 0) & (iy < ny - 1) & (ix > 0) & (ix < nx - 1)
    if unusable.any():
        # the edges of saturated cores and bleed trails (and of other unusable pixels) are sharp but
        # not cosmic rays: no candidate within NEAR_UNUSABLE px of an unusable pixel
        near = ndimage.maximum_filter(unusable.view(np.uint8), size=2 * NEAR_UNUSABLE + 1, mode="nearest")
        keep &= near.ravel()[idx] == 0
    idx, iy, ix, centre, var_c = idx[keep], iy[keep], ix[keep], centre[keep], var_c[keep]
    if idx.size == 0:
        return np.zeros((ny, nx), dtype=bool)
    s_c = np.sqrt(var_c)
    hit = np.zeros(idx.size, dtype=bool)
    for (dy, dx), r in zip(_DIRECTIONS, ratios):
        a, b = idx + (dy * nx + dx), idx - (dy * nx + dx)
        usable = ~flat_unusable[a] & ~flat_unusable[b]
        mean = 0.5 * (flat_image[a].astype(np.float64) + flat_image[b])
        s_m = 0.5 * np.sqrt(flat_var[a].astype(np.float64) + flat_var[b])
        hit |= usable & ((centre - margin * s_c) * r > mean + margin * s_m)
    crs = np.zeros((ny, nx), dtype=bool)
    # grow the hits by one pixel (3x3), directly at the few hit positions
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            crs[np.clip(iy[hit] + dy, 0, ny - 1), np.clip(ix[hit] + dx, 0, nx - 1)] = True
    crs &= ~unusable
    return crs


def interpolate_over(image: np.ndarray, replace: np.ndarray, unusable: np.ndarray, box: int = 5) -> int:
    """Replace ``replace`` pixels (in place) by the mean of usable, non-replaced pixels in a box.

    Pixels without any good neighbour in the box are left unchanged. Returns the number replaced.
    """
    iy, ix = np.nonzero(replace)
    if iy.size == 0:
        return 0
    ny, nx = image.shape
    good = ~(replace | unusable)
    h = box // 2
    total = np.zeros(iy.size)
    count = np.zeros(iy.size)
    for dy in range(-h, h + 1):
        for dx in range(-h, h + 1):
            yy, xx = iy + dy, ix + dx
            inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
            yy, xx = np.clip(yy, 0, ny - 1), np.clip(xx, 0, nx - 1)
            use = inside & good[yy, xx]
            total += np.where(use, image[yy, xx], 0.0)
            count += use
    fill = count > 0
    image[iy[fill], ix[fill]] = (total[fill] / count[fill]).astype(image.dtype)
    return int(fill.sum())
