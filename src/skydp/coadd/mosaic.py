"""Patches of one tract put side by side: the template that covers a detector spanning patch edges.

Patches of a tract share its pixel grid, so a mosaic is array placement, not resampling: each
pixel comes from the patch whose inner region holds it, and from any patch border when no inner
region does (the tract's own edge). A patch coadd may cover only part of its patch (where inputs
exist): its Exposure's xy0 and shape say which part.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skydp.exposure import Exposure, Mask, PixelPsf
from skydp.skymap import PatchInfo

BBox = tuple[int, int, int, int]  # (x0, y0, x1, y1) tract pixels, end-exclusive


def mosaic_patches(parts: Sequence[tuple[PatchInfo, Exposure]], bbox: BBox | None = None) -> Exposure:
    """One Exposure on the tract grid from patch coadds of a single tract, cut to ``bbox`` if given."""
    if not parts:
        raise ValueError("mosaic_patches: no patches given")
    tracts = {info.tract for info, _ in parts}
    if len(tracts) != 1:
        raise ValueError(f"mosaic_patches: patches come from several tracts {sorted(tracts)}")
    first_info, first = parts[0]
    outer = [exposure.bbox for _, exposure in parts]
    union = (min(b[0] for b in outer), min(b[1] for b in outer), max(b[2] for b in outer), max(b[3] for b in outer))
    x0, y0, x1, y1 = union if bbox is None else _intersect(union, bbox)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"mosaic_patches: bbox {bbox} does not overlap the patches {union}")
    shape = (y1 - y0, x1 - x0)
    image = np.full(shape, np.nan, np.float32)
    variance = np.full(shape, np.inf, np.float32)
    mask = Mask.empty(shape, dict(first.mask.planes))
    mask.array[:] = mask.bitmask("NO_DATA")
    filled = np.zeros(shape, bool)
    for use_inner in (True, False):  # inner regions first, then borders for what is left
        for info, exposure in parts:
            if exposure.mask.planes != first.mask.planes:
                raise ValueError(f"mosaic_patches: patch {info.patch} has mask planes {exposure.mask.planes}, "
                                 f"patch {first_info.patch} has {first.mask.planes}")
            region = _intersect(_intersect(info.inner_bbox, exposure.bbox) if use_inner else exposure.bbox,
                                (x0, y0, x1, y1))
            if region[2] <= region[0] or region[3] <= region[1]:
                continue
            dst = (slice(region[1] - y0, region[3] - y0), slice(region[0] - x0, region[2] - x0))
            ex0, ey0 = exposure.xy0
            src = (slice(region[1] - ey0, region[3] - ey0), slice(region[0] - ex0, region[2] - ex0))
            take = ~filled[dst]
            image[dst][take] = exposure.image[src][take]
            variance[dst][take] = exposure.variance[src][take]
            mask.array[dst][take] = exposure.mask.array[src][take]
            filled[dst] |= take
    wcs = first.wcs.deepcopy()
    wcs.wcs.crpix = wcs.wcs.crpix + np.array([first.xy0[0] - x0, first.xy0[1] - y0])
    return Exposure(image=image, variance=variance, mask=mask, wcs=wcs, psf=_joined_psf(parts),
                    xy0=(x0, y0), info=first.info)


def _intersect(a: BBox, b: BBox) -> BBox:
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))


def _joined_psf(parts: Sequence[tuple[PatchInfo, Exposure]]) -> PixelPsf | None:
    """Every patch's PSF stamps that lie in its inner region, as one scattered-position PSF."""
    stamps, xs, ys = [], [], []
    for info, exposure in parts:
        psf = exposure.psf
        if psf is None:
            return None
        x0, y0, x1, y1 = info.inner_bbox
        inner = (psf.x >= x0) & (psf.x < x1) & (psf.y >= y0) & (psf.y < y1)
        keep = inner if inner.any() else np.ones_like(inner)
        stamps.append(psf.stamps[keep])
        xs.append(psf.x[keep])
        ys.append(psf.y[keep])
    size = max(s.shape[1] for s in stamps)  # odd sizes: zero-padding keeps every stamp centred
    padded = [np.pad(s, ((0, 0), ((size - s.shape[1]) // 2,) * 2, ((size - s.shape[1]) // 2,) * 2)) for s in stamps]
    return PixelPsf(np.concatenate(padded), np.concatenate(xs), np.concatenate(ys))
