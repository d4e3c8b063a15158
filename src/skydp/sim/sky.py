"""The true sky: stars, galaxies, periodic variables, supernova-like transients and moving objects.

Models (all magnitudes AB, r band unless stated; densities per square degree):
- Stars: dN/dm = 800 * scale * 10^(0.2 (r - 20)) per mag for 14 < r < 26 (~27 000 deg^-2 at scale 1,
  a high-latitude field); colours of blackbodies with T log-uniform in 3200-7500 K.
- Galaxies: dN/dm = 10^(4.5 + 0.32 (r - 24)) per mag for 16 < r < galaxy_mag_limit (~3.9e5 deg^-2
  to r = 27, i.e. ~108 arcmin^-2, consistent with ~60 arcmin^-2 to i = 25.3 of the LSST gold
  sample). 30 % red (bulge fraction 0.5-0.9, colours of a low-redshift elliptical), 70 % blue
  (bulge fraction 0-0.3, star-forming colours), 0.1 mag colour scatter. Disk (Sersic n = 1)
  half-light radius 0.4" * 10^(-0.1 (r - 24)) with 0.15 dex scatter, clipped to 0.1"-3";
  bulge (n = 4) half that size. Disk shear |g| Rayleigh (sigma 0.25, < 0.7), bulge half as
  elongated, same position angle.
- Variables: stars (r 17-22) with period log-uniform 0.2-20 d and r amplitude 0.2-1 mag, half
  sinusoidal, half RR-Lyrae-like sawtooth (rise in 15 % of the period), amplitude scaling as
  lambda^-0.7 across bands. ``flux_*`` is the flux at mean magnitude.
- Transients: f(t) = peak * N (1 - exp(-dt / rise)) exp(-dt / decline) for dt = t - t_explosion > 0 and
  0 before, N normalising the peak to 1; rise 2-6 d, decline 15-40 d, peak r 20-23.5, blackbody
  colours with T 6000-15000 K. 60 % sit on a galaxy brighter than r = 24 (offset uniformly
  within its disk half-light radius, ``host_id`` set), the rest are hostless. With
  ``templates_first`` 60 % explode after the last template-season visit, so they are absent
  from the best-seeing visits; the rest explode any time from 40 d before the survey to its end.
  ``flux_*`` is the peak flux.
- Movers: asteroid-like, r 19-22.5, solar colours (5800 K blackbody), constant flux, linear
  motion of 0.005-0.5 deg/day (log-uniform) in a random direction, through a random point of
  the focal plane at the middle of a random exposure (``mjd_ref``). ``ra_rate`` is
  d(RA)/dt * cos(Dec) and ``dec_rate`` d(Dec)/dt, deg/day. Trailed in the images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammainc

from skydp.sim.bands import BANDS, EFFECTIVE_WAVELENGTH, blackbody_colours, mag_to_njy
from skydp.sim.observing import Observation, focal_plane_radius
from skydp.sim.presets import Preset
from skydp.sim.wcs import PIXEL_SCALE

KINDS: tuple[str, ...] = ("star", "galaxy", "variable", "transient", "mover")
STAR, GALAXY, VARIABLE, TRANSIENT, MOVER = range(5)

_RED_COLOURS = np.array([2.4, 0.8, 0.0, -0.40, -0.70, -0.90])  # m_band - m_r
_BLUE_COLOURS = np.array([1.1, 0.40, 0.0, -0.20, -0.30, -0.35])
_SERSIC_B = {1.0: 1.678347, 4.0: 7.669249}  # b_n with Gamma(2n) = 2 gamma(2n, b_n)


@dataclass
class SkyCatalog:
    """Column arrays of every true object; NaN (or -1 for ``host_id``) where a field does not apply."""

    id: np.ndarray
    kind: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray  # (N, 6) nJy in BANDS order: static / mean / peak flux
    size: np.ndarray
    hlr_disk: np.ndarray
    hlr_bulge: np.ndarray
    bulge_fraction: np.ndarray
    ellipticity: np.ndarray
    position_angle: np.ndarray
    period: np.ndarray
    amplitude: np.ndarray
    phase: np.ndarray
    sawtooth: np.ndarray
    t_explosion: np.ndarray
    rise_time: np.ndarray
    decline_time: np.ndarray
    host_id: np.ndarray
    ra_rate: np.ndarray
    dec_rate: np.ndarray
    mjd_ref: np.ndarray

    def __len__(self) -> int:
        return self.id.size

    def flux_at(self, band: str, mjd: float) -> np.ndarray:
        """True flux (nJy) of every object in ``band`` at time ``mjd``."""
        b = BANDS.index(band)
        flux = self.flux[:, b].copy()
        var = self.kind == VARIABLE
        if var.any():
            lam_ratio = EFFECTIVE_WAVELENGTH["r"] / EFFECTIVE_WAVELENGTH[band]
            amp = self.amplitude[var] * lam_ratio**0.7
            phase = np.mod((mjd - 60000.0) / self.period[var] + self.phase[var], 1.0)
            sine = -0.5 * np.sin(2.0 * np.pi * phase)
            saw = np.where(phase < 0.15, 0.5 - phase / 0.15, -0.5 + (phase - 0.15) / 0.85)
            shape = np.where(self.sawtooth[var] > 0, saw, sine)
            flux[var] *= 10.0 ** (-0.4 * amp * shape)
        tr = self.kind == TRANSIENT
        if tr.any():
            flux[tr] *= transient_light_curve(mjd - self.t_explosion[tr], self.rise_time[tr], self.decline_time[tr])
        return flux

    def position_at(self, mjd: float) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) in degrees of every object at ``mjd`` (only movers move)."""
        ra, dec = self.ra.copy(), self.dec.copy()
        mov = self.kind == MOVER
        if mov.any():
            dt = mjd - self.mjd_ref[mov]
            dec[mov] = self.dec[mov] + self.dec_rate[mov] * dt
            ra[mov] = self.ra[mov] + self.ra_rate[mov] * dt / np.cos(np.radians(self.dec[mov]))
        return np.mod(ra, 360.0), dec


def transient_light_curve(dt: np.ndarray, rise: np.ndarray, decline: np.ndarray) -> np.ndarray:
    """Peak-normalised SN-like light curve at ``dt`` days after explosion (0 before)."""
    dt = np.asarray(dt, float)
    t_peak = rise * np.log((rise + decline) / rise)
    peak = (1.0 - np.exp(-t_peak / rise)) * np.exp(-t_peak / decline)
    pos = np.maximum(dt, 0.0)
    shape = (1.0 - np.exp(-pos / rise)) * np.exp(-pos / decline) / peak
    return np.where(dt > 0.0, shape, 0.0)


def composite_half_light_radius(hlr_disk: np.ndarray, hlr_bulge: np.ndarray, bulge_fraction: np.ndarray) -> np.ndarray:
    """Half-light radius of circular exponential disk + de Vaucouleurs bulge (bisection, vectorised)."""

    def enclosed(r: np.ndarray) -> np.ndarray:
        disk = gammainc(2.0, _SERSIC_B[1.0] * (r / hlr_disk))
        bulge = gammainc(8.0, _SERSIC_B[4.0] * (r / hlr_bulge) ** 0.25)
        return (1.0 - bulge_fraction) * disk + bulge_fraction * bulge

    lo = np.minimum(hlr_disk, hlr_bulge)
    hi = np.maximum(hlr_disk, hlr_bulge)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        below = enclosed(mid) < 0.5
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def _power_law_mags(rng: np.random.Generator, n: int, slope: float, lo: float, hi: float) -> np.ndarray:
    """n magnitudes with density proportional to 10^(slope m) on [lo, hi] (inverse CDF)."""
    a, b = 10.0 ** (slope * lo), 10.0 ** (slope * hi)
    return np.log10(a + rng.uniform(size=n) * (b - a)) / slope


def _power_law_count(norm: float, slope: float, pivot: float, lo: float, hi: float) -> float:
    """Integral over [lo, hi] of norm * 10^(slope (m - pivot)) dm."""
    return norm / (slope * np.log(10.0)) * (10.0 ** (slope * (hi - pivot)) - 10.0 ** (slope * (lo - pivot)))


def offset_position(
    ra0: float | np.ndarray, dec0: float | np.ndarray, rho: np.ndarray, pa: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Point at angular distance ``rho`` and position angle ``pa`` (deg, east of north) from (ra0, dec0)."""
    r, p = np.radians(rho), np.radians(pa)
    d0 = np.radians(dec0)
    sin_dec = np.sin(d0) * np.cos(r) + np.cos(d0) * np.sin(r) * np.cos(p)
    dec = np.arcsin(np.clip(sin_dec, -1.0, 1.0))
    dra = np.arctan2(np.sin(p) * np.sin(r) * np.cos(d0), np.cos(r) - np.sin(d0) * sin_dec)
    return np.mod(ra0 + np.degrees(dra), 360.0), np.degrees(dec)


def _uniform_in_cap(
    rng: np.random.Generator, n: int, ra0: float, dec0: float, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    cos_rho = rng.uniform(np.cos(np.radians(radius)), 1.0, n)
    return offset_position(ra0, dec0, np.degrees(np.arccos(cos_rho)), rng.uniform(0.0, 360.0, n))


def field_radius(preset: Preset) -> float:
    """Radius (deg) of the sky area that any detector of any visit can see, with a 30" margin."""
    return focal_plane_radius(preset) * PIXEL_SCALE / 3600.0 + preset.dither_radius_deg + 30.0 / 3600.0


def template_season_end(preset: Preset, observations: list[Observation]) -> float | None:
    """Last exposure end (MJD) among the template-season visits, or None without ``templates_first``."""
    if not preset.templates_first:
        return None
    ends = []
    for band in preset.visits_per_band:
        mjds = sorted({o.mjd + o.exptime / 86400.0 for o in observations if o.band == band})
        if mjds:
            ends.append(mjds[max(1, len(mjds) // 3) - 1])
    return max(ends)


def make_catalog(preset: Preset, observations: list[Observation], rng: np.random.Generator) -> SkyCatalog:
    """Draw the true sky for ``preset`` (models in the module docstring)."""
    radius = field_radius(preset)
    area = 2.0 * np.pi * (1.0 - np.cos(np.radians(radius))) * (180.0 / np.pi) ** 2
    nb = len(BANDS)
    parts: list[dict[str, np.ndarray]] = []

    def empty(n: int, kind: int) -> dict[str, np.ndarray]:
        cols = {name: np.full(n, np.nan) for name in SkyCatalog.__dataclass_fields__}
        cols["kind"] = np.full(n, kind, dtype=np.int8)
        cols["host_id"] = np.full(n, -1, dtype=np.int64)
        cols["sawtooth"] = np.zeros(n, dtype=np.int8)
        cols["flux"] = np.zeros((n, nb))
        return cols

    # stars
    n = rng.poisson(_power_law_count(800.0 * preset.star_density_scale, 0.2, 20.0, 14.0, 26.0) * area)
    stars = empty(n, STAR)
    stars["ra"], stars["dec"] = _uniform_in_cap(rng, n, preset.field_ra, preset.field_dec, radius)
    mag = _power_law_mags(rng, n, 0.2, 14.0, 26.0)
    temp = np.exp(rng.uniform(np.log(3200.0), np.log(7500.0), n))
    stars["flux"] = mag_to_njy(mag)[:, None] * blackbody_colours(temp)
    stars["size"] = np.zeros(n)
    parts.append(stars)

    # galaxies
    n = rng.poisson(_power_law_count(10.0**4.5, 0.32, 24.0, 16.0, preset.galaxy_mag_limit) * area)
    gals = empty(n, GALAXY)
    gals["ra"], gals["dec"] = _uniform_in_cap(rng, n, preset.field_ra, preset.field_dec, radius)
    mag = _power_law_mags(rng, n, 0.32, 16.0, preset.galaxy_mag_limit)
    red = rng.uniform(size=n) < 0.3
    colours = np.where(red[:, None], _RED_COLOURS, _BLUE_COLOURS) + rng.normal(0.0, 0.1, (n, nb)) * (np.arange(nb) != 2)
    gals["flux"] = mag_to_njy(mag[:, None] + colours)
    gals["hlr_disk"] = np.clip(0.4 * 10.0 ** (-0.1 * (mag - 24.0) + rng.normal(0.0, 0.15, n)), 0.1, 3.0)
    gals["hlr_bulge"] = 0.5 * gals["hlr_disk"]
    gals["bulge_fraction"] = np.where(red, rng.uniform(0.5, 0.9, n), rng.uniform(0.0, 0.3, n))
    g = np.hypot(*rng.normal(0.0, 0.25, (2, n)))
    while (bad := g >= 0.7).any():
        g[bad] = np.hypot(*rng.normal(0.0, 0.25, (2, bad.sum())))
    gals["ellipticity"] = g
    gals["position_angle"] = rng.uniform(0.0, 180.0, n)
    gals["size"] = composite_half_light_radius(gals["hlr_disk"], gals["hlr_bulge"], gals["bulge_fraction"])
    parts.append(gals)

    # periodic variables
    n = preset.n_variables
    var = empty(n, VARIABLE)
    var["ra"], var["dec"] = _uniform_in_cap(rng, n, preset.field_ra, preset.field_dec, radius)
    var["flux"] = mag_to_njy(rng.uniform(17.0, 22.0, n))[:, None] * blackbody_colours(rng.uniform(5500.0, 7500.0, n))
    var["size"] = np.zeros(n)
    var["period"] = np.exp(rng.uniform(np.log(0.2), np.log(20.0), n))
    var["amplitude"] = rng.uniform(0.2, 1.0, n)
    var["phase"] = rng.uniform(0.0, 1.0, n)
    var["sawtooth"] = (rng.uniform(size=n) < 0.5).astype(np.int8)
    parts.append(var)

    # transients
    n = preset.n_transients
    tr = empty(n, TRANSIENT)
    tr["flux"] = mag_to_njy(rng.uniform(20.0, 23.5, n))[:, None] * blackbody_colours(rng.uniform(6000.0, 15000.0, n))
    tr["size"] = np.zeros(n)
    tr["rise_time"] = rng.uniform(2.0, 6.0, n)
    tr["decline_time"] = rng.uniform(15.0, 40.0, n)
    t_start = min(o.mjd for o in observations)
    t_end = max(o.mjd for o in observations)
    t_exp = rng.uniform(t_start - 40.0, t_end, n)
    season_end = template_season_end(preset, observations)
    if season_end is not None and season_end < t_end:
        late = rng.uniform(size=n) < 0.6
        t_exp[late] = rng.uniform(season_end, t_end, late.sum())
    tr["t_explosion"] = t_exp
    tr["ra"], tr["dec"] = _uniform_in_cap(rng, n, preset.field_ra, preset.field_dec, radius)
    hosts = np.flatnonzero(gals["flux"][:, 2] > mag_to_njy(24.0))
    on_host = (rng.uniform(size=n) < 0.6) & (hosts.size > 0)
    if on_host.any():
        chosen = rng.choice(hosts, on_host.sum(), replace=hosts.size < on_host.sum())
        rho = gals["hlr_disk"][chosen] * np.sqrt(rng.uniform(size=chosen.size)) / 3600.0
        tr["ra"][on_host], tr["dec"][on_host] = offset_position(
            gals["ra"][chosen], gals["dec"][chosen], rho, rng.uniform(0.0, 360.0, chosen.size)
        )
        tr["host_id"][on_host] = chosen  # index into the galaxies; converted to an id below
    parts.append(tr)

    # movers
    n = preset.n_movers
    mov = empty(n, MOVER)
    mov["flux"] = mag_to_njy(rng.uniform(19.0, 22.5, n))[:, None] * blackbody_colours(np.full(n, 5800.0))
    mov["size"] = np.zeros(n)
    ref = rng.integers(0, len(observations), n)
    mov["mjd_ref"] = np.array([observations[i].mjd_mid for i in ref])
    reach = 0.8 * min(preset.detector_shape) * min(preset.focal_plane) / 2.0 * PIXEL_SCALE / 3600.0
    mov["ra"], mov["dec"] = offset_position(
        np.array([observations[i].boresight_ra for i in ref]),
        np.array([observations[i].boresight_dec for i in ref]),
        reach * np.sqrt(rng.uniform(size=n)),
        rng.uniform(0.0, 360.0, n),
    )
    rate = np.exp(rng.uniform(np.log(0.005), np.log(0.5), n))
    direction = np.radians(rng.uniform(0.0, 360.0, n))
    mov["ra_rate"], mov["dec_rate"] = rate * np.sin(direction), rate * np.cos(direction)
    parts.append(mov)

    offsets = np.cumsum([0] + [len(p["ra"]) for p in parts])
    cols = {name: np.concatenate([p[name] for p in parts]) for name in SkyCatalog.__dataclass_fields__ if name != "id"}
    cols["id"] = np.arange(1, offsets[-1] + 1, dtype=np.int64)
    tr_rows = slice(offsets[3], offsets[4])
    host = cols["host_id"][tr_rows]
    cols["host_id"][tr_rows] = np.where(host >= 0, cols["id"][offsets[1] + np.maximum(host, 0)], -1)
    return SkyCatalog(**cols)
