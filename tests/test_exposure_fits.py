"""Visit-image FITS I/O: the real LSST afw HSC file, our own contract round trip, bad input."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from conftest import shared_data
from skydp.exposure import (DEFAULT_MASK_PLANES, Exposure, ExposureFormatError, ExposureMetadataWarning, Mask,
                            PixelPsf, VisitInfo, read_exposure, write_exposure)

HSC = ("lsst_afw_hsc_calexp", "HSC-0908120-056-small.fits")


def _read_quiet(path: Path) -> Exposure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExposureMetadataWarning)
        return read_exposure(path)


def _tan_header(nx: int = 60, ny: int = 50, scale_arcsec: float = 0.2, rot_deg: float = 20.0) -> fits.Header:
    c, s = math.cos(math.radians(rot_deg)), math.sin(math.radians(rot_deg))
    d = scale_arcsec / 3600.0
    header = fits.Header()
    header.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 53.1, "CRVAL2": -27.8,
                   "CRPIX1": nx / 2 + 0.5, "CRPIX2": ny / 2 + 0.5,
                   "CD1_1": -d * c, "CD1_2": d * s, "CD2_1": d * s, "CD2_2": d * c})
    return header


def _gaussian_stamps(sigmas: list[float], size: int = 21) -> np.ndarray:
    yy, xx = np.indices((size, size)) - size // 2
    return np.array([np.exp(-(xx**2 + yy**2) / (2 * s**2)) for s in sigmas])


def _synthetic_exposure(with_psf: bool = True) -> Exposure:
    rng = np.random.default_rng(42)
    ny, nx = 50, 60
    mask = Mask.empty((ny, nx))
    mask.set("SAT", rng.random((ny, nx)) < 0.05)
    mask.set("STREAK", rng.random((ny, nx)) < 0.02)
    psf = PixelPsf(_gaussian_stamps([1.5, 1.7, 1.9, 2.1]), x=[10.0, 60.0, 10.0, 60.0], y=[20.0, 20.0, 60.0, 60.0])
    info = VisitInfo(instrument="LSSTCam", visit=2026032400012, detector=42, band="r", physical_filter="r_57",
                     day_obs=20260324, mjd=61123.123456789, exptime=30.0, airmass=1.234, boresight_ra=53.2,
                     boresight_dec=-27.9, rotpa=12.5, snap=1)
    return Exposure(image=rng.normal(100, 10, (ny, nx)).astype(np.float32),
                    variance=rng.uniform(90, 110, (ny, nx)).astype(np.float32), mask=mask,
                    wcs=WCS(_tan_header(nx, ny)), psf=psf if with_psf else None, xy0=(7, 11), info=info)


# --- the real LSST afw file ---------------------------------------------------------------------

def _afw_archive_sky(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sky position from afw's own persisted TanWcs tables (HDU 5: crpix 0-based PARENT, cd, crval;
    HDU 6: SIP A/B as column-major (order+1)^2 arrays, like cd): independent of the header cards we parse."""
    with fits.open(path) as hdul:
        tan, sip = hdul[5].data[0], hdul[6].data[0]
    order = int(round(math.sqrt(len(sip["A"])))) - 1
    u, v = x - tan["crpix"][0], y - tan["crpix"][1]
    a = np.asarray(sip["A"]).reshape(order + 1, order + 1)  # a[q, p] multiplies u**p v**q
    b = np.asarray(sip["B"]).reshape(order + 1, order + 1)
    f = sum(a[q, p] * u**p * v**q for p in range(order + 1) for q in range(order + 1))
    g = sum(b[q, p] * u**p * v**q for p in range(order + 1) for q in range(order + 1))
    linear = WCS(naxis=2)
    linear.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    linear.wcs.crval = tan["crval"]
    linear.wcs.crpix = [1.0, 1.0]
    linear.wcs.cd = np.asarray(tan["cd"]).reshape(2, 2, order="F")  # Eigen stores column-major
    return linear.wcs_pix2world(u + f, v + g, 0)


def test_hsc_afw_file_reads_with_planes_xy0_and_pipeline_mask_counts():
    path = shared_data(*HSC)
    with pytest.warns(ExposureMetadataWarning, match="HSC-0908120-056-small.fits"):
        exp = read_exposure(path)
    assert exp.shape == (200, 200) and exp.xy0 == (100, 100) and exp.bbox == (100, 100, 300, 300)
    assert exp.mask.planes == {"BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5,
                               "DETECTED_NEGATIVE": 6, "SUSPECT": 7, "CROSSTALK": 8, "NO_DATA": 9,
                               "UNMASKEDNAN": 10}
    # Independent numbers from the data README (counted with astropy on the raw uint16 plane).
    assert exp.mask.get("DETECTED").sum() == 5390
    assert exp.mask.get("CROSSTALK").sum() == 14
    assert np.median(exp.variance) == pytest.approx(429, rel=0.01)
    with fits.open(path) as hdul:
        assert np.array_equal(exp.image, hdul[1].data) and np.array_equal(exp.mask.array, hdul[2].data)
    # No BUNIT / zero point in this old afw file: pixels stay counts and that is recorded.
    assert exp.info.bunit == "" and any("not nJy" in w for w in exp.info.warnings)
    assert exp.variance.dtype == np.float32 and exp.mask.array.dtype == np.int32


def test_hsc_wcs_matches_afw_persisted_tan_sip_in_parent_frame():
    path = shared_data(*HSC)
    exp = _read_quiet(path)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(100, 299, 100), rng.uniform(100, 299, 100)
    ra, dec = exp.pixel_to_sky(x, y)
    ra_ref, dec_ref = _afw_archive_sky(path, x, y)
    sep_mas = np.hypot((ra - ra_ref) * np.cos(np.radians(dec)), dec - dec_ref) * 3.6e6
    assert sep_mas.max() < 1.0
    # SIP inversion: back to the same parent pixels.
    bx, by = exp.sky_to_pixel(ra, dec)
    assert np.abs(bx - x).max() < 1e-6 and np.abs(by - y).max() < 1e-6
    # PROVENANCE quotes ~0.168"/px for the CD matrix; the SIP terms shrink it slightly here.
    assert exp.pixel_scale() == pytest.approx(0.168, rel=0.02)


def test_hsc_round_trip_is_lossless(tmp_path):
    exp = _read_quiet(shared_data(*HSC))
    out = tmp_path / "hsc.fits"
    write_exposure(exp, out)
    back = _read_quiet(out)
    assert np.array_equal(back.image, exp.image, equal_nan=True)
    assert np.array_equal(back.variance, exp.variance, equal_nan=True)
    assert np.array_equal(back.mask.array, exp.mask.array)
    assert back.mask.planes == exp.mask.planes
    assert back.xy0 == exp.xy0 == (100, 100)
    rng = np.random.default_rng(5)
    x, y = rng.uniform(100, 299, 100), rng.uniform(100, 299, 100)
    ra0, dec0 = exp.pixel_to_sky(x, y)
    ra1, dec1 = back.pixel_to_sky(x, y)
    assert (np.hypot((ra1 - ra0) * np.cos(np.radians(dec0)), dec1 - dec0) * 3.6e6).max() < 1.0
    # The written file is still afw-shaped: EXTTYPE, LTV and the LINEAR 'A' WCS carry xy0.
    with fits.open(out) as hdul:
        assert [h.header.get("EXTTYPE") for h in hdul[1:4]] == ["IMAGE", "MASK", "VARIANCE"]
        assert hdul["IMAGE"].header["LTV1"] == -100 and hdul["IMAGE"].header["CRVAL1A"] == 100
        assert hdul["MASK"].header["MP_CROSSTALK"] == 8


# --- our own contract ---------------------------------------------------------------------------

def test_contract_round_trip_with_psf_metadata_and_new_plane(tmp_path):
    exp = _synthetic_exposure()
    path = tmp_path / "visit.fits"
    write_exposure(exp, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete contract file loads without any warning
        back = read_exposure(path)
    assert np.array_equal(back.image, exp.image) and np.array_equal(back.variance, exp.variance)
    assert np.array_equal(back.mask.array, exp.mask.array) and back.mask.planes == exp.mask.planes
    assert back.mask.planes["STREAK"] == 9
    assert back.xy0 == (7, 11)
    assert back.info == exp.info
    assert back.info.mjd_mid == pytest.approx(61123.123456789 + 15.0 / 86400.0, abs=1e-12)
    np.testing.assert_allclose(back.psf.stamps, exp.psf.stamps, rtol=1e-6, atol=1e-9)  # stored as float32
    assert np.array_equal(back.psf.x, exp.psf.x) and np.array_equal(back.psf.y, exp.psf.y)
    np.testing.assert_allclose(back.psf.image(35.0, 40.0), exp.psf.image(35.0, 40.0), atol=1e-8)
    x, y = np.array([7.0, 30.5, 66.0]), np.array([11.0, 40.2, 60.0])
    np.testing.assert_allclose(np.column_stack(back.pixel_to_sky(x, y)), np.column_stack(exp.pixel_to_sky(x, y)),
                               rtol=0, atol=1e-12)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE", "PSF", "PSF_GRID"]
        primary = hdul[0].header
        assert (primary["VISIT"], primary["DETECTOR"], primary["BAND"], primary["BUNIT"]) == (
            2026032400012, 42, "r", "nJy")
        assert primary["MJD-OBS"] == 61123.123456789 and primary["SNAP"] == 1
        assert hdul["MASK"].data.dtype.kind == "i" and hdul["MASK"].data.dtype.itemsize == 4
        assert hdul["PSF"].data.shape == (4, 21, 21)


def test_write_is_deterministic_and_stable_under_rewrite(tmp_path):
    exp = _synthetic_exposure()
    first, second, third = tmp_path / "a.fits", tmp_path / "b.fits", tmp_path / "c.fits"
    write_exposure(exp, first)
    write_exposure(exp, second)
    write_exposure(_read_quiet(first), third)
    assert first.read_bytes() == second.read_bytes() == third.read_bytes()


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "visit.fits"
    write_exposure(_synthetic_exposure(), path)
    before = path.read_bytes()

    def crash(self, fileobj, *args, **kwargs):
        fileobj.write(b"SIMPLE  = partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        write_exposure(_synthetic_exposure(with_psf=False), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["visit.fits"]


def test_writing_without_variance_is_refused(tmp_path):
    exp = _synthetic_exposure()
    exp.variance = None
    with pytest.raises(ValueError, match="variance"):
        write_exposure(exp, tmp_path / "x.fits")


def test_plain_single_hdu_image_loads_with_empty_mask_and_no_variance(tmp_path):
    path = tmp_path / "plain.fits"
    header = _tan_header()
    header["BUNIT"] = "nJy"
    header["FILTER"] = "HSC-I"
    header["DATE-OBS"] = "2023-02-25T00:00:00"  # UTC by the FITS default: 37 s behind TAI
    fits.PrimaryHDU(np.ones((50, 60), np.float32), header).writeto(path)
    exp = _read_quiet(path)
    assert exp.variance is None and exp.psf is None and exp.xy0 == (0, 0)
    assert not exp.mask.array.any() and exp.mask.planes == DEFAULT_MASK_PLANES
    assert exp.info.band == "i" and exp.info.physical_filter == "HSC-I"
    assert exp.info.mjd == pytest.approx(60000.0 + 37.0 / 86400.0, abs=1e-9)
    assert exp.info.day_obs == 20230224  # Rubin day_obs: the date 12 h earlier
    assert any("VISIT" in w for w in exp.info.warnings)


# --- bad input ----------------------------------------------------------------------------------

def _contract_file(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "in.fits"
    write_exposure(_synthetic_exposure(with_psf=False), path)
    with fits.open(path) as hdul:
        hdus = [h.copy() for h in hdul]
    for name, edit in changes.items():
        hdus = edit(hdus)
    bad = tmp_path / "bad.fits"
    fits.HDUList(hdus).writeto(bad)
    return bad


def _set_primary(key, value):
    def edit(hdus):
        hdus[0].header[key] = value
        return hdus
    return edit


def _drop(name):
    return lambda hdus: [h for h in hdus if h.name != name]


def _image_edit(fn):
    def edit(hdus):
        fn(hdus[1])
        return hdus
    return edit


def _no_wcs(hdu):
    for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1",
                "CD2_2", "PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2", "CUNIT1", "CUNIT2"):
        hdu.header.remove(key, ignore_missing=True)


def _all_nan(hdu):
    hdu.data = np.full(hdu.data.shape, np.nan, np.float32)


@pytest.mark.parametrize("edit, reason", [
    ({"a": _drop("VARIANCE")}, "no VARIANCE"),
    ({"a": _drop("IMAGE")}, "no IMAGE"),
    ({"a": _set_primary("BAND", "q")}, "BAND='q'"),
    ({"a": _image_edit(_no_wcs)}, "no celestial WCS"),
    ({"a": _image_edit(lambda h: h.header.update(CTYPE1="RA---XYZ", CTYPE2="DEC--XYZ"))}, "WCS"),
    ({"a": _image_edit(lambda h: h.header.update(CTYPE1="GLON-TAN", CTYPE2="DEC--TAN"))}, "WCS"),
    ({"a": _image_edit(_all_nan)}, "no finite pixel"),
])
def test_bad_files_raise_format_error_naming_file(tmp_path, edit, reason):
    bad = _contract_file(tmp_path, **edit)
    with pytest.raises(ExposureFormatError, match=reason) as info:
        _read_quiet(bad)
    assert str(info.value).startswith(f"{bad}: ")


def test_not_fits_and_truncated_files(tmp_path):
    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file at all\n" * 200)
    with pytest.raises(ExposureFormatError, match=f"^{text}: not a readable FITS"):
        read_exposure(text)
    good = tmp_path / "good.fits"
    write_exposure(_synthetic_exposure(with_psf=False), good)
    data = good.read_bytes()
    for cut in (len(data) - 4000, len(data) // 2, 3000):
        short = tmp_path / f"short{cut}.fits"
        short.write_bytes(data[:cut])
        with pytest.raises(ExposureFormatError, match=f"^{short}: "):
            _read_quiet(short)
    with pytest.raises(FileNotFoundError):
        read_exposure(tmp_path / "missing.fits")
