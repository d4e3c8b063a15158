"""Adaptive (elliptical-Gaussian-weighted) second moments and GaussianFlux, vectorised over stamps.

Adaptive moments (Bernstein & Jarvis 2002; HSM / SdssShape): the weight is an elliptical Gaussian
of covariance C; the weighted moments M of the source are measured, and C is updated to
(M^-1 - C^-1)^-1, the source covariance a Gaussian source would need to give M under weight C.
At convergence C equals the covariance of a Gaussian source (ixx, iyy, ixy in px^2).
GaussianFlux (SdssShape fixed-moments flux): with W the converged weight of peak 1,
flux = 2 sum(W D), exact for a Gaussian source; err = 2 sqrt(sum(W^2 V)).
The centre is held at the given (sub-pixel) centroid.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    n, s, _ = data.shape
    grid = np.arange(s, dtype=np.float64) - s // 2
    u = grid[None, None, :] - dx[:, None, None]  # x offset of each pixel from the centroid
    v = grid[None, :, None] - dy[:, None, None]
    d = np.where(good, data, 0.0)
    # the iterations run in single precision (half the memory traffic, a faster exp): the weight
    # only has to converge to TOLERANCE; the reported GaussianFlux is summed in double precision
    d32 = d.astype(np.float32)
    uu, vv, uv = ((a * b).astype(np.float32) for a, b in ((u, u), (v, v), (u, v)))
    cxx = np.asarray(sigma0, dtype=np.float64) ** 2 * np.ones(n)
    cyy = cxx.copy()
    cxy = np.zeros(n)
    active = np.ones(n, dtype=bool)
    failed = np.zeros(n, dtype=bool)
    half = s / 2.0
    for _ in range(MAX_ITER):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        w = _weight(uu[idx], vv[idx], uv[idx], cxx[idx], cyy[idx], cxy[idx])
        w *= d32[idx]
        norm = w.sum(axis=(1, 2), dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            mxx = np.einsum("nij,nij->n", w, np.broadcast_to(uu[idx], w.shape)).astype(np.float64) / norm
            myy = np.einsum("nij,nij->n", w, np.broadcast_to(vv[idx], w.shape)).astype(np.float64) / norm
            mxy = np.einsum("nij,nij->n", w, uv[idx]).astype(np.float64) / norm
            nxx, nyy, nxy = _deconvolve(mxx, myy, mxy, cxx[idx], cyy[idx], cxy[idx])
            # where the exact update is not a valid covariance (noise), take the slower C <- 2M step
            unstable = ~_valid(nxx, nyy, nxy, half)
            nxx[unstable], nyy[unstable], nxy[unstable] = 2 * mxx[unstable], 2 * myy[unstable], 2 * mxy[unstable]
        bad = ~(_valid(nxx, nyy, nxy, half) & (norm > 0))
        change = np.abs(nxx + nyy - cxx[idx] - cyy[idx]) / (cxx[idx] + cyy[idx])
        upd = idx[~bad]
        cxx[upd], cyy[upd], cxy[upd] = nxx[~bad], nyy[~bad], nxy[~bad]
        failed[idx[bad]] = True
        active[idx[bad]] = False
        active[idx[~bad][change[~bad] < TOLERANCE]] = False
    failed |= active  # not converged
    w = _weight(u * u, v * v, u * v, cxx, cyy, cxy) * good
    gflux = 2.0 * np.einsum("nij,nij->n", w, d)
    gerr = 2.0 * np.sqrt(np.einsum("nij,nij->n", w * w, np.where(good, var, 0.0)))
    nan = np.where(failed, np.nan, 1.0)
    return Moments(ixx=cxx * nan, iyy=cyy * nan, ixy=cxy * nan, flag=failed,
                   gaussian_flux=gflux * nan, gaussian_flux_err=gerr * nan)


def _valid(xx, yy, xy, half):
    with np.errstate(invalid="ignore"):
        return (np.isfinite(xx) & np.isfinite(yy) & np.isfinite(xy) & (xx > 0) & (yy > 0)
                & (xx * yy - xy**2 > 0) & (xx < half**2) & (yy < half**2))


def _weight(uu, vv, uv, cxx, cyy, cxy):
    """exp(-q/2), q = (u, v) C^-1 (u, v)^T, from the pixel offsets' products u^2, v^2, uv, in their precision."""
    det = cxx * cyy - cxy**2
    coef = [(c / det * f)[:, None, None].astype(uu.dtype) for c, f in ((cyy, -0.5), (cxx, -0.5), (cxy, 1.0))]
    q = coef[0] * uu + coef[1] * vv
    q += coef[2] * uv
    return np.exp(q, out=q)


def _deconvolve(mxx, myy, mxy, cxx, cyy, cxy):
    """(M^-1 - C^-1)^-1 for symmetric 2x2 matrices given by their (xx, yy, xy) elements."""
    ax, ay, axy = _inverse(mxx, myy, mxy)
    bx, by, bxy = _inverse(cxx, cyy, cxy)
    return _inverse(ax - bx, ay - by, axy - bxy)


def _inverse(xx, yy, xy):
    det = xx * yy - xy**2
    return yy / det, xx / det, -xy / det
