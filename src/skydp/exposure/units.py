"""Pixel units: the factor that brings a file's pixels to nJy (per pixel), from BUNIT and zero points."""

from __future__ import annotations

import math
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .wcs_tools import local_pixel_scale

_COUNT_UNITS = (u.ct, u.adu, u.electron, u.Unit("DN"))
_COUNT_WORDS = {"count", "counts", "cts", "adus", "electrons", "e-", "dn", "data number"}
_ARCSEC2_TO_SR = (math.pi / 180.0 / 3600.0) ** 2
_AB_ZERO_NJY = 3631.0e9  # AB magnitude 0 in nJy


@dataclass(frozen=True)
class PixelCalibration:
    """Multiply pixels by ``factor`` (variance by factor**2) to get nJy; ``bunit`` is the result's unit."""

    factor: float
    bunit: str
    warning: str | None = None


def _parse_unit(text: str) -> u.UnitBase | None:
    """astropy unit for a BUNIT string; retried case-insensitively unless milli/mega is ambiguous."""
    for candidate in (text, text.lower().replace("jy", "Jy")):
        if candidate != text and candidate.startswith("mJy"):
            return None  # "MJY" could be mega- or milli-jansky
        try:
            return u.Unit(candidate)
        except ValueError:
            continue
    return None


def _is_counts(text: str, unit: u.UnitBase | None) -> bool:
    if text.strip().lower() in _COUNT_WORDS:
        return True
    return unit is not None and any(unit == count for count in _COUNT_UNITS)


def _pixel_solid_angle_sr(headers: list[fits.Header], wcs: WCS, shape: tuple[int, int]) -> float:
    """Pixel solid angle: PIXAR_SR, else PIXAR_A2, else the WCS pixel area at the image centre.

    The true pixel area varies over a wide or distorted image; one value is right for resampled
    mosaics (JWST i2d, the reason this unit appears) and approximate elsewhere.
    """
    for header in headers:
        if header.get("PIXAR_SR"):
            return float(header["PIXAR_SR"])
    for header in headers:
        if header.get("PIXAR_A2"):
            return float(header["PIXAR_A2"]) * _ARCSEC2_TO_SR
    ny, nx = shape
    scale = float(local_pixel_scale(wcs, (nx - 1) / 2.0, (ny - 1) / 2.0))
    return scale**2 * _ARCSEC2_TO_SR


def _first(headers: list[fits.Header], key: str) -> object | None:
    for header in headers:
        value = header.get(key)
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value
    return None


def pixel_calibration(headers: list[fits.Header], wcs: WCS, shape: tuple[int, int]) -> PixelCalibration:
    """How to bring pixels to nJy, from BUNIT (nJy/uJy/mJy/Jy, MJy/sr and other surface brightness)
    or, for counts (or no BUNIT), from PHOTOCAL (nJy per count), MAGZERO (AB zero point) or afw's
    FLUXMAG0 (counts of a 0-mag source), in that order.

    Anything else keeps the pixels unscaled with a warning (``bunit`` = the file's label).
    """
    raw = _first(headers, "BUNIT")
    text = str(raw).strip() if raw is not None else ""
    unit = _parse_unit(text) if text else None
    if unit is not None and unit.is_equivalent(u.nJy):
        return PixelCalibration(float(unit.to(u.nJy)), "nJy")
    if unit is not None and unit.is_equivalent(u.nJy / u.sr):
        area = _pixel_solid_angle_sr(headers, wcs, shape)
        return PixelCalibration(float(unit.to(u.nJy / u.sr)) * area, "nJy")
    if not text or _is_counts(text, unit):
        photocal, magzero = _first(headers, "PHOTOCAL"), _first(headers, "MAGZERO")
        fluxmag0 = _first(headers, "FLUXMAG0")  # afw files write 0 when no calibration was persisted
        try:
            if photocal is not None:
                return _checked(float(photocal), "PHOTOCAL", text)
            if magzero is not None:
                return _checked(10.0 ** (-0.4 * (float(magzero) - 31.4)), "MAGZERO", text)
            if fluxmag0 is not None and float(fluxmag0) > 0:  # afw: counts of a 0-mag (3631 Jy) source
                return _checked(_AB_ZERO_NJY / float(fluxmag0), "FLUXMAG0", text)
        except (TypeError, ValueError):
            return PixelCalibration(1.0, text, f"zero point PHOTOCAL={photocal!r} MAGZERO={magzero!r} "
                                    f"FLUXMAG0={fluxmag0!r} is not a number; pixels loaded unscaled")
        reason = f"BUNIT={text!r} with no zero point" if text else "no BUNIT and no zero point"
        return PixelCalibration(1.0, text, f"{reason}: pixels loaded unscaled (image units, not nJy)")
    return PixelCalibration(1.0, text, f"BUNIT={text!r} is not a flux unit: pixels loaded unscaled "
                            "(image units, not nJy)")


def _checked(factor: float, key: str, text: str) -> PixelCalibration:
    if not (np.isfinite(factor) and factor > 0):
        return PixelCalibration(1.0, text, f"{key} gives a non-positive scale {factor!r}; pixels loaded unscaled")
    return PixelCalibration(factor, "nJy")
