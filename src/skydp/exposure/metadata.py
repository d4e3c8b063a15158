"""Translate between FITS headers and ``VisitInfo`` (the PRIMARY keys of the visit-image contract)."""

from __future__ import annotations

import math
import re
from typing import Any

from astropy.io import fits
from astropy.time import Time

from .errors import ExposureFormatError
from .info import BANDS, VisitInfo

# Physical-filter spellings whose band is unambiguous: HSC ("HSC-I", "HSC-R2"), LSST ("r_57"),
# DECam ("r DECam SDSS c0002 6430.0 1480.0") and bare band letters.
_FILTER_PATTERNS = (
    re.compile(r"^HSC-([GRIZY])2?$", re.IGNORECASE),
    re.compile(r"^([ugrizy])_\d+$"),
    re.compile(r"^([ugrizY]) DECam\b"),
    re.compile(r"^([ugrizy])$"),
)
_UNKNOWN_FILTERS = {"", "_unknown_", "unknown", "none"}
_TIME_SCALES = {"TAI", "UTC", "TT", "TDB", "TCB", "TCG", "UT1"}
_EARLIEST_REAL_MJD = 44239.0  # 1980-01-01: afw writes 1970-01-01 (epoch 0) when the date is unknown
_WARN_KEYS = ("INSTRUME", "VISIT", "DETECTOR", "FILTER", "MJD-OBS", "EXPTIME", "AIRMASS",
              "BORE-RA", "BORE-DEC", "ROTPA")


def band_from_filter(physical_filter: str) -> str:
    """Band letter (ugrizy) of a physical filter name, or "" when it cannot be told."""
    for pattern in _FILTER_PATTERNS:
        match = pattern.match(physical_filter.strip())
        if match:
            return match.group(1).lower()
    return ""


def day_obs_from_mjd(mjd_tai: float) -> int:
    """Rubin observing day: the TAI calendar date twelve hours earlier, as YYYYMMDD."""
    return int(Time(mjd_tai - 0.5, format="mjd", scale="tai").strftime("%Y%m%d"))


class _Lookup:
    """Keyword lookup over several headers in priority order, recording what is missing or invalid."""

    def __init__(self, headers: list[fits.Header]) -> None:
        self.headers = headers
        self.missing: list[str] = []
        self.problems: list[str] = []

    def raw(self, key: str) -> Any:
        for header in self.headers:
            if key in header and header[key] is not None and not isinstance(header[key], fits.card.Undefined):
                value = header[key]
                if not (isinstance(value, str) and not value.strip()):
                    return value
        return None

    def undefined(self, key: str) -> bool:
        """The first header holding ``key`` gives it no value: the writer said it does not apply."""
        for header in self.headers:
            if key in header:
                return header[key] is None or isinstance(header[key], fits.card.Undefined)
        return False

    def get(self, key: str, kind: type, default: Any) -> Any:
        value = self.raw(key)
        if value is None:
            if not self.undefined(key):
                self.missing.append(key)
            return default
        try:
            if kind is str:
                return str(value).strip()
            if kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                return int(value)
            result = float(value)
            if not math.isfinite(result):
                raise ValueError
            return result
        except (TypeError, ValueError):
            self.problems.append(f"{key}={value!r} is not a valid {kind.__name__}")
            return default


def _start_mjd_tai(look: _Lookup, exptime: float) -> float:
    """Exposure start (MJD TAI) from MJD-OBS, DATE-OBS or afw's TIME-MID, in that order."""
    scale = str(look.raw("TIMESYS") or "UTC").strip().upper()
    if scale not in _TIME_SCALES:
        look.problems.append(f"TIMESYS={scale!r} not understood; times read as UTC")
        scale = "UTC"
    scale = scale.lower()
    half = (exptime if math.isfinite(exptime) else 0.0) / 2.0 / 86400.0
    candidates = (("MJD-OBS", "mjd", 0.0), ("DATE-OBS", None, 0.0), ("TIME-MID", None, -half))
    for key, fmt, offset in candidates:
        value = look.raw(key)
        if value is None:
            continue
        try:  # dates: ISO/FITS strings with or without a time part ('Z' = UTC, as the scale says)
            text = float(value) if fmt == "mjd" else str(value).strip().rstrip("Z")
            mjd = Time(text, format=fmt, scale=scale).tai.mjd + offset
        except (TypeError, ValueError):
            look.problems.append(f"{key}={value!r} is not a valid time")
            continue
        if mjd >= _EARLIEST_REAL_MJD:
            return float(mjd)
        look.problems.append(f"{key}={value!r} is a placeholder date, ignored")
    look.missing.append("MJD-OBS")
    return math.nan


def visit_info_from_headers(path: str, headers: list[fits.Header]) -> VisitInfo:
    """Build ``VisitInfo`` from headers (highest priority first); never fails on missing keys.

    Raises ``ExposureFormatError`` only when a BAND key is present and is not one of ugrizy.
    """
    look = _Lookup(headers)
    band_value = look.raw("BAND")
    band = ""
    if band_value is not None:
        band = str(band_value).strip().lower()
        if band not in BANDS or len(band) != 1:
            raise ExposureFormatError(f"{path}: BAND={band_value!r} is not one of {BANDS}")
    physical_filter = look.get("FILTER", str, "")
    if physical_filter.lower() in _UNKNOWN_FILTERS:
        if "FILTER" not in look.missing:
            look.missing.append("FILTER")
        physical_filter = ""
    if not band:
        band = band_from_filter(physical_filter)
        if not band:
            source = f"FILTER={physical_filter!r} is not a known ugrizy filter" if physical_filter else "no FILTER"
            look.problems.append(f"band unknown (no BAND key and {source})")
    exptime = look.get("EXPTIME", float, math.nan)
    mjd = _start_mjd_tai(look, exptime)
    day_obs = look.get("DAY_OBS", int, 0) if look.raw("DAY_OBS") is not None else (
        day_obs_from_mjd(mjd) if math.isfinite(mjd) else 0)
    snap = look.get("SNAP", int, None) if look.raw("SNAP") is not None else None
    if snap not in (None, 0, 1):
        look.problems.append(f"SNAP={snap!r} is not 0 or 1, ignored")
        snap = None
    info = VisitInfo(
        instrument=look.get("INSTRUME", str, ""),
        visit=look.get("VISIT", int, 0),
        detector=look.get("DETECTOR", int, 0),
        band=band,
        physical_filter=physical_filter,
        day_obs=day_obs,
        mjd=mjd,
        exptime=exptime,
        airmass=look.get("AIRMASS", float, math.nan),
        boresight_ra=look.get("BORE-RA", float, math.nan),
        boresight_dec=look.get("BORE-DEC", float, math.nan),
        rotpa=look.get("ROTPA", float, math.nan),
        snap=snap,
    )
    missing = [key for key in _WARN_KEYS if key in look.missing]
    if missing:
        info.warnings.append("missing metadata (defaults used): " + ", ".join(missing))
    info.warnings.extend(look.problems)
    return info


def visit_info_to_header(info: VisitInfo) -> fits.Header:
    """PRIMARY header cards of the contract. Values that do not apply (NaN: a coadd has no airmass or
    pointing) are written as FITS undefined values, so readers can tell them from missing keys; empty
    strings are left out, not invented."""
    cards: list[tuple[str, Any, str]] = [
        ("INSTRUME", info.instrument, "instrument"),
        ("VISIT", int(info.visit), "visit id"),
        ("DETECTOR", int(info.detector), "detector id"),
        ("BAND", info.band, "band (ugrizy)"),
        ("FILTER", info.physical_filter, "physical filter"),
        ("DAY_OBS", int(info.day_obs), "observing day YYYYMMDD"),
        ("TIMESYS", "TAI", "time scale of MJD-OBS"),
        ("MJD-OBS", float(info.mjd), "[d] exposure start, MJD TAI"),
        ("EXPTIME", float(info.exptime), "[s] exposure time"),
        ("AIRMASS", float(info.airmass), "airmass"),
        ("BORE-RA", float(info.boresight_ra), "[deg] boresight RA"),
        ("BORE-DEC", float(info.boresight_dec), "[deg] boresight Dec"),
        ("ROTPA", float(info.rotpa), "[deg] rotator position angle"),
        ("BUNIT", info.bunit, "pixel unit"),
    ]
    if info.snap is not None:
        cards.append(("SNAP", int(info.snap), "snap index"))
    header = fits.Header()
    for key, value, comment in cards:
        if isinstance(value, float) and not math.isfinite(value):
            value = fits.card.UNDEFINED
        elif isinstance(value, str) and not value:
            continue
        header[key] = (value, comment)
    return header
