"""Alert cutouts: 30x30 stamps as FITS bytes in the layout of the real LSSTCam alert packets.

Layout (as produced by ap_association's packageAlerts and seen in the 2026 LSSTCam alerts):
HDU0 float32 image in nJy with ``BUNIT``, ``CUTMINX``/``CUTMINY`` (parent pixel of the first
column/row minus one, so that FITS pixel p is parent pixel CUTMIN + p), ``ROTPA`` and a local
linear celestial WCS (CRVAL = the DiaSource position, CRPIX its 1-based cutout position, CD the
local Jacobian of the image WCS); HDU1 ``UNCERT`` float32 variance (``UTYPE =
'VarianceUncertainty'``); HDU2 ``PSFIMAGE`` float64 PSF kernel image at the position, summing to 1.
Unlike the real files, which omit CTYPE (leaving a reader to guess), we also write
``RA---TAN``/``DEC--TAN`` and CUNIT so the header is a complete celestial WCS.
Pixels of the stamp outside the image are NaN. ``ROTPA`` is left out when the image has none
(NaN, e.g. a coadd template), which the alert reader reads back as NaN.

The FITS bytes are written directly (fits_blocks) from header cards formatted once per image;
only the cutout position, its WCS numbers and the pixels change from cutout to cutout.
"""

from __future__ import annotations

import math

import numpy as np

from skydp.alerts.fits_blocks import card, data_bytes, header_bytes, image_cards
from skydp.exposure import Exposure

CUTOUT_SIZE = 30
_JACOBIAN_STEP = 0.5  # px: central differences of the image WCS over +-half a pixel


def cutout_bbox(x: np.ndarray, y: np.ndarray, size: int = CUTOUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Parent pixels (x0, y0) of the first column/row of ``size`` boxes centred as close as possible on (x, y)."""
    half = (size - 1) / 2.0
    return (np.floor(np.asarray(x, float) - half + 0.5).astype(np.int64),
            np.floor(np.asarray(y, float) - half + 0.5).astype(np.int64))


def cutout_fits(exposure: Exposure, ra: float, dec: float, size: int = CUTOUT_SIZE) -> bytes:
    """FITS bytes of a ``size`` x ``size`` cutout of ``exposure`` centred on (ra, dec) degrees."""
    return cutouts_fits(exposure, np.array([ra], float), np.array([dec], float), size)[0]


def cutouts_fits(exposure: Exposure, ra: np.ndarray, dec: np.ndarray, size: int = CUTOUT_SIZE) -> list[bytes]:
    """FITS bytes of ``size`` x ``size`` cutouts of ``exposure`` centred on each (ra, dec) degrees."""
    if size < 2:
        raise ValueError(f"cutout size must be at least 2 pixels, got {size}")
    ra, dec = (np.atleast_1d(np.asarray(v, float)) for v in (ra, dec))
    if ra.shape != dec.shape or ra.ndim != 1:
        raise ValueError(f"cutout ra and dec must be 1-d arrays of one length, got shapes {ra.shape}, {dec.shape}")
    if ra.size == 0:
        return []
    x, y = (np.asarray(v, float).ravel() for v in exposure.sky_to_pixel(ra, dec))
    off = ~(np.isfinite(x) & np.isfinite(y))
    if off.any():
        k = int(np.flatnonzero(off)[0])
        raise ValueError(f"cutout position ra={ra[k]}, dec={dec[k]} does not map to a pixel of the image")
    x0, y0 = cutout_bbox(x, y, size)
    cd = _local_jacobians(exposure, x, y, ra, dec)
    layout = _Layout(exposure, size)
    return [
        layout.fits(int(x0[k]), int(y0[k]), x[k], y[k], ra[k], dec[k], cd[k]) for k in range(ra.size)
    ]


class _Layout:
    """The cutout HDUs of one image: constant cards formatted once, per-cutout numbers filled in."""

    def __init__(self, exposure: Exposure, size: int) -> None:
        self.exposure, self.size = exposure, size
        rotpa = float(exposure.info.rotpa)
        self.primary_head = image_cards((size, size), np.dtype(np.float32), primary=True)
        self.rotpa = [card("ROTPA", rotpa, "Pos angle in deg of focal plane +Y wrt North")] if math.isfinite(rotpa) else []
        self.units = [card("BUNIT", "nJy"), card("WCSAXES", 2, "Number of coordinate axes")]
        self.axes = [
            card("CDELT1", 1.0, "[deg] Coordinate increment at reference point"),
            card("CDELT2", 1.0, "[deg] Coordinate increment at reference point"),
            card("CUNIT1", "deg", "Units of coordinate increment and value"),
            card("CUNIT2", "deg", "Units of coordinate increment and value"),
            card("CTYPE1", "RA---TAN", "Right ascension, gnomonic projection"),
            card("CTYPE2", "DEC--TAN", "Declination, gnomonic projection"),
        ]
        self.lonpole = card("LONPOLE", 180.0, "[deg] Native longitude of celestial pole")
        self.tail = [card("MJDREF", 0.0, "[d] MJD of fiducial time"), card("RADESYS", "ICRS", "Equatorial coordinate system")]
        self.uncert_header = b"" if exposure.variance is None else header_bytes(
            image_cards((size, size), np.dtype(np.float32), primary=False)
            + [card("UTYPE", "VarianceUncertainty"), card("EXTNAME", "UNCERT", "extension name")])
        self.psf_header = b"" if exposure.psf is None else header_bytes(
            image_cards((exposure.psf.stamp_size,) * 2, np.dtype(np.float64), primary=False)
            + [card("EXTNAME", "PSFIMAGE", "extension name")])

    def fits(self, x0: int, y0: int, x: float, y: float, ra: float, dec: float, cd: np.ndarray) -> bytes:
        """FITS bytes of the cutout whose first pixel is parent (x0, y0), centred on (x, y) = (ra, dec)."""
        exposure, size = self.exposure, self.size
        header = header_bytes(
            self.primary_head + [card("CUTMINX", x0 - 1), card("CUTMINY", y0 - 1)] + self.rotpa + self.units
            + [card("CRPIX1", x - x0 + 1.0, "Pixel coordinate of reference point"),
               card("CRPIX2", y - y0 + 1.0, "Pixel coordinate of reference point"),
               card("PC1_1", float(cd[0, 0]), "Coordinate transformation matrix element"),
               card("PC1_2", float(cd[0, 1]), "Coordinate transformation matrix element"),
               card("PC2_1", float(cd[1, 0]), "Coordinate transformation matrix element"),
               card("PC2_2", float(cd[1, 1]), "Coordinate transformation matrix element")]
            + self.axes
            + [card("CRVAL1", ra, "[deg] Coordinate value at reference point"),
               card("CRVAL2", dec, "[deg] Coordinate value at reference point"), self.lonpole,
               card("LATPOLE", dec, "[deg] Native latitude of celestial pole")]
            + self.tail)
        parts = [header, data_bytes(_stamp(exposure.image, exposure.xy0, x0, y0, size))]
        if exposure.variance is not None:
            parts += [self.uncert_header, data_bytes(_stamp(exposure.variance, exposure.xy0, x0, y0, size))]
        if exposure.psf is not None:
            parts += [self.psf_header, data_bytes(np.asarray(exposure.psf.image(x, y), np.float64))]
        return b"".join(parts)


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


def _local_jacobians(exposure: Exposure, x: np.ndarray, y: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """(N, 2, 2) CD matrices of local TAN WCSs: tangent point (ra, dec), d(east, north)/d(x, y) of the image WCS."""
    step = _JACOBIAN_STEP
    px = np.stack([x + step, x - step, x, x])
    py = np.stack([y, y, y + step, y - step])
    s_ra, s_dec = (np.asarray(v, float).reshape(px.shape) for v in exposure.pixel_to_sky(px.ravel(), py.ravel()))
    east = (np.mod(s_ra - ra + 180.0, 360.0) - 180.0) * np.cos(np.radians(dec))
    north = s_dec - dec
    cd = np.empty((x.size, 2, 2))
    cd[:, 0, 0], cd[:, 0, 1] = (east[0] - east[1]) / (2 * step), (east[2] - east[3]) / (2 * step)
    cd[:, 1, 0], cd[:, 1, 1] = (north[0] - north[1]) / (2 * step), (north[2] - north[3]) / (2 * step)
    return cd
