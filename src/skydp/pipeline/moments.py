"""Adaptive (elliptical-Gaussian-weighted) second moments and GaussianFlux of many stamps.

Adaptive moments (Bernstein & Jarvis 2002; HSM / SdssShape): the weight is an elliptical Gaussian
of covariance C; the weighted moments M of the source are measured, and C is updated to
(M^-1 - C^-1)^-1, the source covariance a Gaussian source would need to give M under weight C.
At convergence C equals the covariance of a Gaussian source (ixx, iyy, ixy in px^2).
GaussianFlux (SdssShape fixed-moments flux): with W the converged weight of peak 1,
flux = 2 sum(W D), exact for a Gaussian source; err = 2 sqrt(sum(W^2 V)).
The centre is held at the given (sub-pixel) centroid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

MAX_ITER = 30
TOLERANCE = 1e-4  # relative change of the weight trace


@dataclass
class Moments:
    ixx: np.ndarray
    iyy: np.ndarray
    ixy: np.ndarray
    flag: np.ndarray
    gaussian_flux: np.ndarray
    gaussian_flux_err: np.ndarray


def adaptive_moments(data: np.ndarray, var: np.ndarray, good: np.ndarray, dx: np.ndarray, dy: np.ndarray,
                     sigma0: np.ndarray) -> Moments:
    """Moments of (N, S, S) stamps whose centre pixel S//2 is offset by (dx, dy) from the centroid.

    ``var`` is used only for the GaussianFlux error; ``good`` marks usable pixels;
    ``sigma0`` (N,) is the starting Gaussian sigma (px), e.g. the PSF's.
    """
    n = data.shape[0]
    out = np.full((6, n), np.nan)
    failed = np.ones(n, dtype=bool)
    if n:
        _adaptive_moments(np.ascontiguousarray(data, dtype=np.float64), np.ascontiguousarray(var, dtype=np.float64),
                          np.ascontiguousarray(good, dtype=bool), np.asarray(dx, dtype=np.float64) * np.ones(n),
                          np.asarray(dy, dtype=np.float64) * np.ones(n),
                          np.asarray(sigma0, dtype=np.float64) * np.ones(n), out, failed)
    return Moments(ixx=out[0], iyy=out[1], ixy=out[2], flag=failed, gaussian_flux=out[3], gaussian_flux_err=out[4])


@numba.njit(cache=True, nogil=True, error_model="numpy")  # x/0 gives inf/nan, handled by _valid
def _weight_stamp(c_xx: float, c_yy: float, c_xy: float, dx: float, dy: float, w: np.ndarray) -> None:
    """w[j, i] = exp(-q/2), q = (u, v) C^-1 (u, v)^T at pixel offsets u = i - S//2 - dx, v = j - S//2 - dy.

    Along a row the exponent is quadratic in u, so from the row's peak outwards each weight is
    the previous one times a ratio that itself changes by a constant factor: three exp calls per
    row instead of one per pixel (the weights decrease away from the peak, so underflow only
    ever reaches negligible weights).
    """
    s = w.shape[0]
    c = s // 2
    det = c_xx * c_yy - c_xy * c_xy
    a, b, e = c_yy / det, c_xx / det, -c_xy / det  # C^-1 = [[a, e], [e, b]]
    alpha = -0.5 * a
    step = math.exp(2.0 * alpha)
    for j in range(s):
        v = j - c - dy
        beta, gamma = -e * v, -0.5 * b * v * v
        peak = min(max(round(-beta / (2.0 * alpha) + c + dx), 0), s - 1)
        u = peak - c - dx
        w[j, peak] = math.exp(alpha * u * u + beta * u + gamma)
        ratio = math.exp(alpha * (2.0 * u + 1.0) + beta)
        for i in range(peak + 1, s):
            w[j, i] = w[j, i - 1] * ratio
            ratio *= step
        ratio = math.exp(alpha * (1.0 - 2.0 * u) - beta)
        for i in range(peak - 1, -1, -1):
            w[j, i] = w[j, i + 1] * ratio
            ratio *= step


@numba.njit(cache=True, nogil=True, error_model="numpy")  # x/0 gives inf/nan, handled by _valid
def _valid(xx: float, yy: float, xy: float, half: float) -> bool:
    return (math.isfinite(xx) and math.isfinite(yy) and math.isfinite(xy) and xx > 0 and yy > 0
            and xx * yy - xy * xy > 0 and xx < half * half and yy < half * half)


@numba.njit(cache=True, nogil=True, error_model="numpy")  # x/0 gives inf/nan, handled by _valid
def _inverse(xx: float, yy: float, xy: float) -> tuple[float, float, float]:
    det = xx * yy - xy * xy
    return yy / det, xx / det, -xy / det


@numba.njit(cache=True, nogil=True, error_model="numpy")  # x/0 gives inf/nan, handled by _valid
def _adaptive_moments(data: np.ndarray, var: np.ndarray, good: np.ndarray, dx: np.ndarray, dy: np.ndarray,
                      sigma0: np.ndarray, out: np.ndarray, failed: np.ndarray) -> None:
    """Per stamp: iterate C <- (M^-1 - C^-1)^-1 to convergence; out rows ixx, iyy, ixy, GaussianFlux
    and its error (NaN and failed = True when the iteration breaks down or does not converge).

    Compiled so that each source stops at its own convergence and its weights come from the
    exp-free recurrence of ``_weight_stamp``; vectorised numpy spent most of its time in exp.
    """
    n, s, _ = data.shape
    c = s // 2
    half = s / 2.0
    w = np.empty((s, s))
    for k in range(n):
        cxx = cyy = sigma0[k] ** 2
        cxy = 0.0
        converged = False
        for _ in range(MAX_ITER):
            _weight_stamp(cxx, cyy, cxy, dx[k], dy[k], w)
            norm = sxx = syy = sxy = 0.0
            for j in range(s):
                v = j - c - dy[k]
                for i in range(s):
                    if good[k, j, i]:
                        u = i - c - dx[k]
                        wd = w[j, i] * data[k, j, i]
                        norm += wd
                        sxx += wd * u * u
                        syy += wd * v * v
                        sxy += wd * u * v
            if not norm > 0:
                break
            mxx, myy, mxy = sxx / norm, syy / norm, sxy / norm
            # C <- (M^-1 - C^-1)^-1; where that is not a valid covariance (noise), the slower C <- 2M
            ax, ay, axy = _inverse(mxx, myy, mxy)
            bx, by, bxy = _inverse(cxx, cyy, cxy)
            nxx, nyy, nxy = _inverse(ax - bx, ay - by, axy - bxy)
            if not _valid(nxx, nyy, nxy, half):
                nxx, nyy, nxy = 2 * mxx, 2 * myy, 2 * mxy
            if not _valid(nxx, nyy, nxy, half):
                break
            change = abs(nxx + nyy - cxx - cyy) / (cxx + cyy)
            cxx, cyy, cxy = nxx, nyy, nxy
            if change < TOLERANCE:
                converged = True
                break
        if not converged:
            continue
        _weight_stamp(cxx, cyy, cxy, dx[k], dy[k], w)
        flux = noise = 0.0
        for j in range(s):
            for i in range(s):
                if good[k, j, i]:
                    flux += w[j, i] * data[k, j, i]
                    noise += w[j, i] * w[j, i] * var[k, j, i]
        failed[k] = False
        out[0, k], out[1, k], out[2, k] = cxx, cyy, cxy
        out[3, k], out[4, k] = 2.0 * flux, 2.0 * math.sqrt(noise)
