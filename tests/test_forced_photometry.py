"""forced_photometry_xy on synthetic images: exact recovery, noise, flags, input handling, missing
variance / PSF, and the quantised-phase PSF table against PixelPsf.images_at."""

from __future__ import annotations

import warnings

import galsim
import numpy as np
import pytest
from astropy.wcs import WCS

from skydp.exposure import Exposure, ExposureMetadataWarning, Mask, PixelPsf
from skydp.forced import forced_photometry, forced_photometry_xy
from skydp.forced.psf_table import PhasedPsf

N = 256
SIGMA_NOISE = 10.0


def _psf(fwhm: float = 3.5, size: int = 25) -> PixelPsf:
    """Moffat PSF on a 3x3 grid whose FWHM grows 20% across x (so interpolation matters)."""
    gx, gy = np.meshgrid(np.linspace(0, N - 1, 3), np.linspace(0, N - 1, 3))
    stamps = [galsim.Moffat(beta=3.0, fwhm=fwhm * (1 + 0.2 * x / N)).drawImage(nx=size, ny=size, scale=1.0).array
              for x in gx.ravel()]
    return PixelPsf(np.array(stamps), gx.ravel(), gy.ravel())


def _wcs() -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    wcs.wcs.crpix = [N / 2, N / 2]
    wcs.wcs.crval = [150.0, 2.0]
    return wcs


def _scene(flux: np.ndarray, x: np.ndarray, y: np.ndarray, noise: float = 0.0, seed: int = 0) -> Exposure:
    """Stars drawn with PixelPsf.images_at (the reference realisation), optional Gaussian noise."""
    psf = _psf()
    image = np.zeros((N, N))
    stamps = psf.images_at(x, y)
    half = psf.stamp_size // 2
    for f, cx, cy, stamp in zip(flux, np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int), stamps):
        image[cy - half:cy + half + 1, cx - half:cx + half + 1] += f * stamp
    image += np.random.default_rng(seed).normal(0, noise, image.shape) if noise else 0
    variance = np.full((N, N), max(noise, 1.0) ** 2)
    return Exposure(image, variance, Mask.empty((N, N)), _wcs(), psf)


def _grid_positions(n_side: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.linspace(30, N - 31, n_side)
    gx, gy = np.meshgrid(centres, centres)
    return gx.ravel() + rng.uniform(-0.5, 0.5, gx.size), gy.ravel() + rng.uniform(-0.5, 0.5, gx.size)


def test_noiseless_stars_recovered_exactly():
    x, y = _grid_positions(6)
    flux = np.geomspace(100, 1e6, x.size)
    result = forced_photometry_xy(_scene(flux, x, y), x, y)
    # only the 1/16-px phase quantisation separates the fitted PSF from the drawn one
    np.testing.assert_allclose(result["psfFlux"].to_numpy() / flux, 1.0, atol=1e-3)
    assert not any(result["psfFlux_flag"].to_pylist())


def test_noise_pulls_and_error_formula():
    x, y = _grid_positions(7)
    truth = np.full(x.size, 2000.0)
    pulls = []
    for seed in range(8):
        result = forced_photometry_xy(_scene(truth, x, y, SIGMA_NOISE, seed), x, y)
        pulls.append((result["psfFlux"].to_numpy() - truth) / result["psfFluxErr"].to_numpy())
    pulls = np.concatenate(pulls)
    assert 0.9 < np.std(pulls) < 1.1 and abs(np.mean(pulls)) < 0.1
    # error = sigma / sqrt(sum P^2) for constant variance
    psf = _psf().images_at(x[:1], y[:1])[0]
    assert result["psfFluxErr"][0].as_py() == pytest.approx(SIGMA_NOISE / np.sqrt(np.sum(psf**2)), rel=0.01)


def test_flags_off_image_masked_and_edge():
    x = np.array([100.3, -3.0, 300.0, np.nan, 60.0, 160.0, 200.0, 0.2])
    y = np.array([100.7, 50.0, 50.0, 50.0, 60.0, 160.0, 60.0, 128.0])
    exposure = _scene(np.full(x.size, 1000.0), np.nan_to_num(np.clip(x, 20, 230), nan=100), np.clip(y, 20, 230))
    mask = exposure.mask
    nodata = np.zeros((N, N), bool)
    nodata[40:80, 40:80] = True  # fully covers the PSF core of (60, 60)
    mask.set("NO_DATA", nodata)
    sat = np.zeros((N, N), bool)
    sat[160, 160] = True
    mask.set("SAT", sat)
    cr = np.zeros((N, N), bool)
    cr[60, 203] = True  # 3 px from (200, 60): in the PSF core, outside the 3x3 centre
    mask.set("CR", cr)
    r = forced_photometry_xy(exposure, x, y).to_pydict()
    assert r["on_image"] == [True, False, False, False, True, True, True, True]
    assert r["psfFlux_flag"][:4] == [False, True, True, True]
    assert np.isnan(r["psfFlux"][1]) and np.isnan(r["psfFlux"][3])
    assert r["psfFlux_flag"][4] and r["pixelFlags_nodata"][4] and r["pixelFlags_nodataCenter"][4]
    assert r["pixelFlags_saturated"][5] and r["pixelFlags_saturatedCenter"][5] and not r["psfFlux_flag"][5]
    assert r["pixelFlags_cr"][6] and not r["pixelFlags_crCenter"][6]
    # half the PSF off the left edge: measured, flagged as mostly unusable, off-image pixels count as NO_DATA
    assert r["pixelFlags_nodata"][7] and np.isfinite(r["psfFlux"][7])
    assert not any(r["pixelFlags_saturated"][i] for i in (0, 4, 6, 7))
    assert not any(r["invalidPsfFlag"])


def test_sky_positions_and_input_order():
    x, y = _grid_positions(4)
    flux = np.linspace(500, 5000, x.size)
    exposure = _scene(flux, x, y)
    order = np.random.default_rng(3).permutation(x.size)
    ra, dec = exposure.pixel_to_sky(x[order], y[order])
    result = forced_photometry(exposure, ra, dec)
    np.testing.assert_allclose(result["x"].to_numpy(), x[order], atol=1e-6)
    np.testing.assert_allclose(result["psfFlux"].to_numpy(), flux[order], rtol=1e-3)
    assert forced_photometry(exposure, [], []).num_rows == 0


def test_missing_variance_and_psf_are_estimated():
    x, y = _grid_positions(6)
    flux = np.full(x.size, 3e4)  # S/N ~ 130 each: enough stars for the PSF estimate
    exposure = _scene(flux, x, y, SIGMA_NOISE, seed=5)
    exposure.variance = None
    exposure.psf = None
    with pytest.warns(ExposureMetadataWarning, match="constant variance.*PSF estimated"):
        result = forced_photometry_xy(exposure, x, y)
    assert not any(result["invalidPsfFlag"].to_pylist())
    np.testing.assert_allclose(np.median(result["psfFlux"].to_numpy() / flux), 1.0, atol=0.02)
    psf = _psf().images_at(x[:1], y[:1])[0]
    assert result["psfFluxErr"][0].as_py() == pytest.approx(SIGMA_NOISE / np.sqrt(np.sum(psf**2)), rel=0.1)


def test_gaussian_fallback_is_flagged_invalid():
    exposure = _scene(np.array([]), np.array([]), np.array([]), SIGMA_NOISE)  # no stars to model
    exposure.psf = None
    with pytest.warns(ExposureMetadataWarning, match="Gaussian PSF"):
        result = forced_photometry_xy(exposure, [100.0], [100.0])
    assert result["invalidPsfFlag"].to_pylist() == [True]


def test_bad_input_is_named():
    exposure = _scene(np.array([1.0]), np.array([100.0]), np.array([100.0]))
    with pytest.raises(ValueError, match="x and y must have the same length"):
        forced_photometry_xy(exposure, [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="dec must be within"):
        forced_photometry(exposure, [150.0], [91.0])
    with pytest.raises(ValueError, match="aperture_radius must be positive"):
        forced_photometry_xy(exposure, [100.0], [100.0], aperture_radius=0.0)


def test_aperture_flux_of_a_noiseless_star():
    exposure = _scene(np.array([1e4]), np.array([128.3]), np.array([127.6]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = forced_photometry_xy(exposure, [128.3], [127.6], aperture_radius=12.0).to_pylist()[0]
    enclosed = np.sum(_psf().images_at([128.3], [127.6])[0][0:25, 0:25])  # r=12 holds nearly the whole stamp
    assert row["apFlux"] == pytest.approx(1e4 * enclosed, rel=0.02) and not row["apFlux_flag"]


@pytest.mark.parametrize("fwhm", [2.0, 3.5])
def test_phase_table_matches_images_at(fwhm):
    """Amplitude bias of fitting with the quantised table instead of the exact Fourier shift."""
    psf = _psf(fwhm)
    rng = np.random.default_rng(4)
    x, y = rng.uniform(0, N - 1, 3000), rng.uniform(0, N - 1, 3000)
    exact = psf.images_at(x, y)
    table = PhasedPsf(psf, (0, 0, N, N), None, phases=16).images(x, y)
    amplitude = np.einsum("nij,nij->n", table, exact) / np.einsum("nij,nij->n", table, table)
    # measured: mean -1.5e-4 / -5e-5, worst -4.6e-4 / -1.6e-4 for FWHM 2 / 3.5 px
    assert abs(amplitude.mean() - 1) < 3e-4 and np.abs(amplitude - 1).max() < 1e-3
    # at a node and zero phase offset the table is the stamp itself (grid nodes are PixelPsf's own)
    node = psf.x[:1], psf.y[:1]  # (0, 0): an integer node
    at_node = PhasedPsf(psf, (0, 0, N, N), None, phases=1).images(*node)
    np.testing.assert_allclose(at_node[0], psf.images_at(*node)[0], atol=1e-6)
