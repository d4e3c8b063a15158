"""Artifact rejection between warps, after CompareWarpAssembleCoadd: find pixels where one warp
disagrees with the others (cosmic rays, moving objects, satellite trails, transients).

The comparison runs on ``bin_size`` x ``bin_size`` binned warps (block means of the usable pixels,
``bin_warp``): an artifact worth rejecting spans the PSF, which the comparison blurs to the worst
seeing anyway, so binning costs little sensitivity and makes the blur and the median bin_size^2
times cheaper.
Each binned warp is blurred with a Gaussian to a common PSF a little broader than the worst seeing
(Gaussian PSF approximation), so that seeing differences do not look like outliers. The reference at
each bin is the median of the blurred warps (N >= 3) or, for N = 2, the other warp. A bin of warp i
is an outlier when |d_i| > nsigma * noise_i + rel_tol * |reference|, d_i = blurred_i - reference.
noise_i = c_i sqrt(var_i) follows the warp's binned variance (so source photon noise counts), with
c_i the robust (MAD) scatter of d_i / sqrt(var_i), which absorbs the binning, the blur, the warp
covariance and the reference's own noise; ``rel_tol`` absorbs the imperfect (non-Gaussian) PSF
matching in bright stars. As in LSST's CompareWarp, a bin flagged in more than
``max_epoch_fraction`` of the inputs (at least one) is a PSF or model mismatch, not an artifact, and
is kept. With two inputs an outlier cannot be attributed by majority, so only positive ones are
flagged, in the brighter warp (cosmic rays, trails and asteroids add light). Outlier regions are
grown by ``grow`` pixels (rounded up to whole bins). Bins with an unusable pixel within the blur's
reach are not tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_MAD_TO_SIGMA = 1.4826
_SUBSAMPLE = 7  # every 7th bin (a prime: no alignment with the rows) for the noise estimate
_TRUNCATE = 4.0  # Gaussian blur truncated at 4 sigma (scipy's default)


@dataclass(frozen=True)
class ClipConfig:
    """Thresholds of the artifact rejection."""

    nsigma: float = 7.0
    rel_tol: float = 0.5
    grow: int = 2  # px added around each outlier region
    min_inputs: int = 2  # fewer inputs: no rejection
    extra_blur: float = 1.0  # px (sigma) added in quadrature to the worst seeing for the comparison
    max_epoch_fraction: float = 0.4
    bin_size: int = 2  # px per side of the bins the comparison runs on (4 blurs too little per bin for good seeing)

    def __post_init__(self) -> None:
        if (self.nsigma <= 0 or self.rel_tol < 0 or self.grow < 0 or self.min_inputs < 2 or self.extra_blur < 0
                or not 0 < self.max_epoch_fraction <= 1 or not 1 <= self.bin_size <= 15):
            raise ValueError(f"ClipConfig: nsigma > 0, rel_tol >= 0, grow >= 0, min_inputs >= 2, extra_blur >= 0, "
                             f"0 < max_epoch_fraction <= 1, 1 <= bin_size <= 15 required, got {self}")


def matching_sigmas(psf_sigmas: np.ndarray, extra: float = 0.0) -> np.ndarray:
    """Gaussian blur (px) that brings each PSF sigma to sqrt(largest^2 + extra^2)."""
    psf_sigmas = np.asarray(psf_sigmas, dtype=float)
    return np.sqrt(np.clip(psf_sigmas.max() ** 2 + extra**2 - psf_sigmas**2, 0.0, None))


def halo(blur_sigmas: np.ndarray, config: ClipConfig) -> int:
    """Rows of context (px, a multiple of ``bin_size``) a block needs on each side for the blur and the growth."""
    size = config.bin_size
    blur_bins = float(np.max(blur_sigmas, initial=0.0)) / size
    return size * (math.ceil(_TRUNCATE * blur_bins) + math.ceil(config.grow / size) + 1)


def _block_sum(a: np.ndarray, size: int) -> np.ndarray:
    """Sums over size x size blocks by adding strided slices (numpy's reshape-sum over the inner
    axes is ~5x slower); a partial last row or column of blocks is zero-padded."""
    rows, cols = a.shape
    pr, pc = -rows % size, -cols % size
    if pr or pc:
        a = np.pad(a, ((0, pr), (0, pc)))
    if size == 1:
        return a.astype(np.float32)
    acc = a[0::size] + a[1::size]
    for k in range(2, size):
        acc += a[k::size]
    out = acc[:, 0::size] + acc[:, 1::size]
    for k in range(2, size):
        out += acc[:, k::size]
    return out


def bin_warp(image: np.ndarray, variance: np.ndarray, usable: np.ndarray, size: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block means of one warp's rows, ``image`` and ``variance`` zero where not ``usable``:
    (flux = sum of usable values / size^2, usable fraction, mean variance of the usable pixels, NaN
    where none); float32."""
    scale = np.float32(1.0 / (size * size))
    count = _block_sum(usable.view(np.uint8), size).astype(np.float32)  # at most size^2 <= 225 per block
    with np.errstate(invalid="ignore", divide="ignore"):
        var = _block_sum(variance, size) / count
    return _block_sum(image, size) * scale, count * scale, var


def _nanmedian_first_axis(stack: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN (NaN where all are): one sort instead of np.nanmedian's
    per-column Python loop."""
    ordered = np.sort(stack, axis=0)  # NaN sort last
    n = np.isfinite(stack).sum(axis=0)
    lo = np.take_along_axis(ordered, np.maximum((n - 1) // 2, 0)[None], axis=0)[0]
    hi = np.take_along_axis(ordered, (n // 2)[None], axis=0)[0] if stack.shape[0] > 1 else lo
    median = 0.5 * (lo + hi)
    median[n == 0] = np.nan
    return median


def _covered(cover: np.ndarray, sigma: float) -> np.ndarray:
    """Bins whose blurred value sees only fully usable bins: every bin within the reach r of the
    Gaussian (the largest offset whose 1-D weight exceeds 1e-3, so that a missing row or column of
    bins there would bias the blur by > 0.1 %) has cover 1. A separable minimum filter instead of a
    second blur (of the coverage) per warp."""
    full = (cover >= 1).view(np.uint8)
    if sigma <= 0:
        return full.view(bool)
    offsets = np.arange(1, math.ceil(_TRUNCATE * sigma) + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= 1 + 2 * weights.sum()
    reach = int(offsets[weights > 1e-3].max(initial=0))
    return ndimage.minimum_filter(full, size=2 * reach + 1, mode="constant", cval=0).view(bool)


def find_outliers(flux: np.ndarray, cover: np.ndarray, variance: np.ndarray, blur_sigmas: np.ndarray,
                  config: ClipConfig) -> np.ndarray:
    """Boolean (N, rows, cols) outlier map of N binned warps (``bin_warp`` outputs stacked).

    ``blur_sigmas``: per-warp matching blur in full-resolution px.
    """
    n = flux.shape[0]
    out = np.zeros(flux.shape, dtype=bool)
    if n < config.min_inputs:
        return out
    blurred = np.empty(flux.shape, dtype=np.float32)
    for i in range(n):
        sigma = blur_sigmas[i] / config.bin_size
        if sigma > 0:
            blurred[i] = ndimage.gaussian_filter(flux[i], sigma, mode="constant", truncate=_TRUNCATE)
        else:
            blurred[i] = flux[i]
        blurred[i][~_covered(cover[i], sigma)] = np.nan
    reference = blurred[::-1] if n == 2 else _nanmedian_first_axis(blurred)[None]
    grow = math.ceil(config.grow / config.bin_size)
    for i in range(n):
        ref = reference[i if n == 2 else 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            d = blurred[i] - ref
            sigma = np.sqrt(np.where(variance[i] > 0, variance[i], np.nan))
            z = d / sigma
        sample = z.ravel()[::_SUBSAMPLE]
        sample = sample[np.isfinite(sample)]
        if sample.size < 50:
            continue
        scale = _MAD_TO_SIGMA * np.median(np.abs(sample - np.median(sample)))
        with np.errstate(invalid="ignore"):
            limit = config.nsigma * scale * sigma + config.rel_tol * np.abs(ref)
            seeds = (d > limit) if n == 2 else (np.abs(d) > limit)
        if grow and seeds.any():
            seeds = ndimage.binary_dilation(seeds, iterations=grow, structure=np.ones((3, 3), bool))
        out[i] = seeds & (cover[i] > 0)
    max_epochs = max(1, int(config.max_epoch_fraction * n))
    out &= (out.sum(axis=0) <= max_epochs)[None]
    return out
