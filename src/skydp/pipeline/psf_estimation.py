"""PSF estimation from bright, isolated, unsaturated stars (used when the image has no PSF HDU).

PSFEx-like: star stamps are centred (Fourier shift to their windowed centroid); the model is the
mean star plus ``n_components`` principal components of the residuals within VARYING_RADIUS_FWHM
initial FWHM of the centre, whose coefficients vary over the detector as 2-D polynomials of order
``spatial_order``; further out the model is the mean star's (with the whole 41-px stamp varying,
the components fitted the noise of the wings and the model's flux scale varied by ~1% over the
detector). Stars must be isolated within CORE_RADIUS_FWHM only: neighbours' footprints further out
are masked and filled with the model (EM), so the stamp can be large enough to hold the wings (a
25-px stamp misses 0.1-0.5% of a Moffat's light, a per-visit flux offset) without losing most stars
of a crowded field; pixels outside the varying part that lie WING_CLIP_SIGMA above the model
(light of neighbours beyond their masks) are masked too. Each star is normalised by its
model-weighted flux (its stamp sum has ~4x the noise) and refitted; stars whose residual chi^2 is
an outlier are rejected. Negative model pixels
(noise in the wings) are kept: clipping them biased the wing flux. The wings are only as good as
the background under them: fit on the final, source-masked background (a first-pass background
raised by the stars' own wings took 0.5% of their light from a 41-px model). The result is
realised on a grid of stamps as a ``PixelPsf`` so the rest of the pipeline sees one PSF interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
import sep
from scipy import ndimage

from skydp.exposure import PixelPsf
from skydp.pipeline.detection import detect, disk_dilate, snr_image
from skydp.pipeline.moments import adaptive_moments
from skydp.pipeline.stamps import StampCutter, round_half_up

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
SIZE_TOLERANCE = 0.2  # stars: |T / T_star - 1| below this (T = ixx + iyy)
REJECTION_ROUNDS = 3
NORMALISATION_ROUNDS = 3  # model fits and flux renormalisations per rejection round
CORE_RADIUS_FWHM = 2.0  # stars must have no neighbour within this many initial FWHM
VARYING_RADIUS_FWHM = 3.0  # the model varies over the detector within this many initial FWHM
NEIGHBOUR_GROW_FWHM = 1.0  # neighbours' footprints are masked this far beyond their detection
WING_CLIP_SIGMA = 4.0  # beyond the varying part, pixels this many sigma above the model are masked


class PsfEstimationError(ValueError):
    """Too few usable stars to model the PSF."""


@dataclass
class EstimatedPsf:
    psf: PixelPsf
    n_stars: int
    star_x: np.ndarray  # array-frame positions of the stars used
    star_y: np.ndarray


def estimate_psf(image: np.ndarray, variance: np.ndarray, bad: np.ndarray, xy0: tuple[int, int],
                 initial_fwhm: float, stamp_size: int, n_components: int, spatial_order: int,
                 grid: int, min_snr: float, max_stars: int) -> EstimatedPsf:
    """Estimate a spatially varying pixelized PSF; positions of the returned PixelPsf are parent pixels."""
    ny, nx = image.shape
    sigma0 = initial_fwhm / FWHM_PER_SIGMA
    snr = snr_image(np.where(bad, 0, image).astype(np.float32), np.where(bad, 0, variance).astype(np.float32), sigma0)
    found = detect(snr, 5.0, 1, 0.0, deblend=False, deblend_nthresh=1, deblend_cont=1.0)
    del snr
    half = stamp_size // 2
    core = min(stamp_size, 2 * int(np.ceil(CORE_RADIUS_FWHM * initial_fwhm)) + 1)
    cutter = StampCutter(half + 1)
    cutter.add("image", image)
    cutter.add("variance", variance)
    cutter.add("bad", bad, fill=True)
    cutter.add("labels", found.segmap)
    cutter.add("grown", disk_dilate(found.segmap, NEIGHBOUR_GROW_FWHM * initial_fwhm))
    bright = np.flatnonzero(found.peak_snr >= min_snr)
    x, y = found.x[bright], found.y[bright]
    c = core // 2
    inside = (x > c) & (x < nx - 1 - c) & (y > c) & (y < ny - 1 - c)
    bright, x, y = bright[inside], x[inside], y[inside]
    if bright.size < 3:
        raise PsfEstimationError(f"PSF estimation: only {bright.size} sources with S/N >= {min_snr}")
    x, y, _ = sep.winpos(np.ascontiguousarray(image, dtype=np.float32), x, y, np.full(x.size, sigma0))
    cx, cy = round_half_up(x), round_half_up(y)
    labels = cutter.cut("labels", cx, cy, core)
    isolated = np.all((labels == 0) | (labels == (bright + 1)[:, None, None]), axis=(1, 2))
    clean = ~np.any(cutter.cut("bad", cx, cy, core), axis=(1, 2))
    keep = isolated & clean & np.isfinite(x) & np.isfinite(y)
    x, y, cx, cy, bright = x[keep], y[keep], cx[keep], cy[keep], bright[keep]
    data = cutter.cut("image", cx, cy, stamp_size).astype(np.float64)
    var = cutter.cut("variance", cx, cy, stamp_size).astype(np.float64)
    grown = cutter.cut("grown", cx, cy, stamp_size)
    masked = cutter.cut("bad", cx, cy, stamp_size) | ((grown != 0) & (grown != (bright + 1)[:, None, None]))
    data[masked] = 0.0
    mom = adaptive_moments(data, var, ~masked, x - cx, y - cy, np.full(x.size, sigma0))
    trace = mom.ixx + mom.iyy
    star = _stellar_locus(trace)
    order = np.argsort(-found.peak_snr[bright[star]])[:max_stars]
    sel = np.flatnonzero(star)[order]
    if sel.size < 3:
        raise PsfEstimationError(f"PSF estimation: only {sel.size} isolated, unsaturated stars found")
    stamps = _centre(data[sel], x[sel] - cx[sel], y[sel] - cy[sel])
    # the shift spreads each masked pixel's edge by up to a pixel: mask its neighbours too
    good = ~ndimage.binary_dilation(masked[sel], structure=np.ones((1, 3, 3), bool))
    c0 = (stamp_size - core) // 2
    flux = stamps[:, c0:c0 + core, c0:c0 + core].sum(axis=(1, 2))  # first guess, refined by _fit_model
    yy, xx = np.indices((stamp_size, stamp_size)) - half
    varying = np.hypot(xx, yy) <= VARYING_RADIUS_FWHM * initial_fwhm  # where the model varies over the detector
    stamps /= flux[:, None, None]
    noise2 = np.where(good, var[sel] / flux[:, None, None] ** 2, np.inf)
    model = _fit_model(stamps, noise2, good, varying, x[sel], y[sel], (nx, ny), n_components, spatial_order)
    gx = np.linspace(0, nx - 1, grid)
    gy = np.linspace(0, ny - 1, grid)
    px, py = np.meshgrid(gx, gy)
    realised = model.evaluate(px.ravel(), py.ravel())
    psf = PixelPsf(realised, px.ravel() + xy0[0], py.ravel() + xy0[1])
    used = model.used
    return EstimatedPsf(psf=psf, n_stars=int(used.sum()), star_x=x[sel][used], star_y=y[sel][used])


def gaussian_psf(fwhm: float, stamp_size: int, xy0: tuple[int, int]) -> PixelPsf:
    """Circular Gaussian PSF (pixel-integrated) of ``fwhm`` px: the fallback when no stars are usable."""
    sigma = fwhm / FWHM_PER_SIGMA
    edges = np.arange(stamp_size + 1) - stamp_size // 2 - 0.5
    from scipy.special import erf

    cdf = 0.5 * (1 + erf(edges / (np.sqrt(2) * sigma)))
    profile = np.diff(cdf)
    stamp = np.outer(profile, profile)
    return PixelPsf(stamp[None], np.array([float(xy0[0])]), np.array([float(xy0[1])]))


def _stellar_locus(trace: np.ndarray) -> np.ndarray:
    """Stars: within SIZE_TOLERANCE of the densest size among the smallest sources."""
    ok = np.isfinite(trace) & (trace > 0)
    t = np.where(ok, trace, np.inf)
    with np.errstate(invalid="ignore"):  # inf / inf between two unusable sizes: not near
        near = np.abs(t[:, None] / t[None, :] - 1) < SIZE_TOLERANCE / 2
    density = np.where(ok, near.sum(axis=1), -1)
    # the stellar locus is the densest size clump; among equally dense clumps take the smallest
    best = np.lexsort((t, -density))[0]
    return ok & (np.abs(t / t[best] - 1) < SIZE_TOLERANCE)


def _centre(stamps: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Shift each stamp by (-dx, -dy) so the star centre lands on the centre pixel (Fourier shift)."""
    s = stamps.shape[-1]
    ky = scipy.fft.fftfreq(s)[None, :, None]
    kx = scipy.fft.fftfreq(s)[None, None, :]
    phase = np.exp(2j * np.pi * (kx * dx[:, None, None] + ky * dy[:, None, None]))
    return scipy.fft.ifft2(scipy.fft.fft2(stamps, axes=(1, 2), workers=1) * phase, axes=(1, 2), workers=1).real


@dataclass
class _PcaModel:
    mean: np.ndarray  # (S, S)
    components: np.ndarray  # (n, S, S)
    poly: np.ndarray  # (n, n_terms) polynomial coefficients
    order: int
    scale: tuple[float, float]
    used: np.ndarray

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        coeff = _poly_terms(x, y, self.order, self.scale) @ self.poly.T  # (N, n)
        return self.mean[None] + np.einsum("nk,kij->nij", coeff, self.components)


def _poly_terms(x, y, order, scale):
    u = 2 * np.asarray(x, float) / scale[0] - 1
    v = 2 * np.asarray(y, float) / scale[1] - 1
    return np.stack([u**i * v**j for i in range(order + 1) for j in range(order + 1 - i)], axis=1)


def _fit_model(stamps, noise2, good, varying, x, y, scale, n_components, spatial_order) -> _PcaModel:
    """Fit the model, renormalising every star by its model-weighted flux (far less noisy than its
    stamp sum), masking positive wing outliers and filling masked pixels with the model (EM), then
    reject chi^2 outliers."""
    used = np.ones(len(stamps), dtype=bool)
    filled = np.where(good, stamps, 0.0)
    model = None
    for _ in range(REJECTION_ROUNDS):
        for _ in range(NORMALISATION_ROUNDS):
            model = _fit_pca(filled, noise2, varying, x, y, used, scale, n_components, spatial_order)
            predicted = model.evaluate(x, y)
            amp = np.sum(predicted * filled / noise2, axis=(1, 2)) / np.sum(predicted**2 / noise2, axis=(1, 2))
            stamps = stamps / amp[:, None, None]
            noise2 = noise2 / amp[:, None, None] ** 2
            # light of undetected or partly masked neighbours in the wings: positive outliers there
            # are masked (not in the core, where a bright star's model error exceeds its noise)
            with np.errstate(invalid="ignore"):
                outlier = ~varying & (stamps - predicted > WING_CLIP_SIGMA * np.sqrt(noise2))
            good = good & ~ndimage.binary_dilation(outlier, structure=np.ones((1, 3, 3), bool))
            noise2 = np.where(good, noise2, np.inf)
            filled = np.where(good, stamps, predicted)
        resid = np.where(good, stamps - predicted, 0.0)
        chi2 = np.sum(resid**2 / noise2, axis=(1, 2)) / good.sum(axis=(1, 2))
        med = np.median(chi2[used])
        mad = 1.4826 * np.median(np.abs(chi2[used] - med))
        new_used = used & (chi2 < med + 5 * max(mad, 0.05 * med))
        if new_used.sum() < 3 or np.array_equal(new_used, used):
            break
        used = new_used
    return model


def _fit_pca(stamps, noise2, varying, x, y, used, scale, n_components, spatial_order) -> _PcaModel:
    """Weighted mean star of the ``used`` stars plus principal components of their residuals within
    ``varying``, with polynomial coefficients (order lowered until two stars constrain each term)."""
    s = stamps.shape[-1]
    order = spatial_order
    while order > 0 and (order + 1) * (order + 2) // 2 * 2 > used.sum():
        order -= 1
    k = min(n_components, max(used.sum() - 2, 0)) if order > 0 else 0
    flat = stamps[used].reshape(used.sum(), -1)
    # weight each star by its S/N^2 (mean inverse pixel noise of the normalised stamp), so the
    # bright stars, not the noise of the faint ones, define the components and their variation
    w = np.mean(1.0 / noise2[used], axis=(1, 2))
    w /= w.sum()
    mean = w @ flat
    if k:
        sw = np.sqrt(w)[:, None]
        vary = varying.ravel()
        resid = flat[:, vary] - mean[vary]
        _, _, vt = np.linalg.svd(resid * sw, full_matrices=False)  # over the varying pixels only
        comps = np.zeros((k, s * s))
        comps[:, vary] = vt[:k]
        coeff = resid @ vt[:k].T
        terms = _poly_terms(x[used], y[used], order, scale)
        poly = np.linalg.lstsq(terms * sw, coeff * sw, rcond=None)[0].T
    else:
        comps = np.zeros((0, s * s))
        poly = np.zeros((0, 1))
        order = 0
    return _PcaModel(mean.reshape(s, s), comps.reshape(-1, s, s), poly, order, scale, used.copy())
