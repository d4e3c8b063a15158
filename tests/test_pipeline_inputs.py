"""Bad input, snaps, and the no-PSF-HDU path of single-visit processing."""

from __future__ import annotations

import numpy as np
import pytest

from skydp import tables
from skydp.pipeline import SingleVisitConfig, combine_snaps, process_visit_image
from test_pipeline_scene import make_scene, truth_match
from test_pipeline_truth import col, flux_bias_and_pull


def test_nan_pixels_become_nodata_and_bad_variance_is_masked():
    scene = make_scene(shape=(256, 256), n_stars=30, seed=21)
    exp = scene.exposure
    exp.image[100:110, 50:60] = np.nan
    exp.variance[200:205, :] = 0.0
    exp.variance[10, 10] = -1.0
    result = process_visit_image(exp)
    out = result.exposure
    assert out.mask.get("NO_DATA")[100:110, 50:60].all()
    assert out.mask.get("BAD")[200:205, :].all() and out.mask.get("BAD")[10, 10]
    assert np.isfinite(out.image).all()
    for name in ("psfFlux", "ap12Flux", "x", "y"):
        assert np.isfinite(col(result, name)[~col(result, "pixelFlags_nodata")]).mean() > 0.9
    assert np.isnan(exp.image[100, 50])  # the input is not modified


def test_image_without_sources_gives_empty_typed_table():
    scene = make_scene(shape=(200, 200), n_stars=0, seed=22)
    result = process_visit_image(scene.exposure, SingleVisitConfig(n_sky_sources=0, threshold=8.0))
    assert result.sources.num_rows == 0
    assert result.sources.schema.equals(tables.arrow_schema("Source"))


def test_no_wcs_is_a_clear_error():
    scene = make_scene(shape=(64, 64), n_stars=1, seed=23)
    exp = scene.exposure
    exp.wcs = None
    with pytest.raises(ValueError, match="WCS"):
        process_visit_image(exp)


def test_combine_snaps_sums_pixels_and_ors_masks():
    a = make_scene(shape=(64, 64), n_stars=3, seed=24).exposure
    b = make_scene(shape=(64, 64), n_stars=3, seed=25).exposure
    a.info.snap, b.info.snap = 0, 1
    a.mask.set("SAT", np.eye(64, dtype=bool))
    b.mask.set("CR", np.fliplr(np.eye(64, dtype=bool)))
    b.info.mjd = a.info.mjd + 17 / 86400
    out = combine_snaps([a, b])
    np.testing.assert_allclose(out.image, a.image + b.image, rtol=1e-6)
    np.testing.assert_allclose(out.variance, a.variance + b.variance, rtol=1e-6)
    assert out.mask.get("SAT")[5, 5] and out.mask.get("CR")[5, 58] and not out.mask.get("CR")[5, 5]
    assert out.info.exptime == pytest.approx(a.info.exptime + b.info.exptime)
    assert out.info.mjd == a.info.mjd and out.info.snap is None
    other = make_scene(shape=(64, 64), n_stars=1, seed=26, detector=11).exposure
    with pytest.raises(ValueError, match="visit/detector"):
        combine_snaps([a, other])


def test_without_psf_hdu_psf_is_estimated():
    scene = make_scene(shape=(1024, 1024), n_stars=250, n_galaxies=40, snr_range=(20, 3000), gradient=0.1,
                       min_separation=40, psf_hdu=False, seed=27)
    result = process_visit_image(scene.exposure)
    est = result.exposure.psf
    # compare moment FWHM of the estimated and the true PSF at three places across the PSF gradient
    truth_psf = make_scene(shape=(1024, 1024), n_stars=0, gradient=0.1, seed=27).exposure.psf
    errors = [est.shape(x, 512.0).fwhm / truth_psf.shape(x, 512.0).fwhm - 1 for x in (100.0, 512.0, 900.0)]
    n_star = result.ccd_visit["nPsfStar"]
    print(f"estimated PSF FWHM relative error at x=100,512,900: {np.round(errors, 4)}; nPsfStar {n_star}")
    assert max(abs(e) for e in errors) <= 0.03
    assert n_star >= 20
    m = truth_match(np.where(col(result, "sky_source"), -1e9, col(result, "x")), col(result, "y"),
                    scene.truth["x"], scene.truth["y"])
    star = scene.truth["is_star"] & (m >= 0) & (scene.truth["snr"] > 20)
    clean = ~col(result, "pixelFlags_edge")[m[star]]
    f = col(result, "psfFlux")[m[star]][clean]
    fe = col(result, "psfFluxErr")[m[star]][clean]
    t = scene.truth["flux"][star][clean]
    bias, pull = flux_bias_and_pull(f, fe, t)
    print(f"psfFlux with estimated PSF: n={len(t)} bias {bias:+.4f} pull {pull:.3f}")
    assert abs(bias) <= 0.01
    assert 0.9 <= pull <= 1.2
