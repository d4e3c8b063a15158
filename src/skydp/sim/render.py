"""Draw one detector of one exposure: GalSim profiles, sky, Poisson and read noise, detector effects.

Photometry: pixels are counted in electrons (gain 1) and converted to nJy with the band zero point
and the airmass extinction of the exposure (``skydp.sim.bands.electrons_per_njy``); the sky is then
subtracted, as in a calibrated, background-subtracted visit image. Sky electrons per pixel come from
the sky brightness (mag/arcsec^2) over 0.04 arcsec^2 (the sky is not extincted).
Variance = (expected electrons from sky + sources + read noise^2) in nJy^2: the noise model, not the
noisy pixels, so image / sqrt(variance) has unit variance wherever there are no cosmic rays or
defects.

PSF: Moffat with beta = 3.5, a common model of delivered seeing-limited PSFs, with somewhat broader
wings than pure Kolmogorov turbulence (best matched by beta = 4.765, Trujillo et al. 2001, MNRAS 328,
977). Half-integer beta has a closed-form Fourier transform in GalSim and draws ~5x faster than
4.765; a truncated Moffat would make GalSim convolve in real space, ~10x slower. FWHM and shear vary
linearly over the focal plane (``Observation.psf_gradient``). Point sources are drawn on stamps of
radius 5 FWHM, which hold all but 4e-4 of the flux. The PSF HDU holds this same PSF drawn with
GalSim (convolved with the pixel) at the centres of a 5 x 5 grid.

Objects are drawn when their centre lies within the detector grown by 30 px and their flux is at
least half the sky noise of one pixel; fainter ones cannot be seen in any single pixel and are
recorded in the truth with ``drawn = False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import galsim
import numpy as np
from astropy.wcs import WCS

from skydp.sim import detector as det
from skydp.sim.bands import electrons_per_njy, mag_to_njy, njy_to_mag
from skydp.sim.observing import Observation, detector_offsets, focal_plane_radius
from skydp.sim.presets import Preset
from skydp.sim.sky import GALAXY, MOVER, STAR, SkyCatalog
from skydp.sim.wcs import (
    PIXEL_SCALE,
    detector_wcs,
    galsim_jacobian,
    local_jacobians,
    radial_distortion_coefficient,
    sky_to_pixel,
)

MOFFAT_BETA = 3.5
STAMP_RADIUS_FWHM = 5.0
PSF_GRID = 5
DRAW_MARGIN = 30  # px around the detector whose objects still spill light onto it
MIN_PSF_STAMP = 41
_UNIT_MOFFAT = galsim.Moffat(beta=MOFFAT_BETA, fwhm=1.0)


@dataclass
class Rendered:
    """A drawn detector image with everything needed to write it and its truth."""

    image: np.ndarray  # float32 nJy, sky subtracted, NaN in NO_DATA
    variance: np.ndarray  # float32 nJy^2
    masks: dict[str, np.ndarray]  # plane name -> bool (BAD, SAT, NO_DATA)
    wcs: WCS
    psf_stamps: np.ndarray | None  # (K, S, S) float32, each summing to 1
    psf_x: np.ndarray
    psf_y: np.ndarray
    epochs: dict[str, np.ndarray]  # truth rows of the objects whose centre lies on the detector
    cosmics: dict[str, np.ndarray]  # x, y, flux (nJy) of every pixel hit by a cosmic ray
    conditions: dict[str, float | int]  # sky, zero point, seeing... for visits.parquet


class PsfModel:
    """The PSF of one exposure over the focal plane, as GalSim profiles in sky (arcsec) units."""

    def __init__(self, obs: Observation, offset: np.ndarray, shape: tuple[int, int], radius: float):
        self.obs = obs
        self.offset = offset
        self.centre = ((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0)
        self.radius = radius

    def parameters(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """FWHM (arcsec), g1, g2 at detector pixels (x, y)."""
        xn = (np.asarray(x, float) - self.centre[0] + self.offset[0]) / self.radius
        yn = (np.asarray(y, float) - self.centre[1] + self.offset[1]) / self.radius
        (fx, fy), (g1x, g1y), (g2x, g2y) = self.obs.psf_gradient
        fwhm = self.obs.seeing * (1.0 + fx * xn + fy * yn)
        return fwhm, self.obs.psf_g1 + g1x * xn + g1y * yn, self.obs.psf_g2 + g2x * xn + g2y * yn

    def profile(self, fwhm: float, g1: float, g2: float) -> galsim.GSObject:
        # dilating one unit-FWHM Moffat reuses its precomputed tables
        return _UNIT_MOFFAT.dilate(fwhm).shear(g1=g1, g2=g2)


def _object_profile(cat: SkyCatalog, i: int, flux: float, psf: galsim.GSObject, obs: Observation) -> galsim.GSObject:
    """Profile of catalogue row ``i`` with total ``flux`` (electrons), convolved with ``psf``."""
    kind = cat.kind[i]
    if kind == GALAXY:
        beta = (90.0 + cat.position_angle[i]) * galsim.degrees  # GalSim angles start at +u = west
        bf = cat.bulge_fraction[i]
        disk = galsim.Exponential(half_light_radius=cat.hlr_disk[i], flux=1.0 - bf)
        parts = [disk.shear(g=cat.ellipticity[i], beta=beta)]
        if bf > 0.0:
            bulge = galsim.DeVaucouleurs(half_light_radius=cat.hlr_bulge[i], flux=bf)
            parts.append(bulge.shear(g=0.5 * cat.ellipticity[i], beta=beta))
        return galsim.Convolve(galsim.Add(parts).withFlux(flux), psf)
    if kind == MOVER:
        rate = np.hypot(cat.ra_rate[i], cat.dec_rate[i])  # deg/day
        trail = rate * obs.exptime / 86400.0 * 3600.0  # arcsec
        if trail > 0.2 * PIXEL_SCALE:
            pa = np.degrees(np.arctan2(cat.ra_rate[i], cat.dec_rate[i]))
            box = galsim.Box(trail, 0.1 * PIXEL_SCALE, flux=flux).rotate((90.0 + pa) * galsim.degrees)
            return galsim.Convolve(box, psf)
    return psf.withFlux(flux)


def render(
    preset: Preset,
    obs: Observation,
    detector: int,
    cat: SkyCatalog,
    seed: int,
    write_psf: bool = True,
) -> Rendered:
    """Simulate detector ``detector`` of exposure ``obs`` (deterministic in seed, visit, detector, snap)."""
    nx, ny = preset.detector_shape
    rng = np.random.default_rng([seed, obs.visit, detector, 0 if obs.snap is None else obs.snap + 1])
    offset = detector_offsets(preset)[detector]
    fp_radius = focal_plane_radius(preset)
    k = radial_distortion_coefficient(preset.distortion_px, fp_radius)
    wcs = detector_wcs(obs.boresight_ra, obs.boresight_dec, obs.rotpa, tuple(offset), (nx, ny), k)
    psf_model = PsfModel(obs, offset, (nx, ny), fp_radius)

    e_per_njy = electrons_per_njy(obs.band, obs.exptime, obs.airmass)
    sky_e = float(mag_to_njy(obs.sky_mag)) * PIXEL_SCALE**2 * electrons_per_njy(obs.band, obs.exptime, 1.0)
    min_flux_e = 0.5 * np.sqrt(sky_e)

    # positions and fluxes at mid-exposure of everything near this detector
    mjd = obs.mjd_mid
    ra, dec = cat.position_at(mjd)
    flux = cat.flux_at(obs.band, mjd)
    centre_ra, centre_dec = wcs.all_pix2world([(nx - 1) / 2.0], [(ny - 1) / 2.0], 0)
    reach = (np.hypot(nx, ny) / 2.0 + DRAW_MARGIN + 2 * preset.distortion_px) * PIXEL_SCALE / 3600.0
    cos_sep = np.sin(np.radians(dec)) * np.sin(np.radians(centre_dec[0])) + np.cos(np.radians(dec)) * np.cos(
        np.radians(centre_dec[0])
    ) * np.cos(np.radians(ra - centre_ra[0]))
    near = np.flatnonzero(cos_sep > np.cos(np.radians(reach)))
    x, y = sky_to_pixel(wcs, ra[near], dec[near])
    inside = (x > -DRAW_MARGIN) & (x < nx - 1 + DRAW_MARGIN) & (y > -DRAW_MARGIN) & (y < ny - 1 + DRAW_MARGIN)
    near, x, y = near[inside], x[inside], y[inside]
    flux_e = flux[near] * e_per_njy
    draw = flux_e >= min_flux_e

    # draw
    scene = galsim.ImageD(nx, ny, xmin=0, ymin=0)
    rows, dx, dy, df = near[draw], x[draw], y[draw], flux_e[draw]
    jacs = local_jacobians(wcs, dx, dy)
    fwhm, g1, g2 = psf_model.parameters(dx, dy)
    for j, i in enumerate(rows):
        prof = _object_profile(cat, i, df[j], psf_model.profile(fwhm[j], g1[j], g2[j]), obs)
        size = None
        if cat.kind[i] != GALAXY:  # GalSim's automatic size would lose ~0.5 % of a point source
            size = 2 * int(np.ceil(STAMP_RADIUS_FWHM * fwhm[j] / PIXEL_SCALE)) + 1
        stamp = prof.drawImage(nx=size, ny=size, wcs=galsim_jacobian(jacs[j]), center=galsim.PositionD(dx[j], dy[j]))
        overlap = stamp.bounds & scene.bounds
        if overlap.isDefined():
            scene[overlap] += stamp[overlap]
    model = scene.array  # (ny, nx) expected source electrons

    # noise and detector effects, in electrons
    expected = model + sky_e
    counts = rng.poisson(expected).astype(float) + rng.normal(0.0, det.READ_NOISE, expected.shape)
    cr = det.cosmic_rays(rng, (ny, nx), preset.cosmic_rate, obs.exptime)
    counts += cr
    defects_rng = np.random.default_rng([seed, 2, detector])  # defect positions depend on the detector only
    bad = det.apply_bad_columns(rng, counts, det.bad_columns(defects_rng, (ny, nx)))
    sat = det.bleed_saturation(counts)
    corner = (int(offset[0] > 0), int(offset[1] > 0)) if preset.n_detectors > 1 else (0, 0)
    no_data = det.no_data_corner((ny, nx), corner)

    njy_per_e = 1.0 / e_per_njy
    image = ((counts - sky_e) * njy_per_e).astype(np.float32)
    variance = ((expected + det.READ_NOISE**2) * njy_per_e**2).astype(np.float32)
    image[no_data] = np.nan
    variance[no_data] = np.nan

    # truth rows: objects whose centre is on the detector
    on = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    if preset.epoch_mag_limit is not None:
        static = np.isin(cat.kind[near], [STAR, GALAXY])
        on &= ~static | (cat.flux[near, 2] >= mag_to_njy(preset.epoch_mag_limit))
    epochs = {
        "id": cat.id[near[on]],
        "x": x[on],
        "y": y[on],
        "ra": ra[near[on]],
        "dec": dec[near[on]],
        "flux": flux[near[on]],
        "drawn": draw[on],
    }
    cy, cx = np.nonzero(cr)
    cosmics = {"x": cx.astype(np.int32), "y": cy.astype(np.int32), "flux": cr[cy, cx] * njy_per_e}

    psf_x, psf_y, stamps = _psf_grid(psf_model, wcs, (nx, ny)) if write_psf else (np.empty(0), np.empty(0), None)
    sky_sigma_njy = np.sqrt(sky_e + det.READ_NOISE**2) * njy_per_e
    cfwhm = psf_model.parameters(np.array([(nx - 1) / 2.0]), np.array([(ny - 1) / 2.0]))[0][0]
    conditions = {
        "seeing": float(cfwhm),
        "sky_mag": obs.sky_mag,
        "sky_electrons": sky_e,
        "njy_per_electron": njy_per_e,
        "zero_point": float(njy_to_mag(obs.exptime / e_per_njy)),  # AB mag giving 1 e-/s
        "sky_noise": float(sky_sigma_njy),
        "read_noise": det.READ_NOISE,
        "full_well": det.FULL_WELL,
        "n_drawn": int(draw.sum()),  # objects drawn with their centre within DRAW_MARGIN of the detector
        "center_ra": float(centre_ra[0]),
        "center_dec": float(centre_dec[0]),
        # 5-sigma point-source depth: n_eff = 2.266 (FWHM/pixel)^2 pixels of sky noise (SMTN-002)
        "m5": float(njy_to_mag(5.0 * sky_sigma_njy * np.sqrt(2.266 * (cfwhm / PIXEL_SCALE) ** 2))),
    }
    masks = {"BAD": bad, "SAT": sat, "NO_DATA": no_data}
    return Rendered(image, variance, masks, wcs, stamps, psf_x, psf_y, epochs, cosmics, conditions)


def _psf_grid(psf_model: PsfModel, wcs: WCS, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PSF stamps (pixel-convolved, normalised) at the centres of a PSF_GRID x PSF_GRID tiling."""
    nx, ny = shape
    gx = np.round((np.arange(PSF_GRID) + 0.5) * nx / PSF_GRID - 0.5)
    gy = np.round((np.arange(PSF_GRID) + 0.5) * ny / PSF_GRID - 0.5)
    px, py = (a.ravel() for a in np.meshgrid(gx, gy))
    fwhm, g1, g2 = psf_model.parameters(px, py)
    half = int(np.ceil(STAMP_RADIUS_FWHM * fwhm.max() / PIXEL_SCALE)) + 1
    size = max(MIN_PSF_STAMP, 2 * half + 1)
    jacs = local_jacobians(wcs, px, py)
    stamps = np.empty((px.size, size, size), np.float32)
    for j in range(px.size):
        img = psf_model.profile(fwhm[j], g1[j], g2[j]).drawImage(nx=size, ny=size, wcs=galsim_jacobian(jacs[j]))
        stamps[j] = img.array / img.array.sum()
    return px, py, stamps
