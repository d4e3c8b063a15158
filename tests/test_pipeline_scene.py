"""GalSim test scenes with known truth for the single-visit pipeline tests (and their own sanity test).

Stars are Moffat PSFs, galaxies exponential/de Vaucouleurs profiles convolved with the PSF; the PSF
FWHM may vary linearly across the detector. Pixels are nJy; the variance plane is the exact
expected variance (sky + source Poisson term), and the noise is drawn from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import galsim
import numpy as np
from astropy.wcs import WCS

from skydp.exposure import Exposure, Mask, PixelPsf, VisitInfo

PIXEL_SCALE = 0.2  # arcsec
MOFFAT_BETA = 3.5
NJY_PER_ELECTRON = 0.5  # source Poisson term of the variance


@dataclass
class Scene:
    exposure: Exposure
    truth: dict[str, np.ndarray]  # x, y (0-based), flux (nJy), is_star, hlr (arcsec), snr (PSF S/N)
    sky_sigma: float
    fwhm_pix: np.ndarray  # PSF FWHM (px) at each truth position


def psf_fwhm_arcsec(x: np.ndarray, nx: int, fwhm: float, gradient: float) -> np.ndarray:
    return fwhm * (1.0 + gradient * (np.asarray(x, float) / nx - 0.5))


def make_scene(shape=(512, 512), n_stars=150, n_galaxies=0, fwhm=0.8, gradient=0.0, sky_sigma=20.0,
               snr_range=(5.0, 2000.0), n_cosmic_rays=0, psf_hdu=True, psf_stamp=31, seed=1,
               min_separation=0.0, star_positions=None, star_fluxes=None, visit=2026032400012,
               detector=10) -> Scene:
    rng = np.random.default_rng(seed)
    ny, nx = shape
    margin = 20
    n = n_stars + n_galaxies
    if star_positions is not None:
        xs, ys = np.asarray(star_positions, float).T
    else:
        xs, ys = _positions(rng, n, nx, ny, margin, min_separation)
    is_star = np.arange(len(xs)) < n_stars
    fw = psf_fwhm_arcsec(xs, nx, fwhm, gradient)
    # flux giving the requested PSF S/N for sky-limited noise: S/N = F / (sky_sigma sqrt(4 pi) s)
    # for a Gaussian of sigma s (px); Moffat needs a slightly larger effective area (n_eff).
    snr = np.exp(rng.uniform(np.log(snr_range[0]), np.log(snr_range[1]), len(xs)))
    neff = np.array([_neff(f / PIXEL_SCALE) for f in fw])
    flux = snr * sky_sigma * np.sqrt(neff) if star_fluxes is None else np.asarray(star_fluxes, float)
    hlr = np.where(is_star, 0.0, np.exp(rng.uniform(np.log(0.3), np.log(1.5), len(xs))))
    truth_img = np.zeros(shape, dtype=np.float64)
    for i in range(len(xs)):
        psf = galsim.Moffat(beta=MOFFAT_BETA, fwhm=fw[i])
        if is_star[i]:
            obj = psf.withFlux(flux[i])
        else:
            prof = (galsim.Exponential(half_light_radius=hlr[i]) if rng.uniform() < 0.7
                    else galsim.DeVaucouleurs(half_light_radius=hlr[i]))
            e = rng.uniform(0, 0.5)
            beta = rng.uniform(0, np.pi)
            prof = prof.shear(e1=e * np.cos(2 * beta), e2=e * np.sin(2 * beta)).withFlux(flux[i])
            obj = galsim.Convolve(prof, psf)
        size = int(min(256, max(41, 2 * int(8 * (fw[i] + 3 * hlr[i]) / PIXEL_SCALE) + 1)))
        stamp = obj.drawImage(nx=size, ny=size, scale=PIXEL_SCALE,
                              offset=(xs[i] - np.floor(xs[i] + 0.5), ys[i] - np.floor(ys[i] + 0.5)))
        _add_stamp(truth_img, stamp.array, int(np.floor(xs[i] + 0.5)), int(np.floor(ys[i] + 0.5)))
    variance = sky_sigma**2 + NJY_PER_ELECTRON * np.clip(truth_img, 0, None)
    image = truth_img + rng.normal(size=shape) * np.sqrt(variance)
    for _ in range(n_cosmic_rays):
        _add_cosmic_ray(rng, image, sky_sigma)
    psf_obj = None
    if psf_hdu:
        gx = np.linspace(0, nx - 1, 5)
        gy = np.linspace(0, ny - 1, 3)
        px, py = (a.ravel() for a in np.meshgrid(gx, gy))
        stamps = np.array([galsim.Moffat(beta=MOFFAT_BETA, fwhm=f).drawImage(
            nx=psf_stamp, ny=psf_stamp, scale=PIXEL_SCALE).array for f in psf_fwhm_arcsec(px, nx, fwhm, gradient)])
        psf_obj = PixelPsf(stamps, px, py)
    exposure = Exposure(image=image.astype(np.float32), variance=variance.astype(np.float32),
                        mask=Mask.empty(shape), wcs=tan_wcs(shape), psf=psf_obj, xy0=(0, 0),
                        info=VisitInfo(instrument="SIM", visit=visit, detector=detector, band="r",
                                       physical_filter="r_sim", day_obs=visit // 100000, mjd=61123.1,
                                       exptime=30.0, airmass=1.2, boresight_ra=150.0,
                                       boresight_dec=2.0, rotpa=0.0))
    true_snr = flux / (sky_sigma * np.sqrt(neff))
    truth = {"x": xs, "y": ys, "flux": flux, "is_star": is_star, "hlr": hlr, "snr": true_snr}
    return Scene(exposure=exposure, truth=truth, sky_sigma=sky_sigma, fwhm_pix=fw / PIXEL_SCALE)


def tan_wcs(shape) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    w.wcs.cd = np.array([[-PIXEL_SCALE, 0.0], [0.0, PIXEL_SCALE]]) / 3600.0
    return w


def _neff(fwhm_pix: float) -> float:
    """Effective number of pixels 1 / sum(P^2) of the pixelised Moffat PSF."""
    p = galsim.Moffat(beta=MOFFAT_BETA, fwhm=fwhm_pix).drawImage(nx=61, ny=61, scale=1.0).array
    return 1.0 / np.sum(p**2)


def _positions(rng, n, nx, ny, margin, min_sep):
    xs, ys = [], []
    if min_sep and n * np.pi * (min_sep / 2) ** 2 > 0.45 * (nx - 2 * margin) * (ny - 2 * margin):
        raise ValueError(f"{n} sources {min_sep} px apart do not fit on {nx}x{ny}")
    while len(xs) < n:
        x, y = rng.uniform(margin, nx - margin), rng.uniform(margin, ny - margin)
        if min_sep and xs and np.min(np.hypot(np.array(xs) - x, np.array(ys) - y)) < min_sep:
            continue
        xs.append(x)
        ys.append(y)
    return np.array(xs), np.array(ys)


def _add_stamp(img, stamp, cx, cy):
    s = stamp.shape[0]
    h = s // 2
    y0, x0 = cy - h, cx - h
    ys, xs = slice(max(y0, 0), min(y0 + s, img.shape[0])), slice(max(x0, 0), min(x0 + s, img.shape[1]))
    img[ys, xs] += stamp[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]


def _add_cosmic_ray(rng, image, sky_sigma):
    """A short sharp track of 1-4 pixels, 30-300 sigma each."""
    ny, nx = image.shape
    x, y = rng.integers(5, nx - 5), rng.integers(5, ny - 5)
    dx, dy = [(1, 0), (0, 1), (1, 1), (1, -1)][rng.integers(4)]
    for k in range(rng.integers(1, 5)):
        image[y + k * dy, x + k * dx] += rng.uniform(30, 300) * sky_sigma


def truth_match(found_x, found_y, true_x, true_y, radius=1.5):
    """Index of the nearest found source within ``radius`` px of each truth position (-1: none)."""
    from scipy.spatial import cKDTree

    if len(found_x) == 0:
        return np.full(len(true_x), -1)
    d, i = cKDTree(np.column_stack([found_x, found_y])).query(np.column_stack([true_x, true_y]))
    return np.where(d <= radius, i, -1)


def test_scene_flux_is_conserved():
    scene = make_scene(shape=(256, 256), n_stars=20, sky_sigma=1e-3, seed=3, star_fluxes=np.full(20, 1e8))
    drawn = scene.exposure.image.sum()
    assert abs(drawn / scene.truth["flux"].sum() - 1) < 1e-3
