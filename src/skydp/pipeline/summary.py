"""The CcdVisit summary row of one processed visit image (DP1 column names)."""

from __future__ import annotations

import datetime
import math

import numba
import numpy as np

from skydp.exposure import Exposure
from skydp.pipeline.config import AB_ZERO_POINT_NJY

_MJD_EPOCH = datetime.datetime(1858, 11, 17)


def ccd_visit_row(exposure: Exposure, ccd_visit_id: int, psf_sigma: float, psf_kernel: np.ndarray,
                  sky_bg: float, sky_noise: float, median_variance: float, n_psf_star: int | None) -> dict:
    """CcdVisit values.

    zeroPoint: the pixels are in nJy, so the AB zero point is 31.4 mag for every image.
    magLim: 5-sigma PSF-flux limit for a point source at the median variance,
    err = sqrt(V / sum(P^2)) for the unweighted PSF fit. skyBg / skyNoise are in nJy per pixel
    (DP1 documents adu; our images are calibrated). seeing = PSF FWHM in arcsec at the centre.
    """
    info = exposure.info
    ny, nx = exposure.shape
    x0, y0 = exposure.xy0
    cx, cy = x0 + (nx - 1) / 2.0, y0 + (ny - 1) / 2.0
    ra, dec = exposure.pixel_to_sky(np.array([cx]), np.array([cy]))
    scale = exposure.pixel_scale()
    corner_ra, corner_dec = exposure.corners()
    point_err = np.sqrt(median_variance / np.sum(psf_kernel**2))
    row = {
        "ccdVisitId": int(ccd_visit_id), "visitId": int(info.visit), "detector": int(info.detector),
        "band": info.band, "physical_filter": info.physical_filter or None,
        "ra": float(ra[0]), "dec": float(dec[0]),
        "expTime": _finite(info.exptime), "darkTime": _finite(info.exptime),
        "expMidpt": _timestamp(info.mjd_mid), "expMidptMJD": _finite(info.mjd_mid),
        "obsStart": _timestamp(info.mjd), "obsStartMJD": _finite(info.mjd),
        "skyRotation": _finite(info.rotpa),
        "zenithDistance": _finite(np.degrees(np.arccos(1.0 / info.airmass)) if info.airmass >= 1 else np.nan),
        "pixelScale": float(scale), "xSize": int(nx), "ySize": int(ny),
        "zeroPoint": AB_ZERO_POINT_NJY, "psfSigma": float(psf_sigma),
        "seeing": float(2.0 * np.sqrt(2.0 * np.log(2.0)) * psf_sigma * scale),
        "skyBg": float(sky_bg), "skyNoise": float(sky_noise), "nPsfStar": n_psf_star,
        "magLim": float(AB_ZERO_POINT_NJY - 2.5 * np.log10(5.0 * point_err)),
    }
    for name, i in (("ll", 0), ("ul", 1), ("ur", 2), ("lr", 3)):
        row[f"{name}cra"] = float(corner_ra[i])
        row[f"{name}cdec"] = float(corner_dec[i])
    return row


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _timestamp(mjd: float) -> datetime.datetime | None:
    """MJD (TAI) as a naive datetime on the TAI scale (DP1 timestamps are TAI)."""
    if not np.isfinite(mjd):
        return None
    return _MJD_EPOCH + datetime.timedelta(days=float(mjd))


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def sky_noise(image: np.ndarray, exclude: np.ndarray) -> float:
    """Standard deviation (ddof 0) of the pixels of ``image`` not in ``exclude``; NaN if none.

    Compiled single pass of branch-free sums about the first kept pixel's value (so no
    cancellation when |mean| >> std; reassociation lets them vectorise): numpy's std of
    ``image[~exclude]`` first copied the selected pixels of the whole detector.
    """
    ny, nx = image.shape
    shift = math.nan
    for p in range(ny * nx):
        if not exclude[p // nx, p % nx]:
            shift = float(image[p // nx, p % nx])
            break
    if math.isnan(shift):
        return math.nan
    total = sq = count = 0.0
    for j in range(ny):
        for i in range(nx):
            keep = 0.0 if exclude[j, i] else 1.0
            d = image[j, i] - shift
            total += keep * d
            sq += keep * d * d
            count += keep
    m = total / count
    return math.sqrt(max(sq / count - m * m, 0.0))
