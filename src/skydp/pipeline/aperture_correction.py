"""Aperture corrections (LSST MeasureApCorrTask): ratio of the reference flux to a model flux,
fitted over the detector as a 2-D Chebyshev series from bright stars, with clipping.

The fit is weighted by the ratios' errors; its order (up to ``max_order``, with every coefficient
constrained by STARS_PER_COEFFICIENT stars) is the one the Bayesian information criterion prefers:
a noisy correction field would add the same relative error to every flux it is applied to. The ratios scatter more than their errors say
(the reference aperture holds light of faint neighbours and its sky is a model; the PSF model is
not exact), so each star's error gets an intrinsic scatter, found from the data, added in
quadrature: without it the brightest few stars, a few of them contaminated, set the correction
for the whole detector (with the true PSF, 1k x 1k simulated detectors got corrections of
0.98-1.03 instead of 1). The first fit is a median, so that such outliers are clipped before
they can pull a weighted fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev
from scipy.optimize import brentq

CLIP_SIGMA = 3.0
CLIP_ROUNDS = 5
STARS_PER_COEFFICIENT = 10


@dataclass
class ApertureCorrection:
    """Chebyshev field over the array frame; ``error`` is the standard error of the fitted level."""

    coeffs: np.ndarray | None  # (order+1, order+1) or None when no fit was possible
    shape: tuple[int, int]
    error: float
    n_stars: int
    scatter: float = 0.0  # intrinsic scatter of the stars' ratios beyond their errors

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.coeffs is None:
            return np.ones(np.shape(x))
        u, v = _scaled(x, y, self.shape)
        return chebyshev.chebval2d(u, v, self.coeffs)


def fit_aperture_correction(x: np.ndarray, y: np.ndarray, reference: np.ndarray, reference_err: np.ndarray,
                            model: np.ndarray, model_err: np.ndarray, shape: tuple[int, int],
                            max_order: int) -> ApertureCorrection:
    """Fit reference/model over the detector at star positions (array frame)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = reference / model
        ratio_err = np.abs(ratio) * np.hypot(reference_err / reference, model_err / model)
    ok = np.isfinite(ratio) & (ratio > 0) & np.isfinite(ratio_err) & (ratio_err > 0)
    if ok.sum() < 3:
        return ApertureCorrection(None, shape, np.nan, int(ok.sum()))
    u, v = _scaled(x, y, shape)
    fitted = np.full(ratio.shape, np.median(ratio[ok]))  # robust start: a constant, the median
    intrinsic = _intrinsic_scatter(ratio[ok] - fitted[ok], ratio_err[ok])
    coeffs = np.array([[fitted[0]]])
    for _ in range(CLIP_ROUNDS):
        total_err = np.hypot(ratio_err, intrinsic)
        new_ok = ok & (np.abs(ratio - fitted) <= CLIP_SIGMA * total_err)
        if new_ok.sum() < 3:
            break
        ok = new_ok
        coeffs = _best_fit(u[ok], v[ok], ratio[ok], total_err[ok], max_order)
        fitted = chebyshev.chebval2d(u, v, coeffs)
        new_intrinsic = _intrinsic_scatter(ratio[ok] - fitted[ok], ratio_err[ok])
        if np.isclose(new_intrinsic, intrinsic, rtol=1e-3, atol=1e-6) and np.array_equal(
                ok, ok & (np.abs(ratio - fitted) <= CLIP_SIGMA * np.hypot(ratio_err, new_intrinsic))):
            intrinsic = new_intrinsic
            break
        intrinsic = new_intrinsic
    # standard error of the weighted mean level, with the intrinsic scatter in every star's error
    error = float(1.0 / np.sqrt(np.sum(1.0 / (ratio_err[ok] ** 2 + intrinsic**2))))
    return ApertureCorrection(coeffs, shape, error, int(ok.sum()), float(intrinsic))


def _best_fit(u: np.ndarray, v: np.ndarray, ratio: np.ndarray, err: np.ndarray, max_order: int) -> np.ndarray:
    """Weighted Chebyshev fit of the order (<= max_order, with STARS_PER_COEFFICIENT stars per
    coefficient) that minimises the Bayesian information criterion chi^2 + k ln(n): a spatial term
    is kept only when the stars show it, not because there are enough stars to fit it."""
    n = len(ratio)
    best, best_bic = None, np.inf
    for order in range(max_order + 1):
        k = (order + 1) ** 2
        if order > 0 and k * STARS_PER_COEFFICIENT > n:
            break
        design = chebyshev.chebvander2d(u, v, [order, order]) / err[:, None]
        sol = np.linalg.lstsq(design, ratio / err, rcond=None)[0]
        bic = float(np.sum((design @ sol - ratio / err) ** 2)) + k * np.log(n)
        if bic < best_bic:
            best, best_bic = sol.reshape(order + 1, order + 1), bic
    return best


def _intrinsic_scatter(residual: np.ndarray, err: np.ndarray) -> float:
    """The scatter s >= 0 that, added in quadrature to ``err``, gives the normalised residuals a
    robust (MAD) standard deviation of 1."""

    def excess(s: float) -> float:
        z = residual / np.hypot(err, s)
        return 1.4826 * float(np.median(np.abs(z - np.median(z)))) - 1.0

    if excess(0.0) <= 0:
        return 0.0
    return float(brentq(excess, 0.0, 10 * (np.max(np.abs(residual)) + np.max(err)), xtol=1e-7))


def _scaled(x, y, shape):
    ny, nx = shape
    return 2 * np.asarray(x, float) / max(nx - 1, 1) - 1, 2 * np.asarray(y, float) / max(ny - 1, 1) - 1
