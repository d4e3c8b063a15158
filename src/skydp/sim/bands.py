"""LSST-like photometric constants per band and the conversions between nJy and electrons.

Sources (all for the LSST system, throughputs v1.9, 30 s visits):
- ``ZERO_POINT``: AB magnitude giving 1 e-/s at airmass 1.0 (SMTN-002, "Calculating LSST limiting
  magnitudes and SNR", column Zp_t). So a source of AB magnitude m gives
  ``10**(-0.4 (m - Zp)) * t`` electrons; with m = 31.4 - 2.5 log10(f / nJy) that is
  ``f * 10**(0.4 (Zp - 31.4)) * t`` electrons (r: 1.83 e- per nJy in 30 s).
- ``EXTINCTION``: mag per unit airmass (Ivezic et al. 2019, ApJ 873, 111, table 2, k_m).
- ``DARK_SKY``: dark-sky brightness in mag/arcsec^2 (LSST SRD dark-sky values).
- ``EFFECTIVE_WAVELENGTH``: effective wavelengths of the LSST filters in nm (used for the
  wavelength dependence of seeing and for blackbody colours).
"""

from __future__ import annotations

import numpy as np

BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")

ZERO_POINT = {"u": 26.52, "g": 28.51, "r": 28.36, "i": 28.17, "z": 27.78, "y": 26.82}
EXTINCTION = {"u": 0.491, "g": 0.213, "r": 0.126, "i": 0.096, "z": 0.069, "y": 0.170}
DARK_SKY = {"u": 22.9, "g": 22.3, "r": 21.2, "i": 20.5, "z": 19.6, "y": 18.6}
EFFECTIVE_WAVELENGTH = {"u": 367.0, "g": 482.5, "r": 622.2, "i": 754.5, "z": 869.1, "y": 971.0}

AB_NJY_ZERO_POINT = 31.4  # AB mag of 1 nJy


def check_band(band: str) -> str:
    """Return ``band`` if it is one of ugrizy, else raise ValueError naming it."""
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}: expected one of {''.join(BANDS)}")
    return band


def electrons_per_njy(band: str, exptime: float, airmass: float) -> float:
    """Electrons collected per nJy of source flux in ``exptime`` seconds at ``airmass``."""
    zp = ZERO_POINT[check_band(band)] - EXTINCTION[band] * (airmass - 1.0)
    return exptime * 10.0 ** (0.4 * (zp - AB_NJY_ZERO_POINT))


def mag_to_njy(mag: np.ndarray | float) -> np.ndarray:
    """AB magnitude to flux in nJy."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - AB_NJY_ZERO_POINT))


def njy_to_mag(flux: np.ndarray | float) -> np.ndarray:
    """Flux in nJy to AB magnitude (flux must be positive)."""
    return AB_NJY_ZERO_POINT - 2.5 * np.log10(np.asarray(flux, dtype=float))


def blackbody_colours(temperature: np.ndarray) -> np.ndarray:
    """Flux ratio f_nu(band) / f_nu(r) of blackbodies, shape (N, 6) in BANDS order.

    A blackbody sequence stands in for stellar (and transient) spectral energy distributions: it gives
    the right sign and rough size of the colours (g-r from -0.3 for 10^4 K to 1.3 for 3000 K) without
    spectral templates.
    """
    h_over_k = 6.62607015e-34 / 1.380649e-23
    c = 2.99792458e8
    t = np.asarray(temperature, dtype=float)[:, None]
    nu = np.array([c / (EFFECTIVE_WAVELENGTH[b] * 1e-9) for b in BANDS])[None, :]
    nu_r = c / (EFFECTIVE_WAVELENGTH["r"] * 1e-9)
    bnu = nu**3 / np.expm1(h_over_k * nu / t)
    bnu_r = nu_r**3 / np.expm1(h_over_k * nu_r / t)
    return bnu / bnu_r
