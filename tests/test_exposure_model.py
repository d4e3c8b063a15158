"""Exposure, Mask and VisitInfo behaviour: parent coordinates, local pixel scale, corners, planes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from skydp.exposure import DEFAULT_MASK_PLANES, Exposure, Mask, VisitInfo


def _tan(cdelt_arcsec: float, crpix: tuple[float, float], crval=(30.0, -10.0)) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = crval
    wcs.wcs.crpix = crpix
    wcs.wcs.cdelt = [-cdelt_arcsec / 3600.0, cdelt_arcsec / 3600.0]
    return wcs


def _exposure(wcs: WCS, shape=(40, 50), xy0=(0, 0)) -> Exposure:
    return Exposure(image=np.zeros(shape, np.float32), variance=np.ones(shape, np.float32),
                    mask=Mask.empty(shape), wcs=wcs, xy0=xy0)


def test_pixel_scale_follows_tan_projection_away_from_tangent_point():
    # Gnomonic: the projected area element shrinks as cos^3(theta) at angular distance theta from
    # the tangent point, so the linear scale (sqrt of the area) goes as cos^1.5(theta).
    cdelt = 1.0
    wcs = _tan(cdelt, crpix=(1.0, 1.0))
    exp = _exposure(wcs)
    assert exp.pixel_scale(0.0, 0.0) == pytest.approx(cdelt, rel=1e-9)
    offset = 36000.0  # 10 degrees along x on the tangent plane at 1"/px
    ra, dec = exp.pixel_to_sky(offset, 0.0)
    theta = SkyCoord(30.0, -10.0, unit="deg").separation(SkyCoord(ra, dec, unit="deg")).rad
    assert theta == pytest.approx(math.atan(math.radians(10.0)), rel=1e-9)  # 10 deg on the tangent plane
    assert exp.pixel_scale(offset, 0.0) == pytest.approx(cdelt * math.cos(theta) ** 1.5, rel=1e-6)
    scales = exp.pixel_scale(np.array([0.0, offset]), np.array([0.0, 0.0]))
    assert scales.shape == (2,) and scales[1] < scales[0]


def test_parent_coordinates_and_bbox():
    wcs = _tan(0.2, crpix=(25.5, 20.5))
    exp = _exposure(wcs, xy0=(1000, 2000))
    assert exp.bbox == (1000, 2000, 1050, 2040) and (exp.width, exp.height) == (50, 40)
    ra, dec = exp.pixel_to_sky(1024.5, 2019.5)  # array pixel (24.5, 19.5) = FITS CRPIX (25.5, 20.5)
    assert (float(ra), float(dec)) == pytest.approx((30.0, -10.0), abs=1e-12)
    x, y = exp.sky_to_pixel(30.0, -10.0)
    assert (float(x), float(y)) == pytest.approx((1024.5, 2019.5), abs=1e-8)
    # Default pixel scale is taken at the image centre, which is the tangent point here.
    assert exp.pixel_scale() == pytest.approx(0.2, rel=1e-9)


def test_corners_are_outer_pixel_edges_in_order_ll_ul_ur_lr():
    exp = _exposure(_tan(0.2, crpix=(25.5, 20.5)), xy0=(5, 5))
    ra, dec = exp.corners()
    # East is left (RA grows to -x), north is up: lower corners have the lower Dec, left ones the higher RA.
    assert dec[0] < dec[1] and dec[3] < dec[2] and ra[0] > ra[3] and ra[1] > ra[2]
    # Width of the footprint: 50 px * 0.2" along x, 40 px along y (edges, not centres).
    width = SkyCoord(ra[0], dec[0], unit="deg").separation(SkyCoord(ra[3], dec[3], unit="deg")).arcsec
    height = SkyCoord(ra[0], dec[0], unit="deg").separation(SkyCoord(ra[1], dec[1], unit="deg")).arcsec
    assert width == pytest.approx(10.0, rel=1e-6) and height == pytest.approx(8.0, rel=1e-6)


def test_copy_is_deep():
    exp = _exposure(_tan(0.2, crpix=(1.0, 1.0)))
    exp.info.warnings.append("x")
    dup = exp.copy()
    dup.image[0, 0] = 5
    dup.mask.set("NEW", np.ones(dup.shape, bool))
    dup.wcs.wcs.crval = [0.0, 0.0]
    dup.info.warnings.append("y")
    assert exp.image[0, 0] == 0 and "NEW" not in exp.mask.planes
    assert exp.wcs.wcs.crval[0] == 30.0 and exp.info.warnings == ["x"]


def test_exposure_validates_shapes_and_wcs():
    wcs = _tan(0.2, crpix=(1.0, 1.0))
    with pytest.raises(ValueError, match="variance shape"):
        Exposure(np.zeros((4, 4)), np.zeros((3, 4)), Mask.empty((4, 4)), wcs)
    with pytest.raises(ValueError, match="mask shape"):
        Exposure(np.zeros((4, 4)), None, Mask.empty((4, 5)), wcs)
    linear = WCS(naxis=2)
    with pytest.raises(ValueError, match="celestial"):
        Exposure(np.zeros((4, 4)), None, Mask.empty((4, 4)), linear)


def test_mask_planes():
    mask = Mask.empty((3, 3))
    assert mask.planes == DEFAULT_MASK_PLANES and mask.planes is not DEFAULT_MASK_PLANES
    assert mask.bitmask("BAD", "SAT", "NO_DATA") == 1 | 2 | 256
    assert mask.add_plane("STREAK") == 9 and mask.add_plane("streak") == 9
    where = np.zeros((3, 3), bool)
    where[1, 2] = True
    mask.set("FAKE", where)
    assert mask.planes["FAKE"] == 10 and mask.array[1, 2] == 1 << 10
    mask.set("BAD", where)
    assert mask.array[1, 2] == (1 << 10) | 1 and np.array_equal(mask.get("FAKE"), where)
    with pytest.raises(KeyError, match="NOPE"):
        mask.bitmask("NOPE")
    with pytest.raises(ValueError, match="letters"):
        mask.add_plane("bad name")
    # uint16 planes from afw files become int32 with the same bits; bit 31 is usable.
    assert Mask(np.array([[65535]], np.uint16), {"A": 0}).array.dtype == np.int32
    full = Mask.empty((1, 1), {f"P{i}": i for i in range(32)})
    assert full.bitmask("P31") == np.iinfo(np.int32).min
    with pytest.raises(ValueError, match="all 32 bits"):
        full.add_plane("ONE_MORE")
    with pytest.raises(ValueError, match="share a bit"):
        Mask.empty((1, 1), {"A": 1, "B": 1})


def test_visit_info_validation_and_mid_time():
    info = VisitInfo(band="g", mjd=60000.0, exptime=30.0)
    assert info.mjd_mid == pytest.approx(60000.0 + 15.0 / 86400.0, abs=1e-12)
    with pytest.raises(ValueError, match="band"):
        VisitInfo(band="V")
    with pytest.raises(ValueError, match="snap"):
        VisitInfo(snap=2)
