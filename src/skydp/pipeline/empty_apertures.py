"""Empty-aperture noise: how much more aperture sums scatter on blank sky than the pixel variance says.

On a deep image, every aperture also holds light of sources too faint to detect, and the
background model errs from place to place; neither is in the variance plane. Measuring the same
aperture at many random blank positions (no detected, bad or no-data pixel inside) gives that
extra variance directly, the "empty aperture" method of deep-field photometry (e.g. Labbé et al.
2003, AJ 125, 1107). It is an additive, flux-independent term. LSST's aperture errors hold pixel
noise only; skydp adds this term to calibFluxErr (the ap*FluxErr columns stay pixel noise), so
that calibFlux errors describe its real scatter about the true flux.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.stats import sigma_clip
from scipy import stats

from skydp.pipeline.apertures import ApertureSummer
from skydp.pipeline.stamps import StampCutter

CLIP_SIGMA = 3.0
CLIP_ITERATIONS = 5
MIN_APERTURES = 100  # fewer blank apertures estimate the variance to worse than ~15%
TRIALS_PER_APERTURE = 4
# variance of a unit Gaussian truncated at +-CLIP_SIGMA: a clipped variance divided by it is unbiased
_CLIPPED_VARIANCE = 1 - 2 * CLIP_SIGMA * stats.norm.pdf(CLIP_SIGMA) / (2 * stats.norm.cdf(CLIP_SIGMA) - 1)


@dataclass
class EmptyApertureNoise:
    """Extra variance (image units squared) of an aperture sum beyond the pixel noise, and how many
    blank apertures measured it (``variance`` is 0 when there were too few)."""

    variance: float
    n_apertures: int
    ratio: float  # std of the blank sums / their pixel-noise error (NaN when too few)


def empty_aperture_noise(image: np.ndarray, variance: np.ndarray, avoid: np.ndarray, radius: float, n: int,
                         rng: np.random.Generator) -> EmptyApertureNoise:
    """Sum ``n`` apertures of ``radius`` px at random blank positions of ``image`` (no ``avoid``
    pixel, e.g. detected or unusable, within the aperture's bounding box) and compare their
    sigma-clipped scatter with the pixel-noise errors of the same sums (from ``variance``)."""
    ny, nx = image.shape
    h = math.ceil(radius)
    if n <= 0 or nx <= 2 * h + 2 or ny <= 2 * h + 2:
        return EmptyApertureNoise(0.0, 0, float("nan"))
    cutter = StampCutter(h)
    cutter.add("avoid", avoid, fill=True)
    tx = rng.integers(h, nx - h, n * TRIALS_PER_APERTURE)
    ty = rng.integers(h, ny - h, n * TRIALS_PER_APERTURE)
    clear = ~np.any(cutter.cut("avoid", tx, ty, 2 * h + 1), axis=(1, 2))
    tx, ty = tx[clear][:n].astype(np.float64), ty[clear][:n].astype(np.float64)
    # the boxes hold no avoided pixel, so no footprint needs excluding (and no label map building)
    summer = ApertureSummer(image, variance, np.zeros(image.shape, dtype=bool))
    flux, err, flag = summer.fluxes(tx, ty, (radius,))
    flux, err = flux[~flag[:, 0], 0], err[~flag[:, 0], 0]
    if flux.size < MIN_APERTURES:
        return EmptyApertureNoise(0.0, int(flux.size), float("nan"))
    keep = ~sigma_clip(flux, sigma=CLIP_SIGMA, maxiters=CLIP_ITERATIONS, cenfunc="mean", stdfunc="std").mask
    scatter = np.var(flux[keep]) / _CLIPPED_VARIANCE
    pixel = float(np.mean(err[keep] ** 2))
    return EmptyApertureNoise(max(scatter - pixel, 0.0), int(flux.size), float(np.sqrt(scatter / pixel)))
