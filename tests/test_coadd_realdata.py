"""Warping and coadding real images: the JWST/NIRCam two-epoch pair (coadd noise falls by sqrt(2))
and DECam epochs on different CCDs (warped to one TAN grid, the same sources coincide within 0.1")."""

from __future__ import annotations

import math
import warnings

import numpy as np
import sep
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS, FITSFixedWarning
from conftest import shared_data
from scipy import ndimage

from skydp.coadd import make_coadd
from skydp.exposure import Exposure, Mask, VisitInfo, read_exposure
from skydp.warp import warp_exposure

JWST = "jwst_nircam_a2744_2epoch"
EPOCHS = ("jw01324001001-01324-o001_t001_nircam_clear-f200w_i2d_stamp",
          "jw02561001002-02561-o001_t003_nircam_clear-f200w_i2d_stamp")
DECAM_PAIRS = {"g": ("c4d_181104_072440_{}_g_ls9.S4.fits", "c4d_181214_050844_{}_g_ls9.S9.fits"),
               "r": ("c4d_171113_061941_{}_r_ls9.S4.fits", "c4d_181215_051332_{}_r_ls9.S9.fits"),
               "z": ("c4d_150110_053718_{}_z_ls9.S4.fits", "c4d_181215_045000_{}_z_ls9.S9.fits")}


def _jwst_epoch(name: str) -> Exposure:
    """The epoch in nJy (read_exposure converts MJy/sr) with variance from its 1-sigma ERR map, same units."""
    folder = shared_data(JWST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exposure = read_exposure(folder / f"{name}.fits")
    raw = fits.getdata(folder / f"{name}.fits").astype(np.float64)
    err = fits.getdata(folder / f"{name}.noise.fits").astype(np.float64)
    ok = np.isfinite(raw) & (raw != 0) & np.isfinite(exposure.image)
    to_njy = float(np.median(exposure.image[ok] / raw[ok]))
    exposure.variance = ((err * to_njy) ** 2).astype(np.float32)
    return exposure


def test_jwst_two_epoch_coadd_lowers_noise_by_sqrt2() -> None:
    epochs = [_jwst_epoch(name) for name in EPOCHS]
    assert np.allclose(epochs[0].wcs.wcs.crval, epochs[1].wcs.wcs.crval)  # already on one grid
    coadd = make_coadd(epochs).exposure
    image = np.nan_to_num(coadd.image)
    smooth = ndimage.gaussian_filter(image, 2.0)
    _, _, smooth_std = sigma_clipped_stats(smooth[np.isfinite(coadd.image)])
    quiet = ~ndimage.binary_dilation(np.abs(smooth) > 3 * smooth_std, iterations=5)
    quiet &= np.isfinite(coadd.image) & np.isfinite(epochs[0].image) & np.isfinite(epochs[1].image)
    assert quiet.sum() > 100000
    noise = [sigma_clipped_stats(e.image[quiet])[2] for e in epochs]
    noise_coadd = sigma_clipped_stats(coadd.image[quiet])[2]
    # with inverse-variance weights the coadd noise is 1/sqrt(sum 1/sigma_i^2): sqrt(2) below equal epochs
    expected = 1 / math.sqrt(sum(1 / n**2 for n in noise))
    assert abs(noise_coadd / expected - 1) < 0.1
    assert abs(math.sqrt(noise[0] * noise[1]) / noise_coadd / math.sqrt(2) - 1) < 0.1


def _decam(name: str) -> Exposure:
    """A CP cut-out (image, inverse variance, data quality) as a sky-subtracted Exposure (ADU)."""
    folder = shared_data("legacypipe_decam_multiepoch", "testcase6", "images")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        with fits.open(folder / name.format("ooi")) as hdul:
            image = hdul[1].data.astype(np.float64)
            wcs = WCS(hdul[1].header)  # TPV: wcslib applies the polynomial in all_pix2world
        weight = fits.getdata(folder / name.format("oow"), 1).astype(np.float64)
        quality = fits.getdata(folder / name.format("ood"), 1)
    mask = Mask.empty(image.shape)
    mask.set("BAD", (quality != 0) | (weight <= 0))
    background = sep.Background(np.ascontiguousarray(image), mask=mask.get("BAD"), bw=32, bh=32)
    variance = np.where(weight > 0, 1 / np.where(weight > 0, weight, 1), np.nan)
    return Exposure(image=image - background.back(), variance=variance, mask=mask, wcs=wcs,
                    info=VisitInfo(band=name.split("_")[-2]))


def _sources(exposure: Exposure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ra, dec, clean) of sep detections (3 sigma, 5 px, no deblending) with windowed centroids;
    clean = no masked or missing pixel within 4 px (the saturated star's masked core and bleed
    trails make the centroids of the detections around it depend on the mask)."""
    bad = ~np.isfinite(exposure.image) | (exposure.mask.array != 0)
    image = np.ascontiguousarray(np.where(bad, 0, exposure.image).astype(np.float64))
    err = np.ascontiguousarray(np.sqrt(np.where(bad, np.nanmax(exposure.variance), exposure.variance)).astype(np.float64))
    objects = sep.extract(image, 3.0, err=err, minarea=5, mask=bad, deblend_cont=1.0)
    x, y, _ = sep.winpos(image, objects["x"], objects["y"], np.full(len(objects), 2.0))
    near_bad = ndimage.binary_dilation(bad, iterations=4)
    ny, nx = exposure.shape
    clean = ~near_bad[np.clip(np.round(y).astype(int), 0, ny - 1), np.clip(np.round(x).astype(int), 0, nx - 1)]
    ra, dec = exposure.pixel_to_sky(x + exposure.xy0[0], y + exposure.xy0[1])
    return ra, dec, clean


def _nearest_arcsec(ra0: np.ndarray, dec0: np.ndarray, ra1: np.ndarray, dec1: np.ndarray) -> np.ndarray:
    if len(ra0) == 0 or len(ra1) == 0:
        return np.full(len(ra0), np.inf)
    cos_dec = np.cos(np.radians(np.mean(dec0)))
    return (np.hypot((ra0[:, None] - ra1[None]) * cos_dec, dec0[:, None] - dec1[None]) * 3600).min(axis=1)


def test_decam_epochs_warped_to_one_grid() -> None:
    """Warping keeps every source where the input's TPV WCS puts it (< 0.02"), and clean sources of the
    two epochs of a band, from different CCDs, coincide on the common grid (< 0.1")."""
    keep, cross = [], []
    for band, (first, second) in DECAM_PAIRS.items():
        epochs = [_decam(first), _decam(second)]
        ra, dec = epochs[0].pixel_to_sky(np.array([49.5]), np.array([49.5]))
        grid = WCS(naxis=2)
        grid.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        grid.wcs.crval = [float(ra[0]), float(dec[0])]
        grid.wcs.crpix = [60.5, 60.5]
        grid.wcs.cd = np.diag([-0.25, 0.25]) / 3600  # 0.25"/px, not the 0.262"/px of the inputs
        warps = [warp_exposure(e, grid, (120, 120)) for e in epochs]
        assert make_coadd(warps).input_count.max() == 2
        found = []
        for epoch, warp in zip(epochs, warps):
            native, warped = _sources(epoch), _sources(warp)
            d = _nearest_arcsec(*native[:2], *warped[:2])
            keep.extend(d[native[2] & (d < 0.5)])
            found.append(warped)
        (ra0, dec0, clean0), (ra1, dec1, clean1) = found
        d = _nearest_arcsec(ra0[clean0], dec0[clean0], ra1[clean1], dec1[clean1])
        cross.extend(d[d < 1.0])
    print(f"DECam: native vs warped {np.round(keep, 3).tolist()}; cross-epoch {np.round(cross, 3).tolist()} arcsec")
    assert len(keep) >= 4 and np.median(keep) < 0.02
    assert len(cross) >= 1 and np.max(cross) < 0.1
