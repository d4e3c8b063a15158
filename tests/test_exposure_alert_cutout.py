"""read_exposure on LSST alert cut-outs: the 7 real LSSTCam alerts, bytes / gzip / stream input, bad input."""

from __future__ import annotations

import gzip
import io

import fastavro
import numpy as np
import pytest
from astropy.io import fits

from skydp.exposure import ExposureFormatError, read_exposure
from tests.conftest import shared_data

CUTOUTS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")


@pytest.fixture(scope="module")
def alerts() -> list[dict]:
    path = shared_data("rubin_lsstcam_alerts_20260305", "fink_client_lsst_part-2-918301.avro")
    with open(path, "rb") as handle:
        return list(fastavro.reader(handle))


def test_all_real_cutouts_read(alerts):
    assert len(alerts) == 7
    for alert in alerts:
        source = alert["diaSource"]
        for name in CUTOUTS:
            raw = fits.open(io.BytesIO(alert[name]))
            exp = read_exposure(alert[name])
            assert exp.shape == raw[0].data.shape
            np.testing.assert_array_equal(exp.image, raw[0].data)  # already nJy
            # UNCERT is a variance: its median square root matches the robust pixel scatter of the
            # source-free outer ring (science/difference; the template is much deeper)
            assert exp.variance is not None and np.all(exp.variance > 0)
            np.testing.assert_allclose(exp.variance, raw["UNCERT"].data, rtol=1e-6)
            assert exp.psf is not None and exp.psf.stamp_size == raw["PSFIMAGE"].data.shape[0]
            assert exp.xy0 == (raw[0].header["CUTMINX"] + 1, raw[0].header["CUTMINY"] + 1)
            # the packet's parent pixel position is where the WCS puts the DiaSource (PROVENANCE pitfall)
            x, y = exp.sky_to_pixel(source["ra"], source["dec"])
            assert abs(float(x) - source["x"]) < 0.01 and abs(float(y) - source["y"]) < 0.01
            assert exp.info.rotpa == pytest.approx(raw[0].header["ROTPA"])


def test_uncert_is_variance_on_real_difference(alerts):
    ratios = []
    for alert in alerts:
        exp = read_exposure(alert["cutoutDifference"])
        ring = np.ones(exp.shape, bool)
        ring[6:-6, 6:-6] = False  # the alert source sits at the centre
        pixels = exp.image[ring]
        mad_sigma = 1.4826 * np.median(np.abs(pixels - np.median(pixels)))
        ratios.append(mad_sigma / np.sqrt(np.median(exp.variance)))
    # as sigma the UNCERT values would be ~40x the scatter; as variance the ratio is ~1
    assert 0.8 < np.median(ratios) < 1.3


def test_path_gzip_and_stream_inputs_agree(alerts, tmp_path):
    data = alerts[0]["cutoutScience"]
    path = tmp_path / "cutout.fits"
    path.write_bytes(data)
    gz = tmp_path / "cutout.fits.gz"
    gz.write_bytes(gzip.compress(data))
    ref = read_exposure(data)
    for other in (read_exposure(path), read_exposure(gz), read_exposure(gzip.compress(data)),
                  read_exposure(io.BytesIO(data))):
        np.testing.assert_array_equal(other.image, ref.image)
        np.testing.assert_array_equal(other.variance, ref.variance)
        assert other.xy0 == ref.xy0


def _cutout(utype: str = "VarianceUncertainty", psf_size: int = 11, nan: bool = False) -> bytes:
    rng = np.random.default_rng(1)
    image = rng.normal(0, 10, (20, 20)).astype(np.float32)
    if nan:
        image[3, 4] = np.nan
    header = fits.Header()
    header.update(CUTMINX=100, CUTMINY=200, BUNIT="nJy", CRPIX1=10.0, CRPIX2=10.0, CRVAL1=150.0, CRVAL2=2.0,
                  PC1_1=-5.5e-5, PC1_2=0.0, PC2_1=0.0, PC2_2=5.5e-5, CDELT1=1.0, CDELT2=1.0)
    uncert = fits.ImageHDU(np.full((20, 20), 100.0 if utype != "StdDevUncertainty" else 10.0, np.float32),
                           name="UNCERT")
    uncert.header["UTYPE"] = utype
    psf = np.zeros((psf_size, psf_size))
    psf[psf_size // 2, psf_size // 2] = 1.0
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(image, header), uncert, fits.ImageHDU(psf, name="PSFIMAGE")]).writeto(buffer)
    return buffer.getvalue()


def test_uncertainty_kinds_and_nan_pixels():
    assert np.allclose(read_exposure(_cutout("StdDevUncertainty")).variance, 100.0)
    assert np.allclose(read_exposure(_cutout("InverseVariance")).variance, 0.01)
    exp = read_exposure(_cutout(nan=True))
    assert exp.mask.get("NO_DATA")[3, 4] and exp.mask.get("NO_DATA").sum() == 1
    assert exp.pixel_scale() == pytest.approx(0.198, rel=1e-3)  # TAN assumed, degrees per pixel


def test_bad_cutouts_name_the_problem():
    with pytest.raises(ExposureFormatError, match="UTYPE"):
        read_exposure(_cutout("Weird"))
    with pytest.raises(ExposureFormatError, match="PSFIMAGE.*odd"):
        read_exposure(_cutout(psf_size=10))
    with pytest.raises(ExposureFormatError, match="<FITS bytes>: not a readable FITS"):
        read_exposure(b"not a fits file at all" * 200)
