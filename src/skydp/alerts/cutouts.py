"""Alert cutouts: 30x30 stamps as FITS bytes in the layout of the real LSSTCam alert packets.

Layout (as produced by ap_association's packageAlerts and seen in the 2026 LSSTCam alerts):
HDU0 float32 image in nJy with ``BUNIT``, ``CUTMINX``/``CUTMINY`` (parent pixel of the first
column/row minus one, so that FITS pixel p is parent pixel CUTMIN + p), ``ROTPA`` and a local
linear celestial WCS (CRVAL = the DiaSource position, CRPIX its 1-based cutout position, CD the
local Jacobian of the image WCS); HDU1 ``UNCERT`` float32 variance (``UTYPE =
'VarianceUncertainty'``); HDU2 ``PSFIMAGE`` float64 PSF kernel image at the position, summing to 1.
Unlike the real files, which omit CTYPE (leaving a reader to guess), we also write
``RA---TAN``/``DEC--TAN`` and CUNIT so the header is a complete celestial WCS.
Pixels of the stamp outside the image are NaN.
"""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from skydp.exposure import Exposure

CUTOUT_SIZE = 30


def cutout_bbox(x: float, y: float, size: int = CUTOUT_SIZE) -> tuple[int, int]:
    """Parent pixel (x0, y0) of the first column/row of a ``size`` box centred as close as possible on (x, y)."""
    half = (size - 1) / 2.0
    return int(np.floor(x - half + 0.5)), int(np.floor(y - half + 0.5))


def cutout_fits(exposure: Exposure, ra: float, dec: float, size: int = CUTOUT_SIZE) -> bytes:
    """FITS bytes of a ``size`` x ``size`` cutout of ``exposure`` centred on (ra, dec) degrees."""
    if size < 2:
        raise ValueError(f"cutout size must be at least 2 pixels, got {size}")
    x, y = (float(np.asarray(v).ravel()[0]) for v in exposure.sky_to_pixel(np.array([ra]), np.array([dec])))
    if not (np.isfinite(x) and np.isfinite(y)):
        raise ValueError(f"cutout position ra={ra}, dec={dec} does not map to a pixel of the image")
    x0, y0 = cutout_bbox(x, y, size)
    image = _stamp(exposure.image, exposure.xy0, x0, y0, size)
    header = fits.Header()
    header["CUTMINX"] = x0 - 1
    header["CUTMINY"] = y0 - 1
    header["ROTPA"] = (float(exposure.info.rotpa), "Pos angle in deg of focal plane +Y wrt North")
    header["BUNIT"] = "nJy"
    header.extend(_local_wcs(exposure, x, y, ra, dec, x0, y0).to_header(), update=True)
    hdus = [fits.PrimaryHDU(image, header=header)]
    if exposure.variance is not None:
        uncert = fits.ImageHDU(_stamp(exposure.variance, exposure.xy0, x0, y0, size), name="UNCERT")
        uncert.header["UTYPE"] = "VarianceUncertainty"
        hdus.append(uncert)
    if exposure.psf is not None:
        hdus.append(fits.ImageHDU(np.asarray(exposure.psf.image(x, y), np.float64), name="PSFIMAGE"))
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer, output_verify="ignore")  # built valid here; verifying costs ~1 ms
    return buffer.getvalue()


def _stamp(plane: np.ndarray, xy0: tuple[int, int], x0: int, y0: int, size: int) -> np.ndarray:
    """``size`` x ``size`` float32 stamp whose [0, 0] is parent pixel (x0, y0); NaN off the image."""
    out = np.full((size, size), np.nan, np.float32)
    ny, nx = plane.shape
    c0, r0 = x0 - xy0[0], y0 - xy0[1]
    cs, ce = max(c0, 0), min(c0 + size, nx)
    rs, re = max(r0, 0), min(r0 + size, ny)
    if cs < ce and rs < re:
        out[rs - r0:re - r0, cs - c0:ce - c0] = plane[rs:re, cs:ce]
    return out


def _local_wcs(exposure: Exposure, x: float, y: float, ra: float, dec: float, x0: int, y0: int) -> WCS:
    """TAN WCS of the cutout: tangent point (ra, dec) at the position, CD = local image Jacobian."""
    step = 0.5
    px = np.array([x + step, x - step, x, x])
    py = np.array([y, y, y + step, y - step])
    s_ra, s_dec = exposure.pixel_to_sky(px, py)
    east = (np.mod(np.asarray(s_ra) - ra + 180.0, 360.0) - 180.0) * np.cos(np.radians(dec))
    north = np.asarray(s_dec) - dec
    cd = np.array([
        [(east[0] - east[1]) / (2 * step), (east[2] - east[3]) / (2 * step)],
        [(north[0] - north[1]) / (2 * step), (north[2] - north[3]) / (2 * step)],
    ])
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [x - x0 + 1.0, y - y0 + 1.0]
    wcs.wcs.cd = cd
    return wcs
