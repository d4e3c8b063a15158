"""PSF-fit centroids and PSF fluxes, vectorised over sources on stamps.

Centroid: linear least squares of the data stamp on (P, dP/dx, dP/dy) with P the PSF realised at
the current position; the shift is -b/a; two iterations. This is the maximum-likelihood
(matched-filter) position for sky-dominated noise, the quantity SdssCentroid approximates by a
parabola through the PSF-smoothed peak. Errors are the sandwich covariance of that fit with the
variance plane, so they are honest for the unweighted estimator.

Flux (LSST base_PsfFlux): flux = sum(P D) / sum(P^2), err = sqrt(sum(P^2 V)) / sum(P^2),
chi2 = sum((D - flux P)^2 / V); pixels flagged bad (or of other sources) are removed from the fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import scipy.fft

from skydp.pipeline.stamps import StampCutter, round_half_up

MAX_CENTROID_SHIFT = 2.0  # px from the detection position; beyond it the fit is flagged and reset


@dataclass
class PsfFit:
    """Per-source results (all (N,) arrays; positions 0-based array frame)."""

    x: np.ndarray
    y: np.ndarray
    x_err: np.ndarray
    y_err: np.ndarray
    xy_cov: np.ndarray
    centroid_flag: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    chi2: np.ndarray
    area: np.ndarray
    flux_flag: np.ndarray
    psf: np.ndarray  # (N, S, S) PSF realised at the final position
    data: np.ndarray  # (N, S, S) measurement stamps there (see measurement_stamps)
    variance: np.ndarray
    good: np.ndarray


def fit_psf(cutter: StampCutter, psf_images_at, x0: np.ndarray, y0: np.ndarray, label_plane: str,
            labels: np.ndarray, size: int, fit_centroid: np.ndarray, n_iter: int = 2,
            core_size: int | None = None, psf_cores_at=None) -> PsfFit:
    """Fit centroid (where ``fit_centroid``) and PSF flux for sources starting at (x0, y0).

    ``cutter`` holds planes 'image', 'variance' (0 at unusable pixels), 'bad' (bool) and the
    footprint label plane ``label_plane``; ``labels[i]`` is source i's label there (pixels of any
    other non-zero label are excluded, i.e. the source is measured on its own deblended pixels).
    ``psf_images_at(x, y)`` returns (N, S, S) PSF stamps in parent coordinates of the same frame.
    The centroid is fitted on the central ``core_size`` x ``core_size`` box (odd; default the whole
    stamp): with an unweighted fit, pixels far outside the PSF core add noise but no position
    information, and they dominate the cost. The flux always uses the whole stamp.
    ``psf_cores_at(x, y, core)``, when given, returns that box of the PSF and its x and y
    derivatives ((N, core, core) each, e.g. ``PixelPsf.cores_at``) for the centroid iterations;
    by default they are cut from ``psf_images_at`` and differentiated spectrally.
    """
    core = size if core_size is None else min(int(core_size), size)
    if core % 2 == 0 or core < 3:
        raise ValueError(f"fit_psf: core_size must be odd and >= 3, got {core_size}")
    if psf_cores_at is None:
        psf_cores_at = _cores_from_images(psf_images_at, size)
    x = np.asarray(x0, dtype=np.float64).copy()
    y = np.asarray(y0, dtype=np.float64).copy()
    n = len(x)
    cov = np.full((n, 3), np.nan)
    flag = np.zeros(n, dtype=bool)
    for _ in range(n_iter if np.any(fit_centroid) else 0):
        sel = np.flatnonzero(fit_centroid & ~flag)
        if sel.size == 0:
            break
        psf_core, dpx, dpy = psf_cores_at(x[sel], y[sel], core)
        data, var, good = measurement_stamps(cutter, x[sel], y[sel], label_plane, labels[sel], core)
        shift, shift_cov, ok = _solve_shift(psf_core, dpx, dpy, data, var, good)
        new_x = x[sel] + shift[:, 0]
        new_y = y[sel] + shift[:, 1]
        far = np.hypot(new_x - x0[sel], new_y - y0[sel]) > MAX_CENTROID_SHIFT
        ok &= ~far
        x[sel] = np.where(ok, new_x, x[sel])
        y[sel] = np.where(ok, new_y, y[sel])
        cov[sel] = np.where(ok[:, None], shift_cov, np.nan)
        flag[sel[~ok]] = True
    x[flag], y[flag] = x0[flag], y0[flag]
    cov[flag] = np.nan
    cov[~fit_centroid] = np.nan
    psf = psf_images_at(x, y) if n else np.zeros((0, size, size))
    data, var, good = measurement_stamps(cutter, x, y, label_plane, labels, size)
    flux, flux_err, chi2, area, flux_flag = (np.empty(n) for _ in range(5))
    _linear_psf_fit(psf, data, var, good, flux, flux_err, chi2, area, flux_flag)
    flux_flag = flux_flag.astype(bool)
    return PsfFit(x=x, y=y, x_err=np.sqrt(cov[:, 0]), y_err=np.sqrt(cov[:, 1]), xy_cov=cov[:, 2],
                  centroid_flag=flag & fit_centroid, flux=flux, flux_err=flux_err, chi2=chi2, area=area,
                  flux_flag=flux_flag, psf=psf, data=data, variance=var, good=good)


@numba.njit(cache=True, nogil=True, error_model="numpy")  # no usable pixel: NaN flux, flagged
def _linear_psf_fit(psf: np.ndarray, data: np.ndarray, var: np.ndarray, good: np.ndarray, flux: np.ndarray,
                    flux_err: np.ndarray, chi2: np.ndarray, area: np.ndarray, flag: np.ndarray) -> None:
    """base_PsfFlux on the usable pixels of each stamp; flagged when not finite or when the usable
    pixels hold less than half of sum(P^2). Compiled: two passes per stamp instead of ten
    full-size numpy temporaries."""
    n, s, _ = psf.shape
    for k in range(n):
        spp = spd = sppv = sp = ptot = 0.0
        for j in range(s):
            for i in range(s):
                p = psf[k, j, i]
                ptot += p * p
                if good[k, j, i]:
                    spp += p * p
                    spd += p * data[k, j, i]
                    sppv += p * p * var[k, j, i]
                    sp += p
        f = spd / spp
        resid = 0.0
        for j in range(s):
            for i in range(s):
                if good[k, j, i]:
                    resid += (data[k, j, i] - f * psf[k, j, i]) ** 2 / var[k, j, i]
        flux[k], flux_err[k], chi2[k], area[k] = f, math.sqrt(sppv) / spp, resid, sp * sp / spp
        flag[k] = not (math.isfinite(flux[k]) and math.isfinite(flux_err[k]) and spp > 0.5 * ptot)


def measurement_stamps(cutter: StampCutter, x: np.ndarray, y: np.ndarray, label_plane: str,
                       labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Data, variance and usable-pixel stamps centred on pixel floor(x+0.5), floor(y+0.5);
    unusable pixels (bad, zero variance, another source's footprint, off the image) are zero in
    data and variance."""
    if size // 2 > cutter.pad:
        raise ValueError(f"stamp size {size} exceeds the padding {cutter.pad}")
    cx, cy = round_half_up(x).ravel(), round_half_up(y).ravel()
    n = cx.size
    data, var = np.empty((n, size, size)), np.empty((n, size, size))
    good = np.empty((n, size, size), dtype=bool)
    _usable_stamps(cutter.plane("image")[0], cutter.plane("variance")[0], cutter.plane("bad")[0],
                   cutter.plane(label_plane)[0], cx, cy, np.asarray(labels, dtype=np.int64).ravel(), data, var, good)
    return data, var, good


@numba.njit(cache=True, nogil=True)
def _usable_stamps(image: np.ndarray, variance: np.ndarray, bad: np.ndarray, label_map: np.ndarray,
                   cx: np.ndarray, cy: np.ndarray, labels: np.ndarray, data: np.ndarray, var: np.ndarray,
                   good: np.ndarray) -> None:
    """The four planes read once per stamp pixel (compiled: four cuts, casts and masks in numpy
    made this the largest part of the PSF fit)."""
    ny, nx = image.shape
    size = data.shape[1]
    half = size // 2
    for n in range(cx.size):
        own = labels[n]
        for j in range(size):
            yy = cy[n] - half + j
            for i in range(size):
                xx = cx[n] - half + i
                ok, v = False, 0.0
                if 0 <= yy < ny and 0 <= xx < nx:
                    lab = label_map[yy, xx]
                    v = float(variance[yy, xx])
                    ok = not bad[yy, xx] and (lab == 0 or lab == own) and v > 0
                good[n, j, i] = ok
                data[n, j, i] = float(image[yy, xx]) if ok else 0.0
                var[n, j, i] = v if ok else 0.0


def _cores_from_images(psf_images_at, size: int):
    """``psf_cores_at`` from a full-stamp ``psf_images_at``: the central box and its spectral
    derivatives (the derivative matrix restricted to the box's rows, so two small products)."""
    full = _derivative_matrix(size)

    def cores_at(x: np.ndarray, y: np.ndarray, core: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        inner = slice((size - core) // 2, (size - core) // 2 + core)
        deriv = full[inner]  # (core, size): spectral d/dx of a row, core outputs only
        psf = psf_images_at(x, y)
        return psf[:, inner, inner], psf[:, inner, :] @ deriv.T, deriv @ psf[:, :, inner]

    return cores_at


def _derivative_matrix(s: int) -> np.ndarray:
    """(s, s) real matrix D with D @ f the spectral (band-limited, periodic) derivative of a row f
    of s samples: exact for band-limited stamps, no finite-difference bias. The 2-D x and y
    derivatives of a stamp factorise into D along each axis; restricting D's rows to the fit
    core makes them a small matrix product instead of two full-stamp FFTs per source."""
    k = 2j * np.pi * scipy.fft.fftfreq(s)
    if s % 2 == 0:  # the Nyquist term of an even stamp has no defined derivative sign
        k[s // 2] = 0
    return scipy.fft.ifft(k[:, None] * scipy.fft.fft(np.eye(s), axis=0), axis=0).real


def _solve_shift(psf, dpx, dpy, data, var, good):
    """Solve D = a P - a dx dP/dx - a dy dP/dy; return (dx, dy), their covariance (xx, yy, xy), ok."""
    n = len(psf)
    basis = [np.where(good, b, 0.0).reshape(n, -1) for b in (psf, -dpx, -dpy)]
    d = data.reshape(n, -1)
    v = var.reshape(n, -1)
    normal = np.empty((n, 3, 3))
    meat = np.empty((n, 3, 3))
    for k in range(3):
        vb = v * basis[k]
        for m in range(k, 3):
            normal[:, k, m] = normal[:, m, k] = np.einsum("np,np->n", basis[k], basis[m])
            meat[:, k, m] = meat[:, m, k] = np.einsum("np,np->n", vb, basis[m])
    rhs = np.stack([np.einsum("np,np->n", b, d) for b in basis], axis=1)
    det = np.linalg.det(normal)
    ok = np.isfinite(det) & (det > 0)
    inv = np.zeros_like(normal)
    inv[ok] = np.linalg.inv(normal[ok])
    coef = np.einsum("nkl,nl->nk", inv, rhs)
    cov = inv @ meat @ inv
    a = coef[:, 0]
    ok &= a > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = coef[:, 1:] / a[:, None]
        # delta-method covariance of (b/a) with a, b jointly Gaussian
        jx = np.stack([-shift[:, 0] / a, 1 / a, np.zeros_like(a)], axis=1)
        jy = np.stack([-shift[:, 1] / a, np.zeros_like(a), 1 / a], axis=1)
        vxx = np.einsum("nk,nkl,nl->n", jx, cov, jx)
        vyy = np.einsum("nk,nkl,nl->n", jy, cov, jy)
        vxy = np.einsum("nk,nkl,nl->n", jx, cov, jy)
    ok &= np.isfinite(shift).all(axis=1) & np.isfinite(vxx) & np.isfinite(vyy)
    return np.where(ok[:, None], shift, 0.0), np.stack([vxx, vyy, vxy], axis=1), ok
