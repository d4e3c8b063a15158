"""Pixel units: BUNIT flux and surface-brightness units, zero points, unknown units; real JWST MJy/sr."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from conftest import shared_data
from skydp.exposure import ExposureMetadataWarning, read_exposure, write_exposure

JWST = ("jwst_nircam_a2744_2epoch", "jw01324001001-01324-o001_t001_nircam_clear-f200w_i2d_stamp.fits")
SCALE_ARCSEC = 0.25


def _plain(path: Path, value: float = 3.0, **cards) -> Path:
    d = SCALE_ARCSEC / 3600.0
    header = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0, "CRVAL2": 20.0,
                          "CRPIX1": 20.5, "CRPIX2": 20.5, "CD1_1": -d, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": d})
    header.update(cards)
    fits.PrimaryHDU(np.full((40, 40), value, np.float32), header).writeto(path)
    return path


def _load(path: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exp = read_exposure(path)
    return exp, [w for w in caught if issubclass(w.category, ExposureMetadataWarning)]


@pytest.mark.parametrize("bunit, njy_per_unit", [
    ("nJy", 1.0), ("NJY", 1.0), ("nanojansky", 1.0), ("uJy", 1e3), ("mJy", 1e6), ("Jy", 1e9),
])
def test_flux_units(tmp_path, bunit, njy_per_unit):
    exp, _ = _load(_plain(tmp_path / "f.fits", BUNIT=bunit))
    np.testing.assert_allclose(exp.image, 3.0 * njy_per_unit, rtol=1e-7)
    assert exp.info.bunit == "nJy" and not any("unscaled" in w for w in exp.info.warnings)


def test_mjy_per_sr_uses_pixar_sr_else_wcs_area(tmp_path):
    exp, _ = _load(_plain(tmp_path / "a.fits", BUNIT="MJy/sr", PIXAR_SR=2.0e-12))
    np.testing.assert_allclose(exp.image, 3.0 * 1e15 * 2.0e-12, rtol=1e-7)  # 1 MJy = 1e15 nJy
    exp, _ = _load(_plain(tmp_path / "b.fits", BUNIT="MJy/sr"))
    sr = (SCALE_ARCSEC / 3600.0 * math.pi / 180.0) ** 2  # TAN pixel at the tangent point
    np.testing.assert_allclose(exp.image, 3.0 * 1e15 * sr, rtol=1e-6)


def test_counts_with_photocal_and_magzero(tmp_path):
    exp, _ = _load(_plain(tmp_path / "p.fits", BUNIT="adu", PHOTOCAL=0.5))
    np.testing.assert_allclose(exp.image, 1.5, rtol=1e-7)
    exp, _ = _load(_plain(tmp_path / "m.fits", value=200.0, BUNIT="electron", MAGZERO=27.0))
    # The same source in magnitudes: ZP - 2.5 log10(counts) == 31.4 - 2.5 log10(nJy).
    mag_counts = 27.0 - 2.5 * np.log10(200.0)
    mag_njy = 31.4 - 2.5 * np.log10(exp.image.astype(float))
    np.testing.assert_allclose(mag_njy, mag_counts, atol=1e-6)
    assert exp.info.bunit == "nJy"
    exp, _ = _load(_plain(tmp_path / "z.fits", value=200.0, MAGZERO=31.4))  # no BUNIT: zero point implies counts
    np.testing.assert_allclose(exp.image, 200.0, rtol=1e-7)
    assert exp.info.bunit == "nJy"


@pytest.mark.parametrize("cards, label", [
    ({}, ""), ({"BUNIT": "adu"}, "adu"), ({"BUNIT": "erg/s/cm2/Angstrom"}, "erg/s/cm2/Angstrom"),
    ({"BUNIT": "MJY/SR"}, "MJY/SR"),  # mega or milli? refused rather than guessed
])
def test_missing_or_unknown_units_load_unscaled_with_one_warning(tmp_path, cards, label):
    exp, caught = _load(_plain(tmp_path / "u.fits", **cards))
    np.testing.assert_array_equal(exp.image, 3.0)
    assert exp.info.bunit == label
    assert any("not nJy" in w for w in exp.info.warnings)
    assert len(caught) == 1 and "not nJy" in str(caught[0].message)


def test_variance_scales_with_square_of_factor(tmp_path):
    path = tmp_path / "v.fits"
    d = 0.2 / 3600.0
    header = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0, "CRVAL2": 20.0,
                          "CRPIX1": 5.0, "CRPIX2": 5.0, "CD1_1": -d, "CD2_2": d})
    primary = fits.PrimaryHDU()
    primary.header["BUNIT"] = "uJy"
    fits.HDUList([primary, fits.ImageHDU(np.full((8, 8), 2.0, np.float32), header, name="IMAGE"),
                  fits.ImageHDU(np.full((8, 8), 4.0, np.float32), header, name="VARIANCE")]).writeto(path)
    exp, _ = _load(path)
    np.testing.assert_allclose(exp.image, 2.0e3)
    np.testing.assert_allclose(exp.variance, 4.0e6)
    # Written back it is nJy and reloads unscaled.
    write_exposure(exp, tmp_path / "w.fits")
    again, _ = _load(tmp_path / "w.fits")
    assert np.array_equal(again.image, exp.image) and np.array_equal(again.variance, exp.variance)


def test_jwst_nircam_mjy_per_sr_real_file():
    path = shared_data(*JWST)
    exp, _ = _load(path)
    with fits.open(path) as hdul:
        raw = hdul[0].data.astype(np.float64)
        pixar_sr, pixar_a2 = hdul[0].header["PIXAR_SR"], hdul[0].header["PIXAR_A2"]
    good = np.isfinite(raw)
    np.testing.assert_allclose(exp.image[good], raw[good] * 1e15 * pixar_sr, rtol=1e-6)
    # PIXAR_SR (2.23e-14, rounded in the header) agrees with PIXAR_A2 and with the WCS pixel area.
    a2_sr = pixar_a2 * (math.pi / 180 / 3600) ** 2
    assert pixar_sr == pytest.approx(a2_sr, rel=2e-3)
    assert exp.pixel_scale() ** 2 == pytest.approx(pixar_a2, rel=2e-3)
    assert exp.info.bunit == "nJy" and exp.variance is None
    assert exp.info.band == "" and exp.info.physical_filter == "F200W"
