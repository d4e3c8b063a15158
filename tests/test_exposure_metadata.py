"""Header -> VisitInfo: band from physical filter names, times to MJD TAI, day_obs, warnings."""

from __future__ import annotations

import pytest
from astropy.io import fits

from skydp.exposure import ExposureFormatError
from skydp.exposure.metadata import band_from_filter, visit_info_from_headers

TAI_MINUS_UTC_2023 = 37.0 / 86400.0  # leap seconds since 2017


@pytest.mark.parametrize("name, band", [
    ("HSC-I", "i"), ("HSC-I2", "i"), ("HSC-R2", "r"), ("HSC-Y", "y"), ("NB0921", ""),
    ("r_57", "r"), ("y_10", "y"), ("z DECam SDSS c0004 9260.0 1520.0", "z"), ("g", "g"),
    ("F200W", ""), ("_unknown_", ""), ("", ""),
])
def test_band_from_physical_filter(name, band):
    assert band_from_filter(name) == band


@pytest.mark.parametrize("cards, mjd", [
    ({"MJD-OBS": 60000.25, "TIMESYS": "TAI"}, 60000.25),
    ({"MJD-OBS": 60000.25}, 60000.25 + TAI_MINUS_UTC_2023),  # FITS default time scale is UTC
    ({"DATE-OBS": "2023-02-25"}, 60000.0 + TAI_MINUS_UTC_2023),
    ({"DATE-OBS": "2023-02-25T06:00:00Z"}, 60000.25 + TAI_MINUS_UTC_2023),
    # afw's TIME-MID is mid-exposure: the start is half an exposure earlier.
    ({"TIME-MID": "2023-02-25T06:00:00Z", "EXPTIME": 864.0}, 60000.245 + TAI_MINUS_UTC_2023),
])
def test_start_time_in_tai(cards, mjd):
    info = visit_info_from_headers("f.fits", [fits.Header(cards)])
    assert info.mjd == pytest.approx(mjd, abs=1e-9)
    assert info.day_obs == 20230224  # 12 h before 2023-02-25 00:00-06:00


def test_primary_header_has_priority_and_problems_are_listed():
    primary = fits.Header({"VISIT": 2026032400012, "DETECTOR": "MULTIPLE", "BAND": "R"})
    image = fits.Header({"VISIT": 5, "AIRMASS": 1.3, "DATE-OBS": "garbage"})
    info = visit_info_from_headers("f.fits", [primary, image])
    assert (info.visit, info.band, info.airmass, info.detector) == (2026032400012, "r", 1.3, 0)
    text = " | ".join(info.warnings)
    assert "DETECTOR='MULTIPLE' is not a valid int" in text and "DATE-OBS='garbage'" in text
    assert "MJD-OBS" in text and "EXPTIME" in text


def test_band_outside_ugrizy_is_a_format_error():
    with pytest.raises(ExposureFormatError, match=r"^f.fits: BAND='V'"):
        visit_info_from_headers("f.fits", [fits.Header({"BAND": "V"})])


def test_values_that_do_not_apply_round_trip_without_a_warning():
    """A coadd has no airmass or pointing: written as FITS undefined values, read back as NaN and not
    reported missing; a header that lacks the keys altogether is still reported."""
    import math

    from skydp.exposure.info import VisitInfo
    from skydp.exposure.metadata import visit_info_to_header

    info = VisitInfo(instrument="skydp", visit=0, detector=0, band="r", physical_filter="r", day_obs=20260101,
                     mjd=61000.0, exptime=30.0, airmass=math.nan, boresight_ra=math.nan, boresight_dec=math.nan,
                     rotpa=math.nan, snap=None)
    header = visit_info_to_header(info)
    assert {"AIRMASS", "BORE-RA", "BORE-DEC", "ROTPA"} <= set(header)
    back = visit_info_from_headers("coadd.fits", [fits.Header.fromstring(header.tostring())])
    assert math.isnan(back.airmass) and math.isnan(back.rotpa) and back.warnings == []
    for key in ("AIRMASS", "BORE-RA", "BORE-DEC", "ROTPA"):
        del header[key]
    lacking = visit_info_from_headers("visit.fits", [header])
    assert lacking.warnings == ["missing metadata (defaults used): AIRMASS, BORE-RA, BORE-DEC, ROTPA"]
