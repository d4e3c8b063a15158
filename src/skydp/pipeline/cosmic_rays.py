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

import math

import numba
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
    positive_var = variance[variance > 0]
    # a cheap first cut at the smallest noise skips the full test on most pixels
    floor = min_sigma * np.sqrt(positive_var.min()) if positive_var.size else 0.0
    unusable = np.ascontiguousarray(unusable, dtype=bool)
    if unusable.any():
        # the edges of saturated cores and bleed trails (and of other unusable pixels) are sharp but
        # not cosmic rays: no candidate within NEAR_UNUSABLE px of an unusable pixel
        near = ndimage.maximum_filter(unusable.view(np.uint8), size=2 * NEAR_UNUSABLE + 1, mode="nearest") != 0
    else:
        near = unusable
    image = np.ascontiguousarray(image, dtype=np.float32)
    candidates = np.flatnonzero(image.ravel() > floor)
    crs = _sharp_pixels(image, np.ascontiguousarray(variance, dtype=np.float32), unusable, near, candidates,
                        np.asarray(ratios, dtype=np.float64), float(min_sigma), float(margin))
    crs &= ~unusable
    return crs


@numba.njit(cache=True, nogil=True)
def _sharp_pixels(image: np.ndarray, variance: np.ndarray, unusable: np.ndarray, near: np.ndarray,
                  candidates: np.ndarray, ratios: np.ndarray, min_sigma: float, margin: float) -> np.ndarray:
    """The CR test at the candidate pixels (flat indices), hits grown by one pixel (3x3).

    Compiled: the test runs inline per candidate; with numpy the gathers of the four directions
    cost several index arrays as long as the (many, in star cores) candidates.
    """
    ny, nx = image.shape
    crs = np.zeros((ny, nx), dtype=np.bool_)
    for p in candidates:
        j, i = divmod(p, nx)
        if j == 0 or j == ny - 1 or i == 0 or i == nx - 1 or unusable[j, i] or near[j, i]:
            continue
        centre = float(image[j, i])
        var_c = float(variance[j, i])
        if not centre * centre > min_sigma * min_sigma * var_c:
            continue
        s_c = math.sqrt(var_c)
        hit = False
        for d in range(4):
            dy, dx = _DIRECTIONS[d]
            if unusable[j + dy, i + dx] or unusable[j - dy, i - dx]:
                continue
            mean = 0.5 * (float(image[j + dy, i + dx]) + float(image[j - dy, i - dx]))
            s_m = 0.5 * math.sqrt(float(variance[j + dy, i + dx]) + float(variance[j - dy, i - dx]))
            if (centre - margin * s_c) * ratios[d] > mean + margin * s_m:
                hit = True
                break
        if hit:
            crs[j - 1:j + 2, i - 1:i + 2] = True
    return crs


def interpolate_over(image: np.ndarray, replace: np.ndarray, unusable: np.ndarray, box: int = 5) -> int:
    """Replace ``replace`` pixels (in place) by the mean of usable, non-replaced pixels in a box.

    Pixels without any good neighbour in the box are left unchanged. Returns the number replaced.
    """
    if image.shape != replace.shape or image.shape != unusable.shape:
        raise ValueError(f"interpolate_over: image {image.shape}, replace {replace.shape} and unusable "
                         f"{unusable.shape} must have one shape")
    # only good pixels are read, and replaced pixels are never good: the order of updates is free
    return _box_mean_fill(image, np.ascontiguousarray(replace, dtype=bool),
                          np.ascontiguousarray(unusable, dtype=bool), box // 2)


@numba.njit(cache=True, nogil=True)
def _box_mean_fill(image: np.ndarray, replace: np.ndarray, unusable: np.ndarray, half: int) -> int:
    """Compiled: a per-pixel loop over the few replaced pixels (numpy needed full-image index passes)."""
    ny, nx = image.shape
    n_filled = 0
    for j in range(ny):
        for i in range(nx):
            if not replace[j, i]:
                continue
            total, count = 0.0, 0
            for y in range(max(0, j - half), min(ny, j + half + 1)):
                for x in range(max(0, i - half), min(nx, i + half + 1)):
                    if not (replace[y, x] or unusable[y, x]):
                        total += image[y, x]
                        count += 1
            if count:
                image[j, i] = total / count
                n_filled += 1
    return n_filled
