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
_MIN_SAMPLE = 50  # bins needed for that estimate
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


@numba.njit(cache=True, nogil=True)
def _nanmedian_first_axis(stack: np.ndarray) -> np.ndarray:
    """Median over axis 0 of a float32 (N, rows, cols) stack ignoring NaN (NaN where all are).

    Row by row, the N values of every column are insertion-sorted with branch-free compare-exchanges
    (NaN as +inf, after the finite values) that vectorise across the columns: O(N^2) but ~10x
    cheaper than numpy's sort over the strided first axis for the N <~ 30 inputs of a patch coadd."""
    n, rows, cols = stack.shape
    out = np.empty((rows, cols), np.float32)
    ordered = np.empty((n, cols), np.float32)
    moving = np.empty(cols, np.float32)
    count = np.empty(cols, np.int64)
    half, inf = np.float32(0.5), np.float32(np.inf)
    for r in range(rows):
        count[:] = 0
        for i in range(n):
            for c in range(cols):
                v = stack[i, r, c]
                finite = not math.isnan(v)
                count[c] += finite
                moving[c] = v if finite else inf
            for j in range(i, 0, -1):  # insert into the sorted ordered[:i]
                for c in range(cols):
                    a, b = ordered[j - 1, c], moving[c]
                    ordered[j, c] = max(a, b)
                    moving[c] = min(a, b)
            ordered[0] = moving
        for c in range(cols):
            k = count[c]
            out[r, c] = np.nan if k == 0 else half * (ordered[(k - 1) // 2, c] + ordered[k // 2, c])
    return out


@numba.njit(cache=True, nogil=True)
def _outlier_seeds(blurred: np.ndarray, reference: np.ndarray, variance: np.ndarray, nsigma: float,
                   rel_tol: float, positive_only: bool) -> np.ndarray:
    """Bins where d = blurred - reference exceeds nsigma * c * sqrt(variance) + rel_tol * |reference|
    (only d > 0 counts if ``positive_only``); c = robust (MAD) scatter of d / sqrt(variance) over
    every ``_SUBSAMPLE``-th bin. No seeds when fewer than ``_MIN_SAMPLE`` bins give that scatter.
    A per-bin loop: the numpy form made ~8 temporaries per warp and computed d / sqrt(variance) for
    every bin, where the scatter needs a subsample."""
    rows, cols = blurred.shape
    seeds = np.empty((rows, cols), np.bool_)
    sample = np.empty(-(-rows * cols // _SUBSAMPLE), np.float32)
    k = 0
    for r in range(rows):  # flat indices 0, 7, 14, ...
        for c in range(-(r * cols) % _SUBSAMPLE, cols, _SUBSAMPLE):
            var = variance[r, c]
            if var > 0:
                z = (blurred[r, c] - reference[r, c]) / np.sqrt(var)
                if math.isfinite(z):
                    sample[k] = z
                    k += 1
    if k < _MIN_SAMPLE:
        seeds[:] = False
        return seeds
    sample = sample[:k]
    noise = np.float32(nsigma * _MAD_TO_SIGMA * np.median(np.abs(sample - np.median(sample))))
    tolerance = np.float32(rel_tol)
    for r in range(rows):  # 1-D rows, branch-free (NaN compares False): vectorises
        row_var, row_ref, row_blurred, row_seeds = variance[r], reference[r], blurred[r], seeds[r]
        for c in range(cols):
            var, ref = row_var[c], row_ref[c]
            d = row_blurred[c] - ref
            limit = noise * np.sqrt(var) + tolerance * abs(ref)
            row_seeds[c] = (var > 0) & ((d if positive_only else abs(d)) > limit)
    return seeds


def _blur_weights(sigma: float) -> tuple[np.ndarray, int]:
    """Normalised 1-D Gaussian weights (radius ``_TRUNCATE`` sigma, as scipy's gaussian_filter) and the
    reach: the largest offset whose weight exceeds 1e-3, so that a missing bin farther out biases the
    blurred value by < 0.1 %."""
    if sigma <= 0:
        return np.ones(1, np.float32), 0
    offsets = np.arange(-int(_TRUNCATE * sigma + 0.5), int(_TRUNCATE * sigma + 0.5) + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    return weights.astype(np.float32), int(np.abs(offsets[weights > 1e-3]).max())


@numba.njit(cache=True, nogil=True)
def _blur_where_covered(flux: np.ndarray, cover: np.ndarray, weights: np.ndarray, reach: int) -> np.ndarray:
    """``flux`` blurred with the separable kernel ``weights`` (zero outside the array), NaN at bins with
    a bin of cover < 1 (or the array's edge) within ``reach`` bins in x or y: their blurred value
    would miss flux. Loops over 1-D rows that vectorise: scipy's gaussian_filter plus a
    minimum_filter of the coverage cost ~5x more on these few-tap kernels."""
    rows, cols = flux.shape
    radius = (weights.shape[0] - 1) // 2
    across = np.zeros((rows, cols), np.float32)
    out = np.zeros((rows, cols), np.float32)
    for r in range(rows):  # 1-D row views: numba vectorises these loops, not 2-D indexing with offsets
        source, target = flux[r], across[r]
        for k in range(-radius, radius + 1):
            w = weights[k + radius]
            lo, hi = max(0, -k), min(cols, cols - k)
            shifted, part = source[lo + k:hi + k], target[lo:hi]
            for c in range(hi - lo):
                part[c] += w * shifted[c]
    for r in range(rows):
        target = out[r]
        for k in range(max(-radius, -r), min(radius, rows - 1 - r) + 1):
            w = weights[k + radius]
            source = across[r + k]
            for c in range(cols):
                target[c] += w * source[c]
    # a bin's window of (2 reach + 1)^2 bins must lie inside the array and be fully covered: AND of
    # shifted rows, first along x then along y
    full = np.empty((rows, cols), np.bool_)
    for r in range(rows):
        row_cover, row_full = cover[r], full[r]
        for c in range(cols):
            row_full[c] = row_cover[c] >= 1
    width = 2 * reach + 1
    ok_x = np.zeros((rows, cols), np.bool_)
    if cols >= width:
        for r in range(rows):
            source, part = full[r], ok_x[r, reach:cols - reach]
            part[:] = source[:cols - width + 1]
            for k in range(1, width):
                shifted = source[k:k + cols - width + 1]
                for c in range(cols - width + 1):
                    part[c] &= shifted[c]
    nan = np.float32(np.nan)
    for r in range(rows):
        target = out[r]
        if r < reach or r >= rows - reach:
            target[:] = nan
            continue
        ok = ok_x[r - reach].copy()
        for k in range(1, width):
            below = ok_x[r - reach + k]
            for c in range(cols):
                ok[c] &= below[c]
        for c in range(cols):
            target[c] = target[c] if ok[c] else nan
    return out


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
        weights, reach = _blur_weights(blur_sigmas[i] / config.bin_size)
        blurred[i] = _blur_where_covered(flux[i], cover[i], weights, reach)
    reference = blurred[::-1] if n == 2 else _nanmedian_first_axis(blurred)[None]
    grow = math.ceil(config.grow / config.bin_size)
    for i in range(n):
        # with two inputs an outlier cannot be attributed by majority: only the brighter one is flagged
        seeds = _outlier_seeds(blurred[i], reference[i if n == 2 else 0], variance[i], config.nsigma,
                               config.rel_tol, n == 2)
        if grow and seeds.any():
            seeds = ndimage.binary_dilation(seeds, iterations=grow, structure=np.ones((3, 3), bool))
        out[i] = seeds & (cover[i] > 0)
    max_epochs = max(1, int(config.max_epoch_fraction * n))
    out &= (out.sum(axis=0) <= max_epochs)[None]
    return out
