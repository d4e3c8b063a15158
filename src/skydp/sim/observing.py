"""The observing schedule: dates, bands, pointing, rotation, airmass, seeing and sky per exposure.

Model (Rubin at Cerro Pachon):
- Night ``k`` has day_obs = first_day_obs + k * night_spacing_days (day_obs is the local date at
  the start of the night, as in LSST). Each visit starts at local midnight (04:43 UTC) plus an
  offset drawn in +-3 h; visits of one night are sorted in time and numbered seq = 10, 11, ...;
  visit = int(f"{day_obs}{seq:05d}").
- Airmass follows from the hour angle of the field at that time (GMST from the IAU 1982
  expression; TAI - UTC = 37 s is applied; Kasten & Young 1989 airmass formula).
- Seeing: a zenith 500 nm atmospheric FWHM drawn log-normally (median 0.65", sigma_ln 0.25; Cerro
  Pachon site median), scaled by airmass^0.6 and (lambda/500 nm)^-0.2, added in quadrature to a
  0.4" system contribution; values outside 0.5"-1.4" are redrawn.
- Sky: dark-sky brightness per band made brighter by 0-0.6 mag (moon/twilight), uniform.
- Pointing: the field centre plus a dither uniform in a disc; rotation (ROTPA, the position angle
  east of north of the detector +y axis) uniform in +-max_rotation_deg.
- With ``templates_first`` the best third of each band's seeing values goes to its earliest visits,
  as if the first nights were a template season: transients starting later are absent from the
  template-quality visits.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from skydp.sim.bands import DARK_SKY, EFFECTIVE_WAVELENGTH
from skydp.sim.presets import Preset

SITE_LATITUDE = -30.2446  # deg, Cerro Pachon
SITE_LONGITUDE = -70.7494  # deg (east positive)
TAI_MINUS_UTC = 37.0  # s
SNAP_EXPTIME = 15.0  # s
VISIT_EXPTIME = 30.0  # s
SNAP_READOUT = 2.0  # s between the two snaps
SEEING_RANGE = (0.5, 1.4)  # arcsec


@dataclass(frozen=True)
class Observation:
    """One exposure (a visit, or one snap of it) with its observing conditions.

    ``mjd`` is the exposure start (TAI); ``seeing`` the PSF FWHM in arcsec at the boresight;
    ``psf_gradient`` = (d fwhm / fwhm, d g1, d g2) per unit normalised focal-plane x and y, each a
    pair (x, y) — the mild linear variation of the PSF across the field.
    """

    visit: int
    day_obs: int
    seq_num: int
    band: str
    snap: int | None
    mjd: float
    exptime: float
    airmass: float
    boresight_ra: float
    boresight_dec: float
    rotpa: float
    seeing: float
    psf_g1: float
    psf_g2: float
    psf_gradient: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    sky_mag: float

    @property
    def mjd_mid(self) -> float:
        return self.mjd + self.exptime / 2.0 / 86400.0


def day_obs_to_mjd(day_obs: int) -> float:
    """MJD (UTC) of 00:00 on the calendar date ``day_obs`` (YYYYMMDD)."""
    date = dt.date(day_obs // 10000, day_obs // 100 % 100, day_obs % 100)
    return float((date - dt.date(1858, 11, 17)).days)


def add_days(day_obs: int, days: int) -> int:
    """day_obs ``days`` later, as YYYYMMDD."""
    date = dt.date(day_obs // 10000, day_obs // 100 % 100, day_obs % 100) + dt.timedelta(days=days)
    return date.year * 10000 + date.month * 100 + date.day


def local_sidereal_time(mjd_tai: np.ndarray | float) -> np.ndarray:
    """Local mean sidereal time at the site in degrees (IAU 1982 GMST, UT1 ~ UTC)."""
    mjd_ut = np.asarray(mjd_tai, dtype=float) - TAI_MINUS_UTC / 86400.0
    gmst = 280.46061837 + 360.98564736629 * (mjd_ut - 51544.5)
    return np.mod(gmst + SITE_LONGITUDE, 360.0)


def airmass(ra: float, dec: float, mjd_tai: np.ndarray | float) -> np.ndarray:
    """Airmass (Kasten & Young 1989) of (ra, dec) at the site; inf below the horizon."""
    ha = np.radians(local_sidereal_time(mjd_tai) - ra)
    lat, d = np.radians(SITE_LATITUDE), np.radians(dec)
    sin_alt = np.sin(lat) * np.sin(d) + np.cos(lat) * np.cos(d) * np.cos(ha)
    zenith = 90.0 - np.degrees(np.arcsin(np.clip(sin_alt, -1.0, 1.0)))
    with np.errstate(invalid="ignore"):
        x = 1.0 / (np.cos(np.radians(zenith)) + 0.50572 * (96.07995 - zenith) ** -1.6364)
    return np.where(zenith < 90.0, x, np.inf)


def _seeing(rng: np.random.Generator, band: str, airmass_: np.ndarray) -> np.ndarray:
    """Delivered PSF FWHM in arcsec (model in the module docstring), redrawn until inside SEEING_RANGE."""
    out = np.full(airmass_.shape, np.nan)
    todo = np.ones(airmass_.shape, bool)
    while todo.any():
        atm = np.exp(rng.normal(np.log(0.65), 0.25, todo.sum()))
        atm *= airmass_[todo] ** 0.6 * (EFFECTIVE_WAVELENGTH[band] / 500.0) ** -0.2
        fwhm = np.hypot(atm, 0.4)
        out[todo] = fwhm
        todo = (out < SEEING_RANGE[0]) | (out > SEEING_RANGE[1])
    return out


def schedule(preset: Preset, rng: np.random.Generator) -> list[Observation]:
    """All exposures of the survey in time order (two per visit when ``preset.snaps``)."""
    if preset.templates_first:  # the template-season visits of every band fill the first nights
        first = [b for b, n in preset.visits_per_band.items() for _ in range(max(1, n // 3) if n else 0)]
    else:
        first = []
    rest = [b for b, n in preset.visits_per_band.items() for _ in range(n - first.count(b))]
    bands = [first[i] for i in rng.permutation(len(first))] + [rest[i] for i in rng.permutation(len(rest))]
    night_of = np.arange(len(bands)) * preset.n_nights // len(bands)
    midnight_utc = 4.0 + 43.0 / 60.0  # hours: local midnight at Cerro Pachon
    starts = np.empty(len(bands))
    x = np.empty(len(bands))
    day_obs = np.empty(len(bands), dtype=np.int64)
    for i, night in enumerate(night_of):
        day_obs[i] = add_days(preset.first_day_obs, int(night) * preset.night_spacing_days)
        base = day_obs_to_mjd(int(day_obs[i])) + 1.0 + midnight_utc / 24.0 + TAI_MINUS_UTC / 86400.0
        while True:  # keep the field above airmass 2
            starts[i] = base + rng.uniform(-3.0, 3.0) / 24.0
            x[i] = airmass(preset.field_ra, preset.field_dec, starts[i])
            if x[i] < 2.0:
                break
    time_order = np.argsort(starts, kind="stable")
    seeing = np.empty(len(bands))
    for band in preset.visits_per_band:
        idx = np.array([i for i in time_order if bands[i] == band])
        values = _seeing(rng, band, x[idx])
        if preset.templates_first:
            # best third (sorted) to the earliest visits, the rest in random order afterwards
            values = np.sort(values)
            n_best = max(1, len(values) // 3)
            values[n_best:] = rng.permutation(values[n_best:])
        seeing[idx] = values

    exposures = []
    seq_by_night: dict[int, int] = {}
    for i in time_order:
        seq = seq_by_night.get(int(day_obs[i]), 10)
        seq_by_night[int(day_obs[i])] = seq + 1
        visit = int(f"{day_obs[i]}{seq:05d}")
        r = preset.dither_radius_deg * np.sqrt(rng.uniform())
        phi = rng.uniform(0.0, 2.0 * np.pi)
        dec = preset.field_dec + r * np.sin(phi)
        ra = preset.field_ra + r * np.cos(phi) / np.cos(np.radians(dec))
        rotpa = rng.uniform(-preset.max_rotation_deg, preset.max_rotation_deg)
        sky = DARK_SKY[bands[i]] - rng.uniform(0.0, 0.6)
        g1, g2 = rng.normal(0.0, 0.02, 2)
        grad = rng.normal(0.0, [[0.02, 0.02], [0.015, 0.015], [0.015, 0.015]])
        gradient = tuple(tuple(float(v) for v in row) for row in grad)
        snaps = [(0, SNAP_EXPTIME), (1, SNAP_EXPTIME)] if preset.snaps else [(None, VISIT_EXPTIME)]
        for snap, exptime in snaps:
            start = starts[i] + (0.0 if not snap else (SNAP_EXPTIME + SNAP_READOUT) / 86400.0)
            exposures.append(
                Observation(
                    visit=visit, day_obs=int(day_obs[i]), seq_num=seq, band=bands[i], snap=snap,
                    mjd=float(start), exptime=exptime,
                    airmass=float(airmass(ra, dec, start + exptime / 2.0 / 86400.0)),
                    boresight_ra=float(ra), boresight_dec=float(dec), rotpa=float(rotpa),
                    seeing=float(seeing[i]), psf_g1=float(g1), psf_g2=float(g2),
                    psf_gradient=gradient, sky_mag=float(sky),
                )
            )
    return exposures


def detector_offsets(preset: Preset) -> np.ndarray:
    """Focal-plane position (pixels, x and y) of each detector's centre relative to the boresight.

    Detectors are numbered row by row from the bottom-left of the focal plane; all are aligned
    with the focal-plane axes.
    """
    ncol, nrow = preset.focal_plane
    nx, ny = preset.detector_shape
    det = np.arange(preset.n_detectors)
    col, row = det % ncol, det // ncol
    fx = (col - (ncol - 1) / 2.0) * (nx + preset.detector_gap)
    fy = (row - (nrow - 1) / 2.0) * (ny + preset.detector_gap)
    return np.stack([fx, fy], axis=1)


def focal_plane_radius(preset: Preset) -> float:
    """Distance in pixels from the boresight to the farthest detector corner."""
    off = np.abs(detector_offsets(preset))
    nx, ny = preset.detector_shape
    return float(np.max(np.hypot(off[:, 0] + nx / 2.0, off[:, 1] + ny / 2.0)))
