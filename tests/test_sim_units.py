"""Unit checks of the simulator's models: WCS geometry, galaxy orientation, light curves, photometry."""

from __future__ import annotations

import galsim
import numpy as np
import pytest

from skydp.sim.bands import blackbody_colours, electrons_per_njy, mag_to_njy, njy_to_mag
from skydp.sim.observing import airmass, detector_offsets, focal_plane_radius
from skydp.sim.presets import PRESETS
from skydp.sim.sky import composite_half_light_radius, offset_position, transient_light_curve
from skydp.sim.wcs import detector_wcs, galsim_jacobian, local_jacobians, radial_distortion_coefficient, sky_to_pixel


def test_wcs_orientation_scale_and_distortion():
    preset = PRESETS["survey"]
    radius = focal_plane_radius(preset)
    k = radial_distortion_coefficient(preset.distortion_px, radius)
    offsets = detector_offsets(preset)
    corner_det = int(np.argmax(np.hypot(*offsets.T)))
    w = detector_wcs(53.0, -28.0, 30.0, tuple(offsets[corner_det]), preset.detector_shape, k)
    jac = local_jacobians(w, np.array([2047.5]), np.array([2047.5]))[0]
    # +y at position angle 30 deg east of north: (u = west, v = north) = 0.2" * (-sin 30, cos 30)
    assert jac[:, 1] == pytest.approx(0.2 * np.array([-np.sin(np.radians(30)), np.cos(np.radians(30))]), abs=2e-4)
    assert abs(np.linalg.det(jac)) == pytest.approx(0.04, rel=1e-3)
    # distortion: the corner farthest from the boresight moves by distortion_px w.r.t. pure TAN
    nx, ny = preset.detector_shape
    far = np.array([[0.0 if offsets[corner_det, 0] < 0 else nx - 1.0, 0.0 if offsets[corner_det, 1] < 0 else ny - 1.0]])
    ra, dec = w.all_pix2world(far[:, 0], far[:, 1], 0)
    tan = np.array(w.wcs_world2pix(ra, dec, 0)).ravel()
    assert np.hypot(*(tan - far.ravel())) == pytest.approx(preset.distortion_px, rel=0.01)
    # sky_to_pixel inverts pixel_to_sky exactly; AP/BP (for other readers) to 1e-3 px
    x, y = np.meshgrid(np.linspace(0, nx - 1, 7), np.linspace(0, ny - 1, 7))
    ra, dec = w.all_pix2world(x.ravel(), y.ravel(), 0)
    bx, by = sky_to_pixel(w, ra, dec)
    assert np.max(np.hypot(bx - x.ravel(), by - y.ravel())) < 1e-6
    foc = w.sip_pix2foc(np.c_[x.ravel(), y.ravel()] + 1, 1)
    assert np.max(np.abs(w.sip_foc2pix(foc, 1) - 1 - np.c_[x.ravel(), y.ravel()])) < 1e-3


def test_galaxy_position_angle_is_east_of_north_on_the_image():
    """Draw an elongated galaxy through a rotated WCS; its major axis must point at the truth PA."""
    w = detector_wcs(53.0, -28.0, 37.0, (0.0, 0.0), (201, 201), 0.0)
    jac = galsim_jacobian(local_jacobians(w, np.array([100.0]), np.array([100.0]))[0])
    for pa in (10.0, 75.0, 140.0):
        gal = galsim.Exponential(half_light_radius=1.5).shear(g=0.5, beta=(90.0 + pa) * galsim.degrees)
        img = gal.drawImage(nx=101, ny=101, wcs=jac).array
        yy, xx = np.mgrid[:101, :101] - 50.0
        ixx, iyy, ixy = ((img * q).sum() / img.sum() for q in (xx * xx, yy * yy, xx * yy))
        theta = 0.5 * np.arctan2(2 * ixy, ixx - iyy)  # major axis angle in the pixel frame
        ra, dec = w.all_pix2world([100.0, 100.0 + 10 * np.cos(theta)], [100.0, 100.0 + 10 * np.sin(theta)], 0)
        measured = np.degrees(np.arctan2((ra[1] - ra[0]) * np.cos(np.radians(dec[0])), dec[1] - dec[0])) % 180.0
        assert measured == pytest.approx(pa, abs=0.5)


def test_transient_light_curve_is_zero_before_explosion_and_peaks_at_one():
    rise, decline = np.array([3.0]), np.array([25.0])
    t = np.linspace(-10, 100, 110001)
    lc = transient_light_curve(t, rise, decline)
    assert np.all(lc[t <= 0] == 0) and lc.max() == pytest.approx(1.0, abs=1e-6)
    assert t[np.argmax(lc)] == pytest.approx(3.0 * np.log(28.0 / 3.0), abs=2e-3)


def test_composite_half_light_radius_limits_and_galsim():
    hlr = composite_half_light_radius(np.array([1.0, 1.0, 1.0]), np.array([0.5, 0.5, 0.5]), np.array([0.0, 1.0, 0.3]))
    assert hlr[:2] == pytest.approx([1.0, 0.5], rel=1e-6)
    disk = galsim.Exponential(half_light_radius=1.0, flux=0.7)
    gal = galsim.Add(disk, galsim.DeVaucouleurs(half_light_radius=0.5, flux=0.3))
    assert hlr[2] == pytest.approx(gal.calculateHLR(scale=0.01, size=2000), rel=5e-3)


def test_photometric_scale_and_colours():
    assert float(njy_to_mag(mag_to_njy(24.0))) == pytest.approx(24.0)
    assert float(mag_to_njy(31.4)) == pytest.approx(1.0)
    # r: 1 e-/s at AB 28.36 -> a 28.36 mag source gives 30 e- in 30 s at airmass 1
    assert float(mag_to_njy(28.36)) * electrons_per_njy("r", 30.0, 1.0) == pytest.approx(30.0, rel=1e-9)
    assert electrons_per_njy("u", 30.0, 1.5) < electrons_per_njy("u", 30.0, 1.0)
    colours = blackbody_colours(np.array([3500.0, 6000.0, 15000.0]))
    g_minus_r = -2.5 * np.log10(colours[:, 1] / colours[:, 2])
    assert g_minus_r[0] > g_minus_r[1] > g_minus_r[2] and np.allclose(colours[:, 2], 1.0)
    with pytest.raises(ValueError, match="unknown band 'w'"):
        electrons_per_njy("w", 30.0, 1.0)


def test_airmass_and_offsets():
    # at transit the zenith distance is |dec - latitude|
    from skydp.sim.observing import SITE_LATITUDE, local_sidereal_time

    mjd = 61360.2
    ra = float(local_sidereal_time(mjd))
    z = np.radians(abs(-28.1 - SITE_LATITUDE))
    assert float(airmass(ra, -28.1, mjd)) == pytest.approx(1.0 / np.cos(z), rel=1e-3)
    assert np.isinf(airmass(ra + 180.0, 40.0, mjd))
    ra1, dec1 = offset_position(53.0, -28.0, np.array([0.5]), np.array([90.0]))
    assert dec1[0] == pytest.approx(-28.0, abs=0.01) and ra1[0] > 53.0  # east is +RA
