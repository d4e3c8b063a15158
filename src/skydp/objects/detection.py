"""Multi-band detection: per-band PSF-smoothed S/N images combined into one chi-squared image.

Each band's S/N image ``skydp.pipeline.detection.snr_image`` (the image correlated with a Gaussian
of that band's PSF sigma over the square root of the equally smoothed variance) is divided by its
own noise: the standard deviation of the S/N image on blank sky (``_noise_scale``). On a coadd the variance plane ignores the pixel covariance that warping introduces, so the
raw S/N image has a standard deviation above 1; after this empirical normalisation every band's
S/N image is N(0, 1) on blank sky (LSST coadd detection thresholds in units of the measured
smoothed-image noise for the same reason, ``thresholdType="pixel_stdev"``). The same factor
rescales the variance plane used for every flux error, so the errors include the covariance too.

Combination (Szalay, Connolly & Szokoly 1999, AJ 117, 68, restricted to positive deviations so
that negative artefacts are not detected): t = sum_b max(s_b, 0)^2 over the n bands with data at
the pixel. Under the null hypothesis (independent N(0, 1) bands) t is 0 with probability 2^-n and
otherwise a binomial mixture of chi-squared laws,
    P(t > T) = sum_{k=1..n} C(n, k) 2^-n P(chi2_k > T).
It is mapped pixel by pixel to the Gaussian-equivalent significance z = Phi^-1(1 - P(t > T)), so
the detection threshold (5) has the one-sided tail probability of a 5-sigma Gaussian (2.9e-7 per
pixel) whatever the number of bands; with one band z is exactly that band's S/N.
Footprints, peaks and the multi-threshold deblending are ``skydp.pipeline.detection.detect`` on z.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from astropy.stats import sigma_clipped_stats
from scipy import stats
from scipy.special import comb

from skydp.exposure import Exposure
from skydp.pipeline.detection import Footprints, detect, disk_dilate, snr_image

UNUSABLE_PLANES = ("BAD", "SAT", "NO_DATA")  # removed from every fit and sum, as in single-visit processing
_U_TABLE_MAX = 35.0  # sqrt(t) up to which the null tail probability is tabulated (P > 1e-270)


@dataclass
class BandPlanes:
    """One band's coadd prepared for detection and measurement (array frame).

    ``image`` and ``variance`` are zero at unusable pixels; ``variance`` is already multiplied by
    ``noise_scale**2`` (see the module docstring).
    """

    band: str
    exposure: Exposure
    image: np.ndarray
    variance: np.ndarray
    unusable: np.ndarray
    sigma: float  # PSF Gaussian sigma (px) at the patch centre
    noise_scale: float


def prepare_band(band: str, exposure: Exposure, noise_sample: int) -> tuple[BandPlanes, np.ndarray]:
    """Planes of one band and its noise-normalised S/N image."""
    if exposure.variance is None:
        raise ValueError(f"band {band}: the coadd has no variance plane")
    if exposure.psf is None:
        raise ValueError(f"band {band}: the coadd has no PSF model")
    mask = exposure.mask
    bits = mask.bitmask(*[p for p in UNUSABLE_PLANES if p in mask.planes])
    unusable = ((mask.array & bits) != 0) | ~np.isfinite(exposure.image) | ~np.isfinite(exposure.variance)
    unusable |= ~(exposure.variance > 0)
    if unusable.all():
        raise ValueError(f"band {band}: the coadd has no usable pixel")
    image = np.where(unusable, np.float32(0), exposure.image).astype(np.float32)
    variance = np.where(unusable, np.float32(0), exposure.variance).astype(np.float32)
    ny, nx = exposure.shape
    sigma = exposure.psf.shape(exposure.xy0[0] + (nx - 1) / 2.0, exposure.xy0[1] + (ny - 1) / 2.0).sigma
    snr = snr_image(image, variance, sigma)
    scale = _noise_scale(snr, sigma, noise_sample)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"band {band}: the S/N image has no measurable noise (robust std {scale})")
    snr /= scale
    variance *= np.float32(scale**2)
    return BandPlanes(band, exposure, image, variance, unusable, float(sigma), float(scale)), snr


def _noise_scale(snr: np.ndarray, sigma: float, n_sample: int) -> float:
    """Standard deviation of the S/N image on blank sky.

    A first, robust (3-sigma-clipped MAD) estimate finds the pixels above 5 of it; those, grown by
    4 PSF sigma (the smoothed profiles' reach), are removed, and the noise is the rms of the remaining
    negative pixels: sources only add positive signal, so the negative half of the sky distribution is
    the least contaminated by the wings of bright and crowded sources, and for symmetric noise its rms is
    the standard deviation.
    """
    valid = snr != 0  # snr_image is exactly 0 where the smoothed variance is 0 (no data)
    values = snr[valid]
    if values.size < 100:
        return float("nan")
    step = max(1, values.size // n_sample)
    _, _, first = sigma_clipped_stats(values[::step], sigma=3.0, maxiters=5, cenfunc="median", stdfunc="mad_std")
    near = disk_dilate((snr > 5 * first).view(np.uint8), 4 * sigma).view(bool)
    sky = snr[valid & ~near & (snr < 0) & (snr > -10 * first)]
    if sky.size < 100:
        return float(first)
    sky = sky[:: max(1, sky.size // n_sample)].astype(np.float64)
    return float(np.sqrt(np.mean(sky * sky)))


def significance_image(snrs: list[np.ndarray]) -> np.ndarray:
    """Gaussian-equivalent significance z of the positive chi-squared combination (module docstring)."""
    t = np.zeros(snrs[0].shape, dtype=np.float32)
    count = np.zeros(snrs[0].shape, dtype=np.int8)
    for snr in snrs:
        positive = np.maximum(snr, 0, dtype=np.float32)
        t += positive * positive
        count += snr != 0
    u = np.sqrt(t)
    z = np.zeros(t.shape, dtype=np.float32)
    for n in range(1, len(snrs) + 1):
        sel = count == n
        if sel.any():
            grid_u, grid_z = _null_table(n)
            z[sel] = np.interp(u[sel], grid_u, grid_z)
    return z


@lru_cache(maxsize=8)
def _null_table(n: int) -> tuple[np.ndarray, np.ndarray]:
    """z as a function of sqrt(t) for n bands; beyond the table z grows like sqrt(t) (slope 1)."""
    u = np.linspace(0.0, _U_TABLE_MAX, 3501)
    tail = sum(comb(n, k) * 0.5**n * stats.chi2.sf(u * u, k) for k in range(1, n + 1))
    z = stats.norm.isf(tail)
    far = 1e8
    return np.append(u, far), np.append(z, z[-1] + far - u[-1])


def detect_objects(snrs: list[np.ndarray], psf_sigma: float, threshold: float, min_area: int,
                   grow_sigma: float, deblend: bool, deblend_nthresh: int, deblend_cont: float) -> Footprints:
    """Footprints and deblended peaks on the combined significance image of ``snrs``."""
    z = significance_image(snrs)
    return detect(z, threshold, min_area, grow_sigma * psf_sigma, deblend, deblend_nthresh, deblend_cont)
