"""Alard-Lupton basis, kernel fit and decorrelation against independent references (scipy
convolutions, known kernels, white-noise statistics)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS
from scipy import signal

from skydp.diffim import DiffimConfig, subtract_images
from skydp.diffim.decorrelation import decorrelation_kernel
from skydp.diffim.kernel_basis import AlardLuptonBasis, basis_for_psfs
from skydp.exposure import Exposure, Mask, PixelPsf, VisitInfo
from skydp.forced import forced_photometry_xy


def gaussian_stamp(sigma: float, size: int = 31) -> np.ndarray:
    u = np.arange(size) - size // 2
    g = np.exp(-0.5 * (u / sigma) ** 2)
    k = np.outer(g, g)
    return k / k.sum()


def star_field(shape, n, rng, sigma, flux_range=(2e4, 3e5)):
    """Image of n Gaussian stars (flux in nJy) at random sub-pixel positions, sampled analytically."""
    ny, nx = shape
    x = rng.uniform(20, nx - 20, n)
    y = rng.uniform(20, ny - 20, n)
    f = rng.uniform(*flux_range, n)
    img = np.zeros(shape)
    yy, xx = np.mgrid[:ny, :nx]
    for xi, yi, fi in zip(x, y, f):
        sl = (slice(int(yi) - 15, int(yi) + 16), slice(int(xi) - 15, int(xi) + 16))
        img[sl] += fi * np.exp(-0.5 * ((xx[sl] - xi) ** 2 + (yy[sl] - yi) ** 2) / sigma**2) / (2 * np.pi * sigma**2)
    return img, x, y, f


def make_exposure(image, variance, sigma, visit=1):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [image.shape[1] / 2, image.shape[0] / 2]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    psf = PixelPsf(gaussian_stamp(sigma, 41)[None], np.array([0.0]), np.array([0.0]))
    info = VisitInfo(instrument="test", visit=int(f"20260101{visit:05d}"), detector=0, band="r", physical_filter="r", day_obs=20260101,
                     mjd=61000.0, exptime=30.0, airmass=1.0, boresight_ra=150.0, boresight_dec=2.0, rotpa=0.0)
    return Exposure(image=image, variance=variance, mask=Mask.empty(image.shape), wcs=wcs, psf=psf, info=info)


def test_basis_sums_and_stamp_convolution_match_scipy():
    basis = AlardLuptonBasis((0.9, 1.8, 3.6), (4, 2, 2), 23)
    images = basis.images()
    assert images.shape == (27, 23, 23)
    assert images[0].sum() == pytest.approx(1.0)
    assert np.abs(images[1:].sum(axis=(1, 2))).max() < 1e-12
    stamps = np.random.default_rng(1).normal(size=(2, 50, 61))
    ours = basis.convolve_stamps(stamps)
    ref = np.array([[signal.convolve2d(s, k, mode="valid") for k in images] for s in stamps])
    assert np.abs(ours - ref).max() < 1e-10


def test_basis_widths_follow_lsst_scaling():
    # sigma_K = sqrt(2.5^2 - 1.5^2) = 2; sigmas 1, 2, 4; size = 6 * 4 = 24 -> 25
    basis = basis_for_psfs(1.5, 2.5, (0.7, 1.5, 3.0), (4, 2, 2), 2.0, 0.7, 21, 35)
    assert basis.sigmas == pytest.approx((1.0, 2.0, 4.0))
    assert basis.size == 25
    assert basis.n_kernels == 27


def test_fit_recovers_known_kernel_and_background():
    """science = template (x) Gaussian(1.6 px) + 30 nJy, plus noise: the fitted kernel matches the template
    PSF to the science PSF (the kernel's own high frequencies are unconstrained by a smooth template, so
    the test compares template PSF (x) kernel, what the subtraction uses) and recovers the background."""
    rng = np.random.default_rng(5)
    shape = (400, 400)
    sig_t = 1.3
    template, *_ = star_field(shape, 250, rng, sig_t)
    true_kernel = gaussian_stamp(1.6, 31)
    science = signal.fftconvolve(template, true_kernel, mode="same") + 30.0
    sig_s = np.hypot(sig_t, 1.6)
    var_s = np.full(shape, 25.0**2) + np.clip(science, 0, None) * 0.05
    var_t = np.full(shape, 10.0**2)
    sci = make_exposure(science + rng.normal(size=shape) * np.sqrt(var_s), var_s, sig_s)
    tmp = make_exposure(template + rng.normal(size=shape) * np.sqrt(var_t), var_t, sig_t, visit=2)
    diff = subtract_images(sci, tmp, DiffimConfig(spatial_kernel_order=0, spatial_background_order=0))
    assert diff.convolved == "template"
    matched_psf = signal.fftconvolve(gaussian_stamp(sig_t, 41), diff.kernel.kernel_image(200, 200), mode="same")
    science_psf = gaussian_stamp(sig_s, 41)
    assert diff.kernel.kernel_sum == pytest.approx(1.0, abs=3e-3)
    assert np.abs(matched_psf - science_psf).max() < 0.01 * science_psf.max()
    assert diff.kernel.background[0] == pytest.approx(30.0, abs=2.0)
    # the difference is noise: image / sqrt(variance) has unit scatter
    ok = np.isfinite(diff.difference.image)
    z = diff.difference.image[ok] / np.sqrt(diff.difference.variance[ok])
    assert 0.95 < np.std(z) < 1.08


def test_sharper_science_convolves_the_science():
    rng = np.random.default_rng(8)
    shape = (300, 300)
    sharp, *_ = star_field(shape, 150, rng, 1.2)
    broad = signal.fftconvolve(sharp, gaussian_stamp(1.5, 31), mode="same")
    var = np.full(shape, 15.0**2)
    transient, tx, ty, tf = star_field(shape, 3, rng, 1.2, (3e4, 6e4))
    sci = make_exposure(sharp + transient + rng.normal(size=shape) * 15, var, 1.2)
    tmp = make_exposure(broad + rng.normal(size=shape) * 15, var, np.hypot(1.2, 1.5), visit=2)
    diff = subtract_images(sci, tmp)
    assert diff.convolved == "science"
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    far = np.min([np.hypot(xx - a, yy - b) for a, b in zip(tx, ty)], axis=0) > 12
    ok = np.isfinite(diff.difference.image) & far
    z = diff.difference.image[ok] / np.sqrt(diff.difference.variance[ok])
    assert 0.92 < np.std(z) < 1.1
    # the difference PSF (science PSF matched to the template, then decorrelated) and the 1/kappa scaling
    # give the transients' science-image fluxes back
    phot = forced_photometry_xy(diff.difference, tx, ty).to_pydict()
    pull = (np.array(phot["psfFlux"]) - tf) / np.array(phot["psfFluxErr"])
    assert np.all(np.abs(pull) < 4), pull


def test_decorrelation_whitens_the_noise():
    """Pure-noise pair: after decorrelation the neighbouring-pixel correlation of the difference vanishes
    and its variance equals s_v + kappa^2 t_v."""
    kernel = gaussian_stamp(1.5, 21)
    s_v, t_v = 1.0, 20.0
    phi = decorrelation_kernel(kernel, s_v, t_v)
    assert phi.sum() == pytest.approx(1.0)
    rng = np.random.default_rng(3)
    n = 512
    diff = rng.normal(size=(n, n)) * np.sqrt(s_v) - signal.fftconvolve(rng.normal(size=(n, n)) * np.sqrt(t_v), kernel, mode="same")
    before = diff[30:-30, 30:-30]
    after = signal.fftconvolve(diff, phi, mode="same")[30:-30, 30:-30]

    def lag1(a):
        return np.corrcoef(a[:, 1:].ravel(), a[:, :-1].ravel())[0, 1]

    assert lag1(before) > 0.1
    assert abs(lag1(after)) < 0.01
    assert np.var(after) == pytest.approx(s_v + t_v, rel=0.02)


def test_bad_input_is_named():
    img = np.zeros((100, 100), dtype=np.float32)
    sci = make_exposure(img, np.ones_like(img), 1.5)
    tmp = make_exposure(img, None, 1.5, visit=2)
    with pytest.raises(ValueError, match="template image .* no variance"):
        subtract_images(sci, tmp)
    with pytest.raises(ValueError, match="mode"):
        DiffimConfig(mode="both")


def test_mask_growth_matches_a_maximum_filter_per_plane():
    """The template mask is grown by the kernel half-size with a bitwise-OR dilation; every bit plane
    must equal scipy's square maximum filter of that plane."""
    from scipy import ndimage

    from skydp.diffim.subtract import _grow

    rng = np.random.default_rng(0)
    for shape, radius in (((50, 61), 3), ((40, 40), 11), ((7, 9), 5), ((300, 200), 11)):
        bits = np.where(rng.random(shape) < 0.01, rng.integers(1, 512, shape), 0).astype(np.int32)
        grown = _grow(bits, radius)
        for bit in range(9):
            plane = ((bits >> bit) & 1).astype(np.uint8)
            expected = ndimage.maximum_filter(plane, size=2 * radius + 1, mode="constant").astype(bool)
            assert np.array_equal(((grown >> bit) & 1).astype(bool), expected)


def test_subtraction_is_deterministic():
    """A repository may drop difference images and recreate them: the same inputs give the same pixels."""
    rng = np.random.default_rng(9)
    shape = (200, 200)
    template, *_ = star_field(shape, 80, rng, 1.3)
    science = signal.fftconvolve(template, gaussian_stamp(1.2, 31), mode="same")
    var = np.full(shape, 15.0**2)
    sci = make_exposure(science + rng.normal(size=shape) * 15, var, np.hypot(1.3, 1.2))
    tmp = make_exposure(template + rng.normal(size=shape) * 15, var, 1.3, visit=2)
    first, second = subtract_images(sci, tmp), subtract_images(sci.copy(), tmp.copy())
    for a, b in ((first.difference, second.difference), (first.matched_template, second.matched_template)):
        assert np.array_equal(a.image, b.image, equal_nan=True)
        assert np.array_equal(a.variance, b.variance, equal_nan=True)
        assert np.array_equal(a.mask.array, b.mask.array)


def test_fixed_flux_ratio_keeps_a_lone_transient():
    """A small cut-out whose only bright source brightens by 40 %: a free kernel sum scales the template
    source up to the science and the change vanishes; with the flux ratio known (1, same calibrated
    units) the kernel sum is exactly 1 and the difference keeps the change. Not all of it: the kernel's
    zero-sum terms, fitted to this one source, still move ~7 % beyond a 10 px aperture."""
    rng = np.random.default_rng(21)
    shape = (96, 96)
    sig_t, sig_s = 1.3, 1.9
    yy, xx = np.mgrid[:96, :96]
    blob = np.exp(-0.5 * ((xx - 47.3) ** 2 + (yy - 48.6) ** 2) / sig_t**2) / (2 * np.pi * sig_t**2)
    template = 1e5 * blob
    science = 1.4e5 * signal.fftconvolve(blob, gaussian_stamp(np.sqrt(sig_s**2 - sig_t**2), 31), mode="same")
    var_s, var_t = np.full(shape, 20.0**2), np.full(shape, 8.0**2)
    sci = make_exposure(science + rng.normal(size=shape) * 20.0, var_s, sig_s)
    tmp = make_exposure(template + rng.normal(size=shape) * 8.0, var_t, sig_t, visit=2)
    r = np.hypot(xx - 47.3, yy - 48.6) < 10
    free = subtract_images(sci, tmp)
    fixed = subtract_images(sci, tmp, DiffimConfig(flux_ratio=1.0))
    assert fixed.kernel.kernel_sum == 1.0
    assert abs(free.kernel.kernel_sum - 1.4) < 0.05  # the change became the photometric scale
    assert np.nansum(free.difference.image[r]) < 0.1 * 0.4e5
    assert np.nansum(fixed.difference.image[r]) == pytest.approx(0.4e5, rel=0.1)
    with pytest.raises(ValueError, match="flux_ratio"):
        DiffimConfig(flux_ratio=0.0)


def test_excluded_candidate_keeps_its_flux_on_a_host_galaxy():
    """A cut-out with a host galaxy (exponential disc, 2e5 nJy) and a transient of 3e4 nJy 1.5 px from
    its centre, two field stars, flux ratio known: the kernel fitted over the whole cut-out absorbs part
    of the transient by reshaping the galaxy; with the transient's position excluded from the fit its
    8 px aperture flux is recovered. Measured over 8 noise seeds: excluded 0.991-1.005 of the truth
    (median 1.0013), not excluded 0.985-1.008 (median 0.995)."""
    shape = (96, 96)
    sig_t, sig_s = 1.3, 1.9
    yy, xx = np.mgrid[:96, :96]
    tx, ty, flux = 49.4, 48.7, 3e4

    def point(x, y, s):
        return np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / s**2) / (2 * np.pi * s**2)

    galaxy = np.exp(-np.hypot(xx - 48.0, (yy - 47.5) / 0.7) / 3.0)
    template = (signal.fftconvolve(2e5 * galaxy / galaxy.sum(), gaussian_stamp(sig_t), mode="same")
                + 1e5 * point(20.2, 70.6, sig_t) + 6e4 * point(75.5, 22.3, sig_t))
    science = (signal.fftconvolve(template, gaussian_stamp(np.sqrt(sig_s**2 - sig_t**2)), mode="same")
               + flux * point(tx, ty, sig_s))
    aperture = np.hypot(xx - tx, yy - ty) < 8
    config = DiffimConfig(flux_ratio=1.0, kernel_min_size=11, kernel_max_size=11)
    kept, absorbed = [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        sci = make_exposure(science + rng.normal(size=shape) * 10.0, np.full(shape, 100.0), sig_s)
        tmp = make_exposure(template + rng.normal(size=shape) * 4.0, np.full(shape, 16.0), sig_t, visit=2)
        kept.append(np.nansum(subtract_images(sci, tmp, config, exclude=([tx], [ty])).difference.image[aperture]))
        absorbed.append(np.nansum(subtract_images(sci, tmp, config).difference.image[aperture]))
    kept, absorbed = np.array(kept) / flux, np.array(absorbed) / flux
    assert np.all(np.abs(kept - 1) < 0.015)
    assert abs(np.median(kept) - 1) < 0.005
    assert np.mean(kept - absorbed) > 0.003


def test_exclude_positions_are_checked():
    img = np.zeros((100, 100), dtype=np.float32)
    sci = make_exposure(img, np.ones_like(img), 1.5)
    with pytest.raises(ValueError, match="exclude"):
        subtract_images(sci, sci, exclude=([1.0, 2.0], [3.0]))
    with pytest.raises(ValueError, match="exclude"):
        subtract_images(sci, sci, exclude=([np.nan], [3.0]))
