"""Aperture corrections (LSST MeasureApCorrTask): ratio of the reference flux to a model flux,
fitted over the detector as a 2-D Chebyshev series from bright stars, with clipping.

The fit is weighted by the ratios' errors and its order is lowered until every coefficient is
constrained by STARS_PER_COEFFICIENT stars: a noisy correction field would add the same
relative error to every flux it is applied to."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev

CLIP_SIGMA = 3.0
CLIP_ROUNDS = 3
STARS_PER_COEFFICIENT = 10


@dataclass
class ApertureCorrection:
    """Chebyshev field over the array frame; ``error`` is the standard error of the fitted level."""

    coeffs: np.ndarray | None  # (order+1, order+1) or None when no fit was possible
    shape: tuple[int, int]
    error: float
    n_stars: int

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
    coeffs = None
    for _ in range(CLIP_ROUNDS):
        n = int(ok.sum())
        order = max_order
        while order > 0 and (order + 1) ** 2 * STARS_PER_COEFFICIENT > n:
            order -= 1
        w = 1.0 / ratio_err[ok]
        design = chebyshev.chebvander2d(u[ok], v[ok], [order, order]) * w[:, None]
        sol = np.linalg.lstsq(design, ratio[ok] * w, rcond=None)[0]
        coeffs = sol.reshape(order + 1, order + 1)
        norm_resid = (ratio - chebyshev.chebval2d(u, v, coeffs)) / ratio_err
        scatter = 1.4826 * np.median(np.abs(norm_resid[ok]))
        new_ok = ok & (np.abs(norm_resid) <= CLIP_SIGMA * max(scatter, 1e-6))
        if new_ok.sum() < 3 or np.array_equal(new_ok, ok):
            break
        ok = new_ok
    # standard error of the weighted mean level, scaled by the normalised scatter of the stars
    n = int(ok.sum())
    norm_resid = (ratio[ok] - chebyshev.chebval2d(u[ok], v[ok], coeffs)) / ratio_err[ok]
    scatter = max(1.0, 1.4826 * np.median(np.abs(norm_resid)))
    error = float(scatter / np.sqrt(np.sum(1.0 / ratio_err[ok] ** 2)))
    return ApertureCorrection(coeffs, shape, error, n)


def _scaled(x, y, shape):
    ny, nx = shape
    return 2 * np.asarray(x, float) / max(nx - 1, 1) - 1, 2 * np.asarray(y, float) / max(ny - 1, 1) - 1
