"""Single-visit quality bars of issue 4, measured against GalSim truth (scenes in test_pipeline_scene)."""

from __future__ import annotations

import numpy as np
import pytest

from skydp import tables
from skydp.pipeline import SingleVisitConfig, process_visit_image
from test_pipeline_scene import make_scene, truth_match


def robust_std(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def flux_bias_and_pull(flux: np.ndarray, flux_err: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Median fractional bias and robust std of the pull (flux - truth) / error."""
    return float(np.median(flux / truth - 1)), robust_std((flux - truth) / flux_err)


def col(result, name):
    return result.sources[name].to_numpy(zero_copy_only=False)


def matched(result, scene, radius=1.5):
    real = ~col(result, "sky_source") & (col(result, "deblend_nChild") == 0)
    x = np.where(real, col(result, "x"), -1e9)
    return truth_match(x, col(result, "y"), scene.truth["x"], scene.truth["y"], radius)


@pytest.fixture(scope="module")
def bright_scene():
    """Isolated stars (S/N 20-3000) and galaxies on 1024^2, PSF FWHM 0.8" varying 10% across x."""
    scene = make_scene(shape=(1024, 1024), n_stars=250, n_galaxies=70, snr_range=(20, 3000), gradient=0.1,
                       min_separation=40, n_cosmic_rays=30, seed=11)
    return scene, process_visit_image(scene.exposure)


@pytest.fixture(scope="module")
def faint_scene():
    """Isolated stars with true PSF S/N 3-20 on 1024^2."""
    scene = make_scene(shape=(1024, 1024), n_stars=400, snr_range=(3, 20), min_separation=30, seed=12)
    return scene, process_visit_image(scene.exposure)


def test_source_table_has_exact_schema(bright_scene):
    _, result = bright_scene
    assert result.sources.schema.equals(tables.arrow_schema("Source"))
    ids = col(result, "sourceId")
    assert len(np.unique(ids)) == len(ids)


def test_completeness(faint_scene):
    scene, result = faint_scene
    m = matched(result, scene)
    snr = scene.truth["snr"]
    hi = snr >= 10
    mid = (snr >= 5) & (snr < 7)
    c_hi, c_mid = np.mean(m[hi] >= 0), np.mean(m[mid] >= 0)
    print(f"completeness S/N>=10: {c_hi:.3f} (n={hi.sum()}), S/N 5-7: {c_mid:.3f} (n={mid.sum()})")
    assert c_hi >= 0.95
    assert c_mid >= 0.50


def _expected_false_peaks(n_pix: int, sigma: float, nu: float) -> float:
    """Expected number of excursion sets above nu of white noise smoothed by a Gaussian of sigma:
    the Euler-characteristic density of a 2-D Gaussian field, (lambda/(2 pi)^(3/2)) nu exp(-nu^2/2)
    with lambda = 1/(2 sigma^2) (Adler 1981); at high nu it counts the peaks above nu."""
    lam = 1.0 / (2.0 * sigma**2)
    return n_pix * lam / (2 * np.pi) ** 1.5 * nu * np.exp(-nu**2 / 2)


@pytest.mark.parametrize("threshold", [4.0, 5.0])
def test_false_detections_on_pure_noise(threshold):
    scene = make_scene(shape=(1024, 1024), n_stars=0, seed=13)
    result = process_visit_image(scene.exposure, SingleVisitConfig(threshold=threshold))
    found = int(np.sum(~col(result, "sky_source")))
    sigma = scene.exposure.psf.shape(512, 512).sigma
    expected = _expected_false_peaks(1024 * 1024, sigma, threshold)
    print(f"threshold {threshold}: false detections {found}, Gaussian-field expectation {expected:.2f}")
    # Poisson upper bound at the 99.9% level
    upper = expected + 3.1 * np.sqrt(expected) + 3
    assert found <= upper


def test_psf_flux_bias_and_pull(bright_scene):
    scene, result = bright_scene
    m = matched(result, scene)
    star = scene.truth["is_star"] & (m >= 0) & (scene.truth["snr"] > 20)
    clean = ~col(result, "pixelFlags_cr")[m[star]] & ~col(result, "pixelFlags_edge")[m[star]]
    f = col(result, "psfFlux")[m[star]][clean]
    fe = col(result, "psfFluxErr")[m[star]][clean]
    t = scene.truth["flux"][star][clean]
    bias, pull = flux_bias_and_pull(f, fe, t)
    print(f"psfFlux: n={len(t)} median bias {bias:+.4f}, pull robust std {pull:.3f}")
    assert abs(bias) <= 0.01
    assert 0.9 <= pull <= 1.2


def test_calib_flux_bias_and_pull(bright_scene):
    scene, result = bright_scene
    m = matched(result, scene)
    star = scene.truth["is_star"] & (m >= 0) & (scene.truth["snr"] > 20)
    f = col(result, "calibFlux")[m[star]]
    fe = col(result, "calibFluxErr")[m[star]]
    t = scene.truth["flux"][star]
    bias, pull = flux_bias_and_pull(f, fe, t)
    print(f"calibFlux vs total flux: n={len(t)} median bias {bias:+.4f}, pull robust std {pull:.3f}")
    assert abs(bias) <= 0.01
    assert 0.9 <= pull <= 1.2


def test_centroids(bright_scene):
    scene, result = bright_scene
    m = matched(result, scene)
    star = scene.truth["is_star"] & (m >= 0) & (scene.truth["snr"] > 100)
    dx = col(result, "x")[m[star]] - scene.truth["x"][star]
    dy = col(result, "y")[m[star]] - scene.truth["y"][star]
    rms = np.sqrt(np.mean(dx**2 + dy**2) / 2)
    px = robust_std(dx / col(result, "xErr")[m[star]])
    py = robust_std(dy / col(result, "yErr")[m[star]])
    print(f"centroids S/N>100: n={star.sum()} rms {rms:.4f} px, pull std x {px:.3f} y {py:.3f}")
    assert rms <= 0.02
    assert 0.8 <= px <= 1.3 and 0.8 <= py <= 1.3


def test_extendedness(bright_scene):
    scene, result = bright_scene
    m = matched(result, scene)
    ext = col(result, "extendedness")
    snr = scene.truth["snr"]
    stars = scene.truth["is_star"] & (m >= 0) & (snr > 50)
    gals = ~scene.truth["is_star"] & (m >= 0) & (snr > 50) & (scene.truth["hlr"] > 0.6)
    f_star = np.mean(ext[m[stars]] == 0)
    f_gal = np.mean(ext[m[gals]] == 1)
    print(f"extendedness: stars S/N>50 with 0: {f_star:.3f} (n={stars.sum()}); "
          f"galaxies hlr>0.6\" S/N>50 with 1: {f_gal:.3f} (n={gals.sum()})")
    assert stars.sum() > 50 and gals.sum() > 10
    assert f_star >= 0.95
    assert f_gal >= 0.90


def test_sky_sources_noise(bright_scene):
    _, result = bright_scene
    sky = col(result, "sky_source")
    ratio = col(result, "psfFlux")[sky] / col(result, "psfFluxErr")[sky]
    print(f"sky sources: n={sky.sum()} std(psfFlux/psfFluxErr) {np.std(ratio):.3f}")
    assert sky.sum() >= 50
    assert 0.9 <= np.std(ratio) <= 1.2


def test_cosmic_rays_are_masked_and_stars_are_not(bright_scene):
    scene, result = bright_scene
    cr = result.exposure.mask.get("CR")
    assert cr.sum() > 0
    # no star core is flagged as a cosmic ray
    m = matched(result, scene)
    bright = scene.truth["is_star"] & (m >= 0) & (scene.truth["snr"] > 100)
    hit = col(result, "pixelFlags_crCenter")[m[bright]]
    print(f"CR pixels {cr.sum()}, bright stars with crCenter {hit.sum()} of {bright.sum()}")
    assert hit.mean() < 0.05
    assert np.all(result.exposure.mask.get("INTRP")[cr])


def test_ccd_visit_row(bright_scene):
    scene, result = bright_scene
    row = result.ccd_visit
    names = {c.name for c in tables.columns("CcdVisit")}
    assert set(row) <= names
    assert row["zeroPoint"] == pytest.approx(31.4)
    assert row["skyNoise"] == pytest.approx(scene.sky_sigma, rel=0.05)
    # magLim: 5 sigma point source at the sky noise: 5 * sky * sqrt(n_eff)
    psf = scene.exposure.psf.image(512, 512)
    expected = 31.4 - 2.5 * np.log10(5 * scene.sky_sigma / np.sqrt(np.sum(psf**2)))
    assert row["magLim"] == pytest.approx(expected, abs=0.05)
    assert row["pixelScale"] == pytest.approx(0.2, rel=1e-6)
    print({k: row[k] for k in ("seeing", "psfSigma", "skyBg", "skyNoise", "magLim")})


def test_ra_err_is_the_error_of_the_ra_coordinate():
    """raErr is in degrees of RA (on-sky error / cos(dec)), checked at dec = 60 deg where they differ 2x."""
    scene = make_scene(shape=(256, 256), n_stars=15, snr_range=(200, 1000), min_separation=30, seed=21)
    scene.exposure.wcs.wcs.crval = [150.0, 60.0]
    scene.exposure.wcs.wcs.set()
    result = process_visit_image(scene.exposure)
    real = ~col(result, "sky_source")
    dec = col(result, "dec")[real]
    # the TAN WCS has x along -RA and y along Dec with 0.2" pixels
    expected_ra = col(result, "xErr")[real] * 0.2 / 3600 / np.cos(np.radians(dec))
    expected_dec = col(result, "yErr")[real] * 0.2 / 3600
    print(f"raErr / (xErr * scale / cos dec): median {np.median(col(result, 'raErr')[real] / expected_ra):.4f}")
    np.testing.assert_allclose(col(result, "raErr")[real], expected_ra, rtol=0.02)
    np.testing.assert_allclose(col(result, "decErr")[real], expected_dec, rtol=0.02)
