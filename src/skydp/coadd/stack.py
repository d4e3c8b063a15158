"""Inverse-variance weighted coadd of warps on one grid, with artifact rejection (CLIPPED).

One weight per warp, 1 / median(variance), as LSST does, so the coadd PSF is exactly the weighted
sum of the input PSFs (per-pixel weights would make it depend on the sources). Pixels with a
``bad_mask_planes`` bit, NaN, or flagged by ``clipping.find_outliers`` are left out of their warp.

Memory: the warps may be memory-mapped (``build_patch_coadd`` spills them to disk); the stacker
reads row blocks of all warps at once (plus a halo for the rejection's blur), so it holds about
N x (BLOCK_ROWS + 2 halo) x width x 4 planes in memory, ~1 GB for 20 inputs 4200 px wide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from skydp.coadd.clipping import ClipConfig, find_outliers, halo, matching_sigmas
from skydp.coadd.inputs import coadd_info, coadd_psf, inputs_table, psf_sigma
from skydp.exposure import Exposure, Mask

BLOCK_ROWS = 256
BAD_MASK_PLANES = ("NO_DATA", "BAD", "SAT", "CR")  # input pixels with these bits are left out
PROPAGATE_FRACTION = 0.1  # a left-out input's bad plane is set in the coadd above this weight fraction
_NOT_PROPAGATED = ("DETECTED", "DETECTED_NEGATIVE", "NO_DATA")


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
    """1 / median variance of the usable pixels (0 when none)."""
    var = np.asarray(warp.variance)
    usable = np.isfinite(var) & np.isfinite(warp.image) & ((warp.mask.array & bad_bits) == 0) & (var > 0)
    if not usable.any():
        return 0.0
    return float(1.0 / np.median(var[usable]))


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
    use = np.flatnonzero(weights > 0)
    ny, nx = warps[0].shape
    image = np.full((ny, nx), np.nan, np.float32)
    variance = np.full((ny, nx), np.nan, np.float32)
    count = np.zeros((ny, nx), np.int32)
    n_clipped = np.zeros(len(warps), np.int64)
    n_used = np.zeros(len(warps), np.int64)
    pad = halo(blur[use], clip) if clip is not None and len(use) else 0
    propagate = [p for p in mask.planes if p not in _NOT_PROPAGATED and p != "CLIPPED"]
    for r0 in range(0, ny, block_rows):
        r1 = min(r0 + block_rows, ny)
        h0, h1 = max(r0 - pad, 0), min(r1 + pad, ny)
        inner = slice(r0 - h0, r0 - h0 + (r1 - r0))
        imgs = np.stack([np.asarray(warps[i].image[h0:h1], np.float32) for i in use]) if len(use) else np.empty((0, h1 - h0, nx), np.float32)
        vars_ = np.stack([np.asarray(warps[i].variance[h0:h1], np.float32) for i in use]) if len(use) else imgs
        usable = np.isfinite(imgs) & np.isfinite(vars_)
        for k, i in enumerate(use):
            usable[k] &= (np.asarray(warps[i].mask.array[h0:h1]) & bad_bits[i]) == 0
        outliers = (find_outliers(imgs, vars_, usable, blur[use], clip)
                    if clip is not None else np.zeros(usable.shape, bool))
        usable, outliers, imgs, vars_ = usable[:, inner], outliers[:, inner], imgs[:, inner], vars_[:, inner]
        good = usable & ~outliers
        w = weights[use][:, None, None] * good
        wsum = w.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            image[r0:r1] = np.where(wsum > 0, np.sum(np.where(good, imgs, 0) * w, axis=0) / wsum, np.nan)
            variance[r0:r1] = np.where(wsum > 0, np.sum(np.where(good, vars_, 0) * w * w, axis=0) / wsum**2, np.nan)
        count[r0:r1] = good.sum(axis=0)
        n_clipped[use] += outliers.sum(axis=(1, 2))
        n_used[use] += good.sum(axis=(1, 2))
        mask.array[r0:r1] = _block_mask([warps[i] for i in use], r0, r1, good, outliers, weights[use], mask, propagate)
        mask.array[r0:r1][wsum <= 0] |= mask.bitmask("NO_DATA")
    psf = coadd_psf(warps, weights, np.isfinite(image))
    exposure = Exposure(image=image, variance=variance, mask=mask, wcs=warps[0].wcs.deepcopy(), psf=psf,
                        xy0=warps[0].xy0, info=coadd_info(warps))
    table = inputs_table(warps, weights, sigmas, n_used, n_clipped)
    return Coadd(exposure=exposure, input_count=count, inputs=table)


def _block_mask(warps: list[Exposure], r0: int, r1: int, good: np.ndarray, outliers: np.ndarray,
                weights: np.ndarray, mask: Mask, propagate: list[str]) -> np.ndarray:
    """Coadd mask bits of one row block: OR over used inputs, a left-out input's plane above
    PROPAGATE_FRACTION of the covering weight, CLIPPED where any input was rejected."""
    out = np.zeros(good.shape[1:], np.int32)
    covering = np.zeros(good.shape[1:], np.float64)
    bad_weight = {p: np.zeros(good.shape[1:], np.float64) for p in propagate}
    for k, warp in enumerate(warps):
        m = np.asarray(warp.mask.array[r0:r1])
        covers = np.isfinite(np.asarray(warp.image[r0:r1]))
        covering += weights[k] * covers
        for p in propagate:
            if p not in warp.mask.planes:
                continue
            has = (m & warp.mask.bitmask(p)) != 0
            out[has & good[k]] |= np.int32(mask.bitmask(p))
            bad_weight[p] += weights[k] * (has & covers & ~good[k])
    for p in propagate:
        with np.errstate(invalid="ignore", divide="ignore"):
            out[bad_weight[p] > PROPAGATE_FRACTION * covering] |= np.int32(mask.bitmask(p))
    out[outliers.any(axis=0)] |= np.int32(mask.bitmask("CLIPPED"))
    return out
