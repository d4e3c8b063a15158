"""Inverse-variance weighted coadd of warps on one grid, with artifact rejection (CLIPPED).

One weight per warp, 1 / median(variance), as LSST does, so the coadd PSF is exactly the weighted
sum of the input PSFs (per-pixel weights would make it depend on the sources). Pixels with a
``bad_mask_planes`` bit, NaN, or in a bin flagged by ``clipping.find_outliers`` are left out of
their warp.

Speed: row blocks are stacked in parallel threads (the numba kernels and scipy release the GIL).
In a block, each warp's rows (with a halo) are binned for the comparison in one pass
(``clipping.bin_warp``), then added to running sums chunk by chunk (``_add_rows``, ``_finish_rows``):
two reads of each input pixel and no full-size temporaries.

Memory: the warps may be memory-mapped (``build_patch_coadd`` spills them to disk); a block holds
the binned planes of its rows, N x (BLOCK_ROWS + 2 halo) x width x ~5 bytes (three float32 planes
per 2 x 2 bin, their blurred copy and the outlier map), ~0.1 GB for 20 inputs 4200 px wide, times
the number of threads; the running sums are ~1.5 MB.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa

from skydp.coadd.clipping import (
    ClipConfig,
    bin_warp,
    find_outliers,
    halo,
    matching_sigmas,
    usable_pixel,
)
from skydp.coadd.inputs import (
    coadd_info,
    coadd_psf,
    covered_box,
    inputs_table,
    psf_sigma,
)
from skydp.exposure import Exposure, Mask

BLOCK_ROWS = 256
THREADS = min(4, os.cpu_count() or 1)  # row blocks stacked in parallel
BAD_MASK_PLANES = ("NO_DATA", "BAD", "SAT", "CR")  # input pixels with these bits are left out
PROPAGATE_FRACTION = 0.1  # a left-out input's bad plane is set in the coadd above this weight fraction
_NOT_PROPAGATED = ("DETECTED", "DETECTED_NEGATIVE", "NO_DATA")
_WEIGHT_STEP = 8  # the weight's median variance from every 8th pixel per axis ...
_WEIGHT_MIN_PIXELS = 10_000  # ... when that leaves this many usable pixels
_CHUNK_PIXELS = 32_768  # coadd pixels whose sums (~50 bytes each) stay in the CPU cache while all inputs are added


@dataclass
class Coadd:
    """A coadd: the Exposure (mask has CLIPPED; PSF = weighted sum of input PSFs), the number of
    inputs used per pixel and one row per input (see ``inputs.inputs_table``)."""

    exposure: Exposure
    input_count: np.ndarray  # int32 (ny, nx)
    inputs: pa.Table


def _check_warps(warps: Sequence[Exposure]) -> None:
    if not warps:
        raise ValueError("make_coadd: no warps given")
    first = warps[0]
    for i, w in enumerate(warps):
        name = f"warp {i} (visit {w.info.visit}, detector {w.info.detector})"
        if w.shape != first.shape or w.xy0 != first.xy0:
            raise ValueError(f"make_coadd: {name} has shape {w.shape} xy0 {w.xy0}, warp 0 has {first.shape} {first.xy0}")
        if w.variance is None:
            raise ValueError(f"make_coadd: {name} has no variance plane")
        if w.info.band != first.info.band:
            raise ValueError(f"make_coadd: {name} is band {w.info.band!r}, warp 0 is {first.info.band!r}")


def _weight(warp: Exposure, bad_bits: int) -> float:
    """1 / median variance of the usable pixels (0 when none), from every 8th pixel per axis when
    that leaves enough (the median of ~2e5 values of a smooth variance plane is as good as of ~2e7,
    and 64x cheaper)."""
    for step in (_WEIGHT_STEP, 1):
        var = np.asarray(warp.variance[::step, ::step])
        image = np.asarray(warp.image[::step, ::step])
        usable = np.isfinite(var) & np.isfinite(image) & ((warp.mask.array[::step, ::step] & bad_bits) == 0) & (var > 0)
        if usable.sum() >= _WEIGHT_MIN_PIXELS:
            break
    if not usable.any():
        return 0.0
    return float(1.0 / np.median(var[usable]))


class _Sums:
    """Running sums over the inputs for a chunk of ``rows`` x ``cols`` coadd pixels, small enough to
    stay in the CPU cache while every input's rows are added (``_add_rows``) and then turned into
    the coadd rows (``_finish_rows``), which also zeroes them for the next chunk."""

    def __init__(self, rows: int, cols: int, n_planes: int) -> None:
        self.sums = np.zeros((4, rows, cols))  # sum w*image, sum w^2*variance, sum w (used), sum w (covering)
        self.count = np.zeros((rows, cols), np.int32)  # inputs used
        self.mask = np.zeros((rows, cols), np.int32)  # OR of the propagated planes of the used inputs
        self.clipped = np.zeros((rows, cols), np.bool_)  # some input rejected as an outlier
        self.left_out = np.zeros((n_planes, rows, cols), np.float32)  # sum w of left-out inputs with the plane set
        self.any_left_out = np.zeros((rows, cols), np.bool_)


# The two kernels below are per-pixel loops: one pass over each input's three planes with the sums
# kept in cache. The numpy form needed ~10 full-size temporaries per input (usable map, zeroed
# copies, weighted products, mask remapping) and spent ~0.25 s per 4k x 4k input in them. Their
# main loops are branch-free so that they vectorise; the rare cases (clipped bins, propagated mask
# bits, left-out planes) run in separate loops over the rows that have them.
@numba.njit(cache=True, nogil=True)
def _add_rows(image: np.ndarray, variance: np.ndarray, mask: np.ndarray, bad_bits: int, weight: float,
              flagged: np.ndarray, bin_size: int, row_offset: int, planes_in: np.ndarray, planes_out: np.ndarray,
              sums: np.ndarray, count: np.ndarray, coadd_mask: np.ndarray, clipped: np.ndarray, left_out: np.ndarray,
              any_left_out: np.ndarray, row_covered: np.ndarray, col_covered: np.ndarray) -> tuple[int, int]:
    """Add one input's rows (``_Sums`` arrays). A usable pixel (``usable_pixel``) in a ``flagged``
    bin (bin row = (``row_offset`` + r) // ``bin_size``; empty: no rejection) is clipped. Propagated
    plane p has bit value ``planes_in[p]`` in the input (0: absent) and ``planes_out[p]`` in the
    coadd: a used pixel ORs it into the coadd mask, a finite pixel left out adds ``weight`` to
    ``left_out[p]``. Returns (pixels used, pixels clipped)."""
    rows, cols = image.shape
    propagated = 0
    for p in range(planes_in.shape[0]):
        propagated |= planes_in[p]
    good = np.empty(cols, np.bool_)
    used = 0
    n_clipped = 0
    weight2 = weight * weight
    for r in range(rows):
        n_finite = 0
        marked = 0
        for c in range(cols):
            value, m = image[r, c], mask[r, c]
            finite = value - value == 0
            good[c] = usable_pixel(value, variance[r, c], m, bad_bits)
            n_finite += finite
            col_covered[c] |= finite
            sums[3, r, c] += weight if finite else 0.0
            marked |= m & propagated
        row_covered[r] |= n_finite > 0
        if flagged.shape[0] > 0:
            bin_row = (row_offset + r) // bin_size
            if flagged[bin_row].any():
                for b in np.flatnonzero(flagged[bin_row]):
                    for c in range(b * bin_size, min(b * bin_size + bin_size, cols)):
                        if good[c]:
                            good[c] = False
                            clipped[r, c] = True
                            n_clipped += 1
        for c in range(cols):
            g = good[c]
            used += g
            count[r, c] += g
            sums[0, r, c] += weight * image[r, c] if g else 0.0
            sums[1, r, c] += weight2 * variance[r, c] if g else 0.0
            sums[2, r, c] += weight if g else 0.0
        if marked:  # rare: mask bits are sparse once DETECTED is left out
            for c in range(cols):
                m = mask[r, c] & propagated
                if m == 0 or not math.isfinite(image[r, c]):
                    continue
                any_left_out[r, c] |= not good[c]
                for p in range(planes_in.shape[0]):
                    if m & planes_in[p]:
                        if good[c]:
                            coadd_mask[r, c] |= planes_out[p]
                        else:
                            left_out[p, r, c] += weight
    return used, n_clipped


@numba.njit(cache=True, nogil=True)
def _finish_rows(sums: np.ndarray, count: np.ndarray, coadd_mask: np.ndarray, clipped: np.ndarray,
                 left_out: np.ndarray, any_left_out: np.ndarray, planes_out: np.ndarray, fraction: float,
                 clipped_bit: int, no_data_bit: int, out_image: np.ndarray, out_variance: np.ndarray,
                 out_count: np.ndarray, out_mask: np.ndarray) -> None:
    """Coadd rows from the sums: weighted mean and propagated variance (NaN and NO_DATA where no input
    is used), inputs used, mask = propagated planes | CLIPPED | each plane whose left-out inputs carry
    more than ``fraction`` of the covering weight (coadd bit values ``planes_out``). Zeroes the sums."""
    rows, cols = count.shape
    for r in range(rows):  # 1-D row views, branch-free: vectorises
        weighted, weighted_var, weight = sums[0, r], sums[1, r], sums[2, r]
        row_mask, row_clipped, image, var, mask = coadd_mask[r], clipped[r], out_image[r], out_variance[r], out_mask[r]
        for c in range(cols):
            has = weight[c] > 0
            inverse = 1.0 / weight[c] if has else np.nan
            image[c] = weighted[c] * inverse
            var[c] = weighted_var[c] * inverse * inverse
            mask[c] = row_mask[c] | (clipped_bit if row_clipped[c] else 0) | (0 if has else no_data_bit)
        out_count[r] = count[r]
        if any_left_out[r].any():
            for c in np.flatnonzero(any_left_out[r]):
                for p in range(planes_out.shape[0]):
                    if left_out[p, r, c] > fraction * sums[3, r, c]:
                        out_mask[r, c] |= planes_out[p]
                    left_out[p, r, c] = 0.0
    for r in range(rows):  # zeroed for the next chunk, row by row (numba's N-d slice fill is slow)
        for k in range(4):
            sums[k, r] = 0.0
        count[r] = 0
        coadd_mask[r] = 0
        clipped[r] = False
        any_left_out[r] = False


def _rows_of(warp: Exposure, rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A warp's image, variance and mask rows as C-contiguous float32, float32, int32 (views when they are)."""
    return (np.ascontiguousarray(warp.image[rows], dtype=np.float32),
            np.ascontiguousarray(warp.variance[rows], dtype=np.float32),
            np.ascontiguousarray(warp.mask.array[rows], dtype=np.int32))


def _block_outliers(warps: Sequence[Exposure], bad_bits: Sequence[int], rows: slice, blur: np.ndarray,
                    clip: ClipConfig) -> np.ndarray:
    """Binned outlier maps (N, bin rows, bin columns) of N warps' ``rows`` (starting at a bin edge)."""
    size = clip.bin_size
    binned = None
    for k, (warp, bits) in enumerate(zip(warps, bad_bits)):
        image, variance, mask = _rows_of(warp, rows)
        if binned is None:
            binned = np.empty((3, len(warps), -(-image.shape[0] // size), -(-image.shape[1] // size)), np.float32)
        bin_warp(image, variance, mask, bits, size, out=binned[:, k])
    return find_outliers(binned[0], binned[1], binned[2], blur, clip)


def make_coadd(warps: Sequence[Exposure], clip: ClipConfig | None = ClipConfig(),
               bad_mask_planes: Sequence[str] = BAD_MASK_PLANES, block_rows: int = BLOCK_ROWS) -> Coadd:
    """Coadd warps that share one pixel grid (same shape, xy0 and WCS) and band.

    ``clip=None`` turns artifact rejection off. The coadd's variance is the propagated
    sum W_i^2 var_i / (sum W_i)^2 over the inputs used at each pixel; NO_DATA where none is.
    """
    _check_warps(warps)
    mask = Mask.empty(warps[0].shape, dict(warps[0].mask.planes))
    for name in [p for w in warps[1:] for p in w.mask.planes] + ["CLIPPED"]:
        mask.add_plane(name)
    bad_names = [p for p in bad_mask_planes if p in mask.planes]
    bad_bits = [w.mask.bitmask(*[p for p in bad_names if p in w.mask.planes]) for w in warps]
    weights = np.array([_weight(w, b) for w, b in zip(warps, bad_bits)])
    sigmas = np.array([psf_sigma(w) for w in warps])
    finite_sigmas = np.where(np.isfinite(sigmas), sigmas, np.nanmax(sigmas) if np.isfinite(sigmas).any() else 1.0)
    blur = matching_sigmas(finite_sigmas, clip.extra_blur if clip is not None else 0.0)
    use = [int(i) for i in np.flatnonzero(weights > 0)]
    ny, nx = warps[0].shape
    image = np.empty((ny, nx), np.float32)  # every row is written by stack_rows
    variance = np.empty((ny, nx), np.float32)
    count = np.empty((ny, nx), np.int32)
    rejecting = clip is not None and len(use) >= clip.min_inputs
    size = clip.bin_size if rejecting else 1
    pad = halo(blur[use], clip) if rejecting else 0
    block_rows = -(-block_rows // size) * size  # bins must not straddle blocks
    chunk_rows = max(1, _CHUNK_PIXELS // nx)
    names = [p for p in mask.planes if p not in _NOT_PROPAGATED and p != "CLIPPED"]
    planes_in = np.array([[w.mask.bitmask(p) if p in w.mask.planes else 0 for p in names] for w in warps],
                         np.int32).reshape(len(warps), len(names))
    planes_out = np.array([mask.bitmask(p) for p in names], np.int32)
    clipped_bit, no_data_bit = mask.bitmask("CLIPPED"), mask.bitmask("NO_DATA")
    no_flags = np.zeros((0, 0), np.bool_)

    covered_rows = np.zeros((len(warps), ny), bool)  # per input: rows / columns with a finite pixel

    def stack_rows(r0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coadd rows r0 .. r0 + block_rows into the output planes; returns (used, clipped) pixels
        per input and the columns each input covers in these rows."""
        r1 = min(r0 + block_rows, ny)
        flagged, h0 = [no_flags] * len(use), r0
        if rejecting:
            h0 = max(r0 - pad, 0)
            flagged = find_block_outliers(h0, min(r1 + pad, ny))
        used, clipped = np.zeros(len(warps), np.int64), np.zeros(len(warps), np.int64)
        covered_cols = np.zeros((len(warps), nx), bool)
        sums = _Sums(min(chunk_rows, r1 - r0), nx, len(names))
        for c0 in range(r0, r1, chunk_rows):
            rows = slice(c0, min(c0 + chunk_rows, r1))
            n = rows.stop - c0
            for k, i in enumerate(use):
                u, c = _add_rows(*_rows_of(warps[i], rows), bad_bits[i], weights[i], flagged[k], size, c0 - h0,
                                 planes_in[i], planes_out, sums.sums[:, :n],
                                 sums.count[:n], sums.mask[:n], sums.clipped[:n], sums.left_out[:, :n],
                                 sums.any_left_out[:n], covered_rows[i, rows], covered_cols[i])
                used[i] += u
                clipped[i] += c
            _finish_rows(sums.sums[:, :n], sums.count[:n], sums.mask[:n], sums.clipped[:n], sums.left_out[:, :n],
                         sums.any_left_out[:n], planes_out, PROPAGATE_FRACTION, clipped_bit, no_data_bit,
                         image[rows], variance[rows], count[rows], mask.array[rows])
        return used, clipped, covered_cols

    def find_block_outliers(h0: int, h1: int) -> list[np.ndarray]:
        """Per used input, the binned outlier map of rows h0 .. h1 (block and halo)."""
        return list(_block_outliers([warps[i] for i in use], [bad_bits[i] for i in use], slice(h0, h1),
                                    blur[use], clip))

    # numpy and scipy.ndimage release the GIL on large arrays: row blocks run in parallel threads
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        counts = list(pool.map(stack_rows, range(0, ny, block_rows)))
    n_used = np.sum([c[0] for c in counts], axis=0)
    n_clipped = np.sum([c[1] for c in counts], axis=0)
    covered_cols = np.any([c[2] for c in counts], axis=0)
    for i in sorted(set(range(len(warps))) - set(use)):  # inputs without a usable pixel still cover an area
        finite = np.isfinite(np.asarray(warps[i].image))
        covered_rows[i], covered_cols[i] = finite.any(axis=1), finite.any(axis=0)
    boxes = [covered_box(r, c, warps[0].xy0) for r, c in zip(covered_rows, covered_cols)]
    psf = coadd_psf(warps, weights, count > 0)
    exposure = Exposure(image=image, variance=variance, mask=mask, wcs=warps[0].wcs.deepcopy(), psf=psf,
                        xy0=warps[0].xy0, info=coadd_info(warps))
    table = inputs_table(warps, weights, sigmas, n_used, n_clipped, boxes)
    return Coadd(exposure=exposure, input_count=count, inputs=table)
