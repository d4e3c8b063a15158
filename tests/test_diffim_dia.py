"""DiaSource measurement on synthetic difference images with known sources (signs, dipoles, fluxes),
and ``skydp diff`` on a simulated pair that needs warping."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_diffim_kernel import make_exposure

from skydp import tables
from skydp.diffim import Difference
from skydp.diffim.command import run_diff_cli
from skydp.diffim.dia_sources import detect_dia_sources
from skydp.exposure import read_exposure
from skydp.sim import simulate
from skydp.sim.presets import get_preset

SIGMA = 1.8  # PSF sigma, px
NOISE = 20.0  # nJy per pixel


def _psf_image(shape, x, y, flux):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return flux * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / SIGMA**2) / (2 * np.pi * SIGMA**2)


def _difference(sources, seed=0, shape=(200, 200)):
    """A Difference whose difference image holds ``sources`` [(x, y, flux)] plus white noise."""
    rng = np.random.default_rng(seed)
    image = rng.normal(size=shape) * NOISE
    for x, y, f in sources:
        image += _psf_image(shape, x, y, f)
    var = np.full(shape, NOISE**2)
    diff = make_exposure(image, var, SIGMA)
    template = make_exposure(np.zeros(shape), var, SIGMA, visit=2)
    science = make_exposure(rng.normal(size=shape) * NOISE, var, SIGMA)
    return Difference(difference=diff, matched_template=template, kernel=None, convolved="template",
                      decorrelation=None), science


def test_positive_and_negative_sources_are_measured():
    sources = [(60.3, 70.6, 8000.0), (140.7, 120.2, -6000.0)]
    diff, science = _difference(sources)
    table = detect_dia_sources(diff, science).to_pandas()
    assert len(table) == 2
    table = table.sort_values("x")
    err = NOISE * np.sqrt(4 * np.pi * SIGMA**2)  # PSF-flux error of a Gaussian PSF on white noise
    for (x, y, f), (_, row) in zip(sources, table.iterrows()):
        assert row.isNegative == (f < 0)
        assert abs(row.x - x) < 0.2 and abs(row.y - y) < 0.2
        assert abs(row.psfFlux - f) < 4 * err
        assert row.psfFluxErr == pytest.approx(err, rel=0.05)
        assert abs(row.apFlux - f) < 4 * row.apFluxErr
        assert not row.isDipole
        # point sources: moments equal the PSF's, extendedness near 0
        assert row.ixx == pytest.approx(row.ixxPSF, rel=0.3)
        assert row.extendedness < 0.5
    assert table.diaObjectId.eq(0).all()
    # the difference mask now carries the footprints of both polarities
    assert diff.difference.mask.get("DETECTED").any() and diff.difference.mask.get("DETECTED_NEGATIVE").any()


def test_dipole_fit_recovers_both_lobes():
    """A positive and a negative PSF 3 px apart (a star moved or mis-registered): one DiaSource,
    a dipole of that length and angle, lobe fluxes recovered."""
    sources = [(101.5, 100.0, 20000.0), (98.5, 100.0, -15000.0)]
    diff, science = _difference(sources, seed=3)
    table = detect_dia_sources(diff, science).to_pandas()
    assert len(table) == 1
    row = table.iloc[0]
    assert row.dipoleFitAttempted and row.isDipole
    assert row.dipoleLength == pytest.approx(3.0, abs=0.15)
    assert abs(row.dipoleAngle) < 3.0  # degrees: negative lobe -> positive lobe along +x
    assert row.dipoleMeanFlux == pytest.approx(17500.0, abs=4 * row.dipoleMeanFluxErr)
    assert row.dipoleFluxDiff == pytest.approx(5000.0, abs=4 * row.dipoleFluxDiffErr)
    assert row.x == pytest.approx(100.0, abs=0.15)
    assert not row.isNegative  # the positive lobe is the stronger


def test_empty_difference_gives_an_empty_exact_table():
    diff, science = _difference([], seed=5)
    table = detect_dia_sources(diff, science)
    assert table.num_rows == 0
    assert table.schema == tables.arrow_schema("DiaSource")


def test_skydp_diff_on_a_rotated_pair(tmp_path):
    """Two raw simulated visits at different rotations: the template is warped, the difference has
    unit noise on source-free pixels, the DiaSource table and the FITS file are written."""
    sim = simulate(tmp_path / "sim", preset=get_preset("tiny", visits_per_band={"r": 2}), seed=4)
    science, template = sim.images
    out = tmp_path / "diff.fits"
    summary = run_diff_cli(science, template, out, dia_sources=tmp_path / "dia.parquet")
    assert "DiaSources" in summary
    diff = read_exposure(out)
    ok = np.isfinite(diff.image) & ((diff.mask.array & diff.mask.bitmask("DETECTED", "DETECTED_NEGATIVE")) == 0)
    assert ok.mean() > 0.5
    z = diff.image[ok] / np.sqrt(diff.variance[ok])
    robust = 1.4826 * np.median(np.abs(z - np.median(z)))
    print(f"{summary}; robust std of image/sqrt(variance) {robust:.3f}, std {z.std():.3f}")
    assert 0.9 < robust < 1.15
    dia = pq.read_table(tmp_path / "dia.parquet")
    assert dia.schema == tables.arrow_schema("DiaSource")
    assert diff.info.visit == read_exposure(science).info.visit


def test_cli_names_the_files_on_bad_input(tmp_path):
    img = np.zeros((64, 64), dtype=np.float32)
    from skydp.exposure import write_exposure

    write_exposure(make_exposure(img, np.ones_like(img), 1.5), tmp_path / "a.fits")
    write_exposure(make_exposure(img, np.ones_like(img), 1.5, visit=2), tmp_path / "b.fits")
    with pytest.raises(ValueError, match="a.fits"):
        run_diff_cli(tmp_path / "a.fits", tmp_path / "b.fits", tmp_path / "d.fits")


def test_template_flux_error_includes_the_kernel_noise_correlation():
    """Pure-noise template convolved by a known kernel (Gaussian, sigma 1.5 px; its variance plane
    v sum(K^2), as subtract_images writes it), 400 positive transients on the difference: templateFlux
    is pure correlated noise, and templateFlux / templateFluxErr must have std ~1 (measured 0.988;
    4.04 with the uncorrected error: the variance factor for these Gaussians is
    4 pi sP^2 sK^2 / (sP^2 + sK^2) = 16.7)."""
    from scipy import signal

    from skydp.diffim.decorrelation import convolved_noise_factor
    from skydp.diffim.kernel_basis import AlardLuptonBasis
    from skydp.diffim.psf_matching import KernelSolution

    shape, sigma_k, noise_t = (500, 500), 1.5, 30.0
    grid = np.arange(25, 500, 25) + 0.3
    sources = [(x, y, 5000.0) for x in grid for y in grid]
    diff, science = _difference(sources, seed=3, shape=shape)
    basis = AlardLuptonBasis((sigma_k,), (0,), 15)
    kernel = KernelSolution(basis=basis, coefficients=np.ones((1, 1)), background=np.zeros(0), kernel_order=0,
                            background_order=-1, shape=shape, star_x=np.zeros(0), star_y=np.zeros(0), n_rejected=0,
                            chi2_per_pixel=1.0)
    k = kernel.kernel_image(0.0, 0.0)
    rng = np.random.default_rng(4)
    template = signal.fftconvolve(rng.normal(size=shape) * noise_t, k, mode="same")
    variance = np.full(shape, noise_t**2 * np.sum(k**2))
    diff.matched_template = make_exposure(template, variance, SIGMA, visit=2)
    diff.kernel = kernel
    table = detect_dia_sources(diff, science).to_pandas()
    assert len(table) == len(sources)
    pull = table.templateFlux / table.templateFluxErr
    expected = 4 * np.pi * SIGMA**2 * sigma_k**2 / (SIGMA**2 + sigma_k**2)
    assert convolved_noise_factor(diff.matched_template.psf.images_at([0.0], [0.0]), k)[0] == pytest.approx(
        expected, rel=0.02)
    print(f"templateFlux pull std {np.std(pull):.3f}")
    assert 0.9 <= np.std(pull) <= 1.1


def test_template_flux_error_includes_the_warp_noise_correlation():
    """Pure-noise template on a grid rotated by 30 deg and offset by a fraction of a pixel, warped
    onto the science grid (Lanczos-3: its variance plane holds the per-pixel variance, not the
    covariance), 1600 positive transients on the difference: templateFlux is pure warped noise, and
    templateFlux / templateFluxErr must have std ~1 (measured 1.002 over the 1527 found; 1.130
    without the warp's factor sqrt(warp.covariance_factor()) = 1.127)."""
    from skydp.warp import covariance_factor, warp_exposure

    shape, noise_t, big = (500, 500), 30.0, 760
    grid = np.arange(12, 490, 12) + 0.3
    sources = [(x, y, 3000.0) for x in grid for y in grid]
    diff, science = _difference(sources, seed=5, shape=shape)
    rng = np.random.default_rng(6)
    template = make_exposure(rng.normal(size=(big, big)) * noise_t, np.full((big, big), noise_t**2), SIGMA, visit=2)
    angle = np.radians(30.0)
    template.wcs.wcs.pc = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    template.wcs.wcs.crpix = template.wcs.wcs.crpix + [0.37, 0.61]
    diff.matched_template = warp_exposure(template, science.wcs, shape, science.xy0)
    diff.template_warped = True
    table = detect_dia_sources(diff, science).to_pandas()
    assert len(table) >= 0.9 * len(sources)  # wherever a source is found, the template there is noise
    pull = table.templateFlux / table.templateFluxErr
    print(f"warped template: templateFlux pull std {np.std(pull):.3f} (n={len(pull)}), "
          f"without the warp factor {np.std(pull) * np.sqrt(covariance_factor()):.3f}")
    assert 0.94 <= np.std(pull) <= 1.06
