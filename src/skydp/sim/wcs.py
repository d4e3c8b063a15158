"""TAN-SIP WCS of each detector and the local pixel-to-sky Jacobians used for drawing.

All detectors of a visit share one projection: tangent point at the boresight, 0.2"/pixel, the
detector +y axis at position angle ROTPA east of north, and east at -x when ROTPA = 0 (the sky seen
from the ground, CD determinant < 0). Optical distortion is radial about the boresight,
r' = r (1 + k r^2), written exactly as SIP A/B terms (A_3_0 = A_1_2 = B_2_1 = B_0_3 = k); k is set so
that the farthest detector corner moves by ``preset.distortion_px``. The inverse AP/BP polynomials
(order 5) are fitted by least squares over the detector so that other readers have them too; the
simulator itself maps sky to pixels with astropy's exact iterative inverse (``all_world2pix``).

The astropy WCS written to the file is the single source of truth: object positions come from it,
and GalSim draws every object through a local affine Jacobian taken from it at the object's position
(finite differences over +-0.5 px), so pixels and the written WCS agree by construction.
"""

from __future__ import annotations

import galsim
import numpy as np
from astropy.wcs import WCS, Sip

PIXEL_SCALE = 0.2  # arcsec / pixel
SIP_ORDER = 3
SIP_INVERSE_ORDER = 5


def radial_distortion_coefficient(distortion_px: float, radius_px: float) -> float:
    """k such that r (1 + k r^2) moves a point at ``radius_px`` by ``distortion_px`` pixels."""
    return distortion_px / radius_px**3


def _poly_terms(u: np.ndarray, v: np.ndarray, order: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    powers = [(p, q) for p in range(order + 1) for q in range(order + 1 - p)]
    return powers, np.stack([u**p * v**q for p, q in powers], axis=1)


def detector_wcs(
    boresight_ra: float,
    boresight_dec: float,
    rotpa: float,
    offset: tuple[float, float],
    shape: tuple[int, int],
    k: float,
) -> WCS:
    """Celestial TAN-SIP WCS of a detector whose centre sits at focal-plane ``offset`` (pixels).

    Pixel coordinates are 0-based array coordinates of that detector (use origin=0 with astropy).
    """
    nx, ny = shape
    theta = np.radians(rotpa)
    scale = PIXEL_SCALE / 3600.0
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    w.wcs.crval = [boresight_ra, boresight_dec]
    # boresight in this detector's 0-based pixels, then 1-based for FITS
    crpix0 = ((nx - 1) / 2.0 - offset[0], (ny - 1) / 2.0 - offset[1])
    w.wcs.crpix = [crpix0[0] + 1.0, crpix0[1] + 1.0]
    w.wcs.cd = scale * np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "ICRS"

    a = np.zeros((SIP_ORDER + 1, SIP_ORDER + 1))
    b = np.zeros_like(a)
    a[3, 0] = a[1, 2] = k
    b[2, 1] = b[0, 3] = k
    # inverse: fit U - u as a polynomial in the distorted U over the detector (plus a margin)
    gx, gy = np.meshgrid(np.linspace(-0.1 * nx, 1.1 * nx, 41), np.linspace(-0.1 * ny, 1.1 * ny, 41))
    u = gx.ravel() - crpix0[0]
    v = gy.ravel() - crpix0[1]
    r2 = u * u + v * v
    big_u, big_v = u * (1 + k * r2), v * (1 + k * r2)
    powers, design = _poly_terms(big_u, big_v, SIP_INVERSE_ORDER)
    coef_u = np.linalg.lstsq(design, u - big_u, rcond=None)[0]
    coef_v = np.linalg.lstsq(design, v - big_v, rcond=None)[0]
    ap = np.zeros((SIP_INVERSE_ORDER + 1, SIP_INVERSE_ORDER + 1))
    bp = np.zeros_like(ap)
    for (p, q), cu, cv in zip(powers, coef_u, coef_v):
        ap[p, q], bp[p, q] = cu, cv
    w.sip = Sip(a, b, ap, bp, w.wcs.crpix)
    w.pixel_shape = (nx, ny)
    return w


def sky_to_pixel(wcs: WCS, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel positions of (ra, dec) in degrees, exact SIP inverse."""
    x, y = wcs.all_world2pix(np.asarray(ra, float), np.asarray(dec, float), 0, tolerance=1e-10, maxiter=50)
    return x, y


def local_jacobians(wcs: WCS, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d(u, v)/d(x, y) in arcsec per pixel at each position, shape (N, 2, 2).

    (u, v) are GalSim's local sky coordinates: u points west (-RA), v north.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    h = 0.5
    xs = np.concatenate([x + h, x - h, x, x])
    ys = np.concatenate([y, y, y + h, y - h])
    ra, dec = wcs.all_pix2world(xs, ys, 0)
    ra0, dec0 = wcs.all_pix2world(x, y, 0)
    n = x.size
    dra = (ra.reshape(4, n) - ra0 + 180.0) % 360.0 - 180.0
    u = -dra * np.cos(np.radians(dec0)) * 3600.0
    v = (dec.reshape(4, n) - dec0) * 3600.0
    jac = np.empty((n, 2, 2))
    jac[:, 0, 0] = (u[0] - u[1]) / (2 * h)
    jac[:, 0, 1] = (u[2] - u[3]) / (2 * h)
    jac[:, 1, 0] = (v[0] - v[1]) / (2 * h)
    jac[:, 1, 1] = (v[2] - v[3]) / (2 * h)
    return jac


def galsim_jacobian(jac: np.ndarray) -> galsim.JacobianWCS:
    """GalSim local WCS from one (2, 2) Jacobian of ``local_jacobians``."""
    return galsim.JacobianWCS(jac[0, 0], jac[0, 1], jac[1, 0], jac[1, 1])
