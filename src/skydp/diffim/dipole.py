"""Dipole fit: a positive and a negative PSF fitted jointly to a difference-image detection.

Model (as LSST ip_diffim DipoleFit, on the difference image only): D = F+ P(x+, y+) - F- P(x-, y-)
with F+, F- >= 0 the lobe fluxes. For given lobe positions the fluxes are a weighted linear least
squares problem, so the non-linear fit (scipy least_squares) runs over the four coordinates only
(variable projection); flux covariances come from the linear problem at the optimum, position
covariances from the Jacobian.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from skydp.exposure import PixelPsf


@dataclass
class DipoleFit:
    """One fit; positions are parent pixels."""

    x_pos: float
    y_pos: float
    x_neg: float
    y_neg: float
    flux_pos: float
    flux_neg: float
    cov_flux: np.ndarray  # (2, 2) covariance of (flux_pos, flux_neg)
    cov_xy: np.ndarray  # (4, 4) covariance of (x_pos, y_pos, x_neg, y_neg)
    chi2_dof: float
    n_data: int
    ok: bool


def fit_dipole(image: np.ndarray, variance: np.ndarray, good: np.ndarray, xy0: tuple[int, int], psf: PixelPsf,
               start: tuple[float, float, float, float], half: int) -> DipoleFit:
    """Fit a dipole to the (2 half + 1)^2 window around the midpoint of the start positions
    (x+, y+, x-, y-, parent pixels) on array planes ``image``, ``variance``, ``good``."""
    ny, nx = image.shape
    s = psf.stamp_size
    mx, my = 0.5 * (start[0] + start[2]), 0.5 * (start[1] + start[3])
    cx, cy = int(np.floor(mx + 0.5)), int(np.floor(my + 0.5))  # parent pixel of the window centre
    ax, ay = cx - xy0[0], cy - xy0[1]
    rows = np.arange(ay - half, ay + half + 1)
    cols = np.arange(ax - half, ax + half + 1)
    inside = (rows[:, None] >= 0) & (rows[:, None] < ny) & (cols[None, :] >= 0) & (cols[None, :] < nx)
    rr, cc = np.clip(rows, 0, ny - 1), np.clip(cols, 0, nx - 1)
    use = inside & good[np.ix_(rr, cc)]
    data = image[np.ix_(rr, cc)][use].astype(np.float64)
    inv_sigma = 1.0 / np.sqrt(variance[np.ix_(rr, cc)][use].astype(np.float64))
    n_data = int(use.sum())
    max_offset = s // 2 - half

    def models(p: np.ndarray) -> np.ndarray | None:
        out = []
        for px, py in ((p[0], p[1]), (p[2], p[3])):
            stamp = psf.image_at(px, py)
            ox = int(np.floor(px + 0.5)) - cx
            oy = int(np.floor(py + 0.5)) - cy
            if abs(ox) > max_offset or abs(oy) > max_offset:
                return None
            c = s // 2
            window = stamp[c - oy - half:c - oy + half + 1, c - ox - half:c - ox + half + 1]
            out.append(window[use])
        return np.array(out)

    def solve(p: np.ndarray):
        m = models(p)
        if m is None:
            return None
        a = np.stack([m[0], -m[1]], axis=1) * inv_sigma[:, None]
        b = data * inv_sigma
        normal = a.T @ a
        try:
            cov = np.linalg.inv(normal)
        except np.linalg.LinAlgError:
            return None
        flux = cov @ (a.T @ b)
        return flux, cov, b - a @ flux

    def residuals(p: np.ndarray) -> np.ndarray:
        res = solve(p)
        return np.full(n_data, 1e3) if res is None else res[2]

    p0 = np.array(start, dtype=np.float64)
    bound = max_offset - 0.5
    lower = np.array([cx - bound, cy - bound] * 2)
    upper = np.array([cx + bound, cy + bound] * 2)
    failed = DipoleFit(*start, np.nan, np.nan, np.full((2, 2), np.nan), np.full((4, 4), np.nan), np.nan, n_data, False)
    if n_data <= 6 or max_offset < 1:
        return failed
    result = least_squares(residuals, np.clip(p0, lower, upper), bounds=(lower, upper), x_scale=0.5,
                           diff_step=1e-3, max_nfev=200)
    final = solve(result.x)
    if final is None:
        return failed
    flux, cov_flux, resid = final
    chi2 = float(resid @ resid)
    try:
        cov_xy = np.linalg.inv(result.jac.T @ result.jac)
    except np.linalg.LinAlgError:
        cov_xy = np.full((4, 4), np.nan)
    return DipoleFit(*map(float, result.x), float(flux[0]), float(flux[1]), cov_flux, cov_xy,
                     chi2 / max(n_data - 6, 1), n_data, bool(result.success))
