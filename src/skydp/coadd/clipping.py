"""Artifact rejection between warps, after CompareWarpAssembleCoadd: find pixels where one warp
disagrees with the others (cosmic rays, moving objects, satellite trails, transients).

Each warp is first blurred with a Gaussian to a common PSF a little broader than the worst seeing
(Gaussian PSF approximation), so that seeing differences do not look like outliers. The reference at
each pixel is the median of the blurred warps (N >= 3) or, for N = 2, the other warp. A pixel of
warp i is an outlier when |d_i| > nsigma * noise_i + rel_tol * |reference|, d_i = blurred_i -
reference. noise_i = c_i sqrt(var_i) follows the warp's variance plane (so source photon noise
counts), with c_i the robust (MAD) scatter of d_i / sqrt(var_i) in the block, which absorbs the blur,
the warp covariance and the reference's own noise; ``rel_tol`` absorbs the imperfect (non-Gaussian)
PSF matching in bright stars. As in LSST's CompareWarp, a pixel flagged in more than
``max_epoch_fraction`` of the inputs (at least one) is a PSF or model mismatch, not an artifact, and
is kept. With two inputs an outlier cannot be attributed by majority, so only positive ones are
flagged, in the brighter warp (cosmic rays, trails and asteroids add light). Outlier regions are
grown by ``grow`` pixels. Pixels not covered within the blur are not tested.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_MAD_TO_SIGMA = 1.4826
_SUBSAMPLE = 3  # every 3rd pixel per axis for the block noise estimate


@dataclass(frozen=True)
class ClipConfig:
    """Thresholds of the artifact rejection."""

    nsigma: float = 7.0
    rel_tol: float = 0.5
    grow: int = 2  # px added around each outlier region
    min_inputs: int = 2  # fewer inputs: no rejection
    extra_blur: float = 1.0  # px (sigma) added in quadrature to the worst seeing for the comparison
    max_epoch_fraction: float = 0.4

    def __post_init__(self) -> None:
        if (self.nsigma <= 0 or self.rel_tol < 0 or self.grow < 0 or self.min_inputs < 2 or self.extra_blur < 0
                or not 0 < self.max_epoch_fraction <= 1):
            raise ValueError(f"ClipConfig: nsigma > 0, rel_tol >= 0, grow >= 0, min_inputs >= 2, extra_blur >= 0, "
                             f"0 < max_epoch_fraction <= 1 required, got {self}")


def matching_sigmas(psf_sigmas: np.ndarray, extra: float = 0.0) -> np.ndarray:
    """Gaussian blur (px) that brings each PSF sigma to sqrt(largest^2 + extra^2)."""
    psf_sigmas = np.asarray(psf_sigmas, dtype=float)
    return np.sqrt(np.clip(psf_sigmas.max() ** 2 + extra**2 - psf_sigmas**2, 0.0, None))


def halo(blur_sigmas: np.ndarray, config: ClipConfig) -> int:
    """Rows of context a block needs on each side for the blur and the growth."""
    return int(np.ceil(4.0 * float(np.max(blur_sigmas, initial=0.0)))) + config.grow + 1


def find_outliers(images: np.ndarray, variances: np.ndarray, usable: np.ndarray, blur_sigmas: np.ndarray,
                  config: ClipConfig) -> np.ndarray:
    """Boolean (N, rows, cols) outlier map of N warps' pixel blocks.

    ``images``, ``variances`` (N, rows, cols) float32; ``usable`` where a warp's pixel may be used.
    """
    n = images.shape[0]
    out = np.zeros(images.shape, dtype=bool)
    if n < config.min_inputs:
        return out
    blurred = np.empty(images.shape, dtype=np.float32)
    covered = np.empty(images.shape, dtype=bool)
    for i in range(n):
        filled = np.where(usable[i], images[i], 0).astype(np.float32)
        if blur_sigmas[i] > 0:
            weight = ndimage.gaussian_filter(usable[i].astype(np.float32), blur_sigmas[i], mode="constant")
            blurred[i] = ndimage.gaussian_filter(filled, blur_sigmas[i], mode="constant")
            covered[i] = weight > 0.999
        else:
            blurred[i], covered[i] = filled, usable[i]
    blurred[~covered] = np.nan
    if n == 2:
        reference = blurred[::-1]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns outside every warp
            reference = np.nanmedian(blurred, axis=0)[None]
    for i in range(n):
        with np.errstate(invalid="ignore", divide="ignore"):
            d = blurred[i] - reference[0 if n > 2 else i]
            sigma = np.sqrt(np.where(usable[i] & (variances[i] > 0), variances[i], np.nan))
            z = d / sigma
        sample = z[::_SUBSAMPLE, ::_SUBSAMPLE]
        sample = sample[np.isfinite(sample)]
        if sample.size < 50:
            continue
        scale = _MAD_TO_SIGMA * np.median(np.abs(sample - np.median(sample)))
        with np.errstate(invalid="ignore"):
            limit = config.nsigma * scale * sigma + config.rel_tol * np.abs(reference[0 if n > 2 else i])
            seeds = (d > limit) if n == 2 else (np.abs(d) > limit)
        if config.grow and seeds.any():
            seeds = ndimage.binary_dilation(seeds, iterations=config.grow, structure=np.ones((3, 3), bool))
        out[i] = seeds & usable[i]
    max_epochs = max(1, int(config.max_epoch_fraction * n))
    out &= (out.sum(axis=0) <= max_epochs)[None]
    return out
