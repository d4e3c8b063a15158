"""Circular-aperture fluxes (sep, exact pixel overlap) and the LSST local background.

Other sources' footprints are excluded from each aperture through sep's segmentation-map
masking, so every source is measured on its own (deblended) pixels, like LSST's noise replacement.
"""

from __future__ import annotations

import numpy as np
import sep

from skydp.pipeline.stamps import StampCutter, round_half_up

CLIP_SIGMA = 3.0
CLIP_ITERATIONS = 3


def aperture_fluxes(image: np.ndarray, variance: np.ndarray, bad: np.ndarray, segmap: np.ndarray,
                    seg_id: np.ndarray, x: np.ndarray, y: np.ndarray,
                    radii: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fluxes, errors and flags (N, len(radii)) in circular apertures at array-frame (x, y).

    A flag is set when the aperture extends off the image or holds no usable pixel.
    ``seg_id`` > 0: pixels of other labels in ``segmap`` are ignored; 0: every labelled pixel is.
    """
    n = len(x)
    flux = np.full((n, len(radii)), np.nan)
    err = np.full((n, len(radii)), np.nan)
    flag = np.ones((n, len(radii)), dtype=bool)
    if n == 0:
        return flux, err, flag
    # sep with seg_id > 0 ignores pixels of every other label; for sky positions (label 0) a
    # label that is not in the map makes it ignore every labelled pixel.
    ids = np.where(seg_id > 0, seg_id, segmap.max() + 1).astype(np.int32)
    for j, r in enumerate(radii):
        f, e, fl = sep.sum_circle(image, x, y, float(r), var=variance, mask=bad, segmap=segmap,
                                  seg_id=ids, subpix=0)
        flux[:, j], err[:, j] = f, e
        flag[:, j] = ((fl & (sep.APER_TRUNC | sep.APER_ALLMASKED)) != 0) | ~np.isfinite(f)
    return flux, err, flag


def local_background(cutter: StampCutter, x: np.ndarray, y: np.ndarray,
                     inner: float, outer: float) -> tuple[np.ndarray, np.ndarray]:
    """LSST base_LocalBackground: 3x3-sigma-clipped mean and std of annulus pixels.

    The annulus (``inner``..``outer`` px around the pixel nearest the centroid) ignores pixels
    flagged bad (BAD, SAT, NO_DATA); as in LSST it is not deblended: clipping removes neighbours.
    """
    r_out = int(np.ceil(outer))
    size = 2 * r_out + 1
    grid = np.arange(size) - r_out
    rr = np.hypot(grid[None, :], grid[:, None])
    ring = (rr >= inner) & (rr <= outer)
    cx, cy = round_half_up(x), round_half_up(y)
    values = cutter.cut("image", cx, cy, size)[:, ring].astype(np.float64)
    ok = ~cutter.cut("bad", cx, cy, size)[:, ring]
    for iteration in range(CLIP_ITERATIONS + 1):
        count = ok.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(ok, values, 0.0).sum(axis=1) / count
            dev = np.where(ok, values - mean[:, None], 0.0)
            std = np.sqrt((dev * dev).sum(axis=1) / (count - 1))
            if iteration < CLIP_ITERATIONS:
                ok &= np.abs(values - mean[:, None]) <= CLIP_SIGMA * std[:, None]
    return mean, std
