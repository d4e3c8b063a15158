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

import numba
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


@numba.njit(cache=True, nogil=True)
def usable_pixel(value: float, variance: float, mask: int, bad_bits: int) -> bool:
    """A warp pixel enters the coadd (and the comparison) when image and variance are finite and no
    bad mask bit is set. Branch-free (x - x == 0 is False for NaN and inf) so loops using it vectorise."""
    return (value - value == 0) & (variance - variance == 0) & ((mask & bad_bits) == 0)


@numba.njit(cache=True, nogil=True)
def _bin_usable(image: np.ndarray, variance: np.ndarray, mask: np.ndarray, bad_bits: int, size: int,
                out: np.ndarray) -> None:
    """``bin_warp`` into ``out`` (3, bin rows, bin columns). A per-pixel loop: one pass over the
    three planes, where numpy needs ~10 full-size temporaries (usable map, zeroed copies, block sums);
    per-column sums over the bin's rows first (a branch-free loop that vectorises), then per bin."""
    rows, cols = image.shape
    flux = np.empty(cols, np.float32)  # float32: sums of at most 15 values; half the work of float64
    var = np.empty(cols, np.float32)
    count = np.empty(cols, np.float32)
    zero, one = np.float32(0.0), np.float32(1.0)
    scale = 1.0 / (size * size)
    for br in range(out.shape[1]):
        flux[:] = zero
        var[:] = zero
        count[:] = zero
        for r in range(br * size, min(br * size + size, rows)):
            for c in range(cols):
                value, v = image[r, c], variance[r, c]
                ok = usable_pixel(value, v, mask[r, c], bad_bits)
                flux[c] += value if ok else zero
                var[c] += v if ok else zero
                count[c] += one if ok else zero
        for b in range(out.shape[2]):
            f, v, n = 0.0, 0.0, 0.0
            for c in range(b * size, min(b * size + size, cols)):
                f += flux[c]
                v += var[c]
                n += count[c]
            out[0, br, b] = f * scale
            out[1, br, b] = n * scale
            out[2, br, b] = v / n if n > 0 else np.nan


def bin_warp(image: np.ndarray, variance: np.ndarray, mask: np.ndarray, bad_bits: int, size: int,
             out: np.ndarray | None = None) -> np.ndarray:
    """Block means of one warp's rows over its usable pixels (``usable_pixel``), float32 (3, bin rows,
    bin columns): flux = sum of usable values / size^2, usable fraction, mean variance of the usable
    pixels (NaN where none). A partial last row or column of blocks counts its missing pixels as
    unusable. ``out``: optional float32 array of that shape to fill."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    variance = np.ascontiguousarray(variance, dtype=np.float32)
    mask = np.ascontiguousarray(mask, dtype=np.int32)
    shape = (3, -(-image.shape[0] // size), -(-image.shape[1] // size))
    if out is None:
        out = np.empty(shape, np.float32)
    _bin_usable(image, variance, mask, int(bad_bits), int(size), out)
    return out


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
