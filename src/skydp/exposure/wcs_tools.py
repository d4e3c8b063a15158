"""Celestial WCS helpers: parse/validate from a header, write back, invert SIP, local pixel scale."""

from __future__ import annotations

import warnings

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning, NoConvergence

from .errors import ExposureFormatError

# Time keys astropy copies from the header into the WCS; they belong to the PRIMARY header only.
_TIME_KEYS = ("DATE-OBS", "MJD-OBS", "DATE-AVG", "MJD-AVG", "DATE-BEG", "MJD-BEG", "DATE-END",
              "MJD-END", "DATEREF", "MJDREF", "MJDREFI", "MJDREFF", "TIMESYS", "TIMEUNIT")


def celestial_wcs_from_header(path: str, header: fits.Header, shape: tuple[int, int]) -> WCS:
    """Primary (key ' ') 2-D celestial WCS of an image header, TAN or TAN-SIP.

    Alternate WCSs (afw's 'A' = parent pixel frame) are ignored. Raises ExposureFormatError naming
    the file when the WCS is absent, not celestial, or gives no finite sky position at the centre.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, key=" ", naxis=2, relax=True)
    except Exception as exc:  # astropy/wcslib raise many unrelated types for malformed WCS cards
        raise ExposureFormatError(f"{path}: unparseable WCS ({type(exc).__name__}: {exc})") from exc
    if not wcs.is_celestial:
        ctypes = list(wcs.wcs.ctype)
        raise ExposureFormatError(f"{path}: no celestial WCS in the image header (CTYPE={ctypes})")
    ny, nx = shape
    ra, dec = wcs.all_pix2world((nx - 1) / 2.0, (ny - 1) / 2.0, 0)
    if not (np.isfinite(ra) and np.isfinite(dec)):
        raise ExposureFormatError(f"{path}: WCS gives no finite sky position at the image centre")
    return wcs


def wcs_to_header(wcs: WCS) -> fits.Header:
    """FITS cards of a celestial WCS including SIP terms (relax=True), without time keys."""
    header = wcs.to_header(relax=True)
    for key in _TIME_KEYS:
        header.remove(key, ignore_missing=True, remove_all=True)
    return header


def sky_to_array(wcs: WCS, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Invert the full WCS (SIP included) iteratively; NaN where the inversion diverges."""
    ra, dec = np.broadcast_arrays(np.asarray(ra, dtype=float), np.asarray(dec, dtype=float))
    world = np.column_stack([ra.ravel(), dec.ravel()])
    try:
        pix = wcs.all_world2pix(world, 0, tolerance=1e-8, maxiter=50, adaptive=True, quiet=False)
    except NoConvergence as exc:
        pix = np.array(exc.best_solution, dtype=float)
        if exc.divergent is not None:
            pix[exc.divergent] = np.nan
    return pix[:, 0].reshape(ra.shape), pix[:, 1].reshape(ra.shape)


def _tangent_plane(ra: np.ndarray, dec: np.ndarray, ra0: np.ndarray, dec0: np.ndarray):
    """Gnomonic projection (degrees) of (ra, dec) about (ra0, dec0); all inputs in degrees."""
    ra, dec, ra0, dec0 = (np.radians(v) for v in (ra, dec, ra0, dec0))
    cos_c = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    xi = np.cos(dec) * np.sin(ra - ra0) / cos_c
    eta = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cos_c
    return np.degrees(xi), np.degrees(eta)


def local_pixel_scale(wcs: WCS, x: np.ndarray, y: np.ndarray, step: float = 0.5) -> np.ndarray:
    """sqrt|det J| of the full pixel->sky map at array pixel (x, y), in arcsec/pixel.

    J is taken by central differences (+-``step`` px) on the tangent plane at that point, so it
    includes SIP distortion and projection effects that make the scale vary over a visit image.
    """
    x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    px = np.stack([x, x + step, x - step, x, x], axis=-1).ravel()
    py = np.stack([y, y, y, y + step, y - step], axis=-1).ravel()
    ra, dec = wcs.all_pix2world(px, py, 0)
    ra = ra.reshape(x.shape + (5,))
    dec = dec.reshape(x.shape + (5,))
    xi, eta = _tangent_plane(ra, dec, ra[..., :1], dec[..., :1])
    dxi_dx = (xi[..., 1] - xi[..., 2]) / (2 * step)
    deta_dx = (eta[..., 1] - eta[..., 2]) / (2 * step)
    dxi_dy = (xi[..., 3] - xi[..., 4]) / (2 * step)
    deta_dy = (eta[..., 3] - eta[..., 4]) / (2 * step)
    return np.sqrt(np.abs(dxi_dx * deta_dy - dxi_dy * deta_dx)) * 3600.0
