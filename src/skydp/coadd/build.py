"""Patch coadds from visit images: warp each overlapping input onto the patch grid, then stack.

Each warp covers only the input's footprint on the patch (the rest is NO_DATA) and is spilled to a
memory-mapped temporary file, so building a coadd of ~20 4k inputs holds about one warp plus the
stacker's row blocks in memory, not 20 full warps.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from skydp.coadd.clipping import ClipConfig
from skydp.coadd.stack import Coadd, make_coadd
from skydp.exposure import Exposure, Mask, read_exposure
from skydp.skymap import PatchInfo
from skydp.warp import warp_exposure

FOOTPRINT_MARGIN = 4  # target pixels added around an input's projected corners before warping


def _footprint_box(exposure: Exposure, patch: PatchInfo) -> tuple[int, int, int, int] | None:
    """Array-pixel box (x0, y0, x1, y1) of the patch grid that the input's corners span; None if disjoint."""
    ra, dec = exposure.corners()
    x, y = patch.wcs.all_world2pix(ra, dec, 0)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return None
    ny, nx = patch.shape
    box = (max(int(math.floor(x.min())) - FOOTPRINT_MARGIN, 0), max(int(math.floor(y.min())) - FOOTPRINT_MARGIN, 0),
           min(int(math.ceil(x.max())) + 1 + FOOTPRINT_MARGIN, nx), min(int(math.ceil(y.max())) + 1 + FOOTPRINT_MARGIN, ny))
    return box if box[2] > box[0] and box[3] > box[1] else None


def warp_to_patch(exposure: Exposure, patch: PatchInfo, directory: Path | None = None) -> Exposure | None:
    """The input warped onto the full patch grid (NO_DATA outside its footprint), or None when it
    does not overlap. With ``directory``, the planes are memory-mapped files there."""
    box = _footprint_box(exposure, patch)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    wcs = patch.wcs.deepcopy()
    wcs.wcs.crpix = wcs.wcs.crpix - np.array([x0, y0], dtype=float)
    part = warp_exposure(exposure, wcs, (y1 - y0, x1 - x0), xy0=(patch.xy0[0] + x0, patch.xy0[1] + y0))
    if not np.isfinite(part.image).any():
        return None
    ny, nx = patch.shape
    # a fresh directory per warp: file names from id() could repeat once an earlier object is freed,
    # and re-opening a file with mode "w+" would overwrite the warp memory-mapped from it
    own = Path(tempfile.mkdtemp(dir=directory)) if directory is not None else None

    def plane(name: str, dtype: type, fill: float) -> np.ndarray:
        if own is None:
            return np.full((ny, nx), fill, dtype)
        array = np.lib.format.open_memmap(own / f"{name}.npy", mode="w+", dtype=dtype, shape=(ny, nx))
        array[:] = fill
        return array

    no_data = part.mask.bitmask("NO_DATA")
    image, variance, mask = plane("image", np.float32, np.nan), plane("variance", np.float32, np.nan), plane("mask", np.int32, no_data)
    image[y0:y1, x0:x1] = part.image
    variance[y0:y1, x0:x1] = part.variance
    mask[y0:y1, x0:x1] = part.mask.array
    return Exposure(image=image, variance=variance, mask=Mask(mask, part.mask.planes), wcs=patch.wcs.deepcopy(),
                    psf=part.psf, xy0=patch.xy0, info=part.info)


def build_patch_coadd(exposures: Iterable[Exposure | str | Path], patch: PatchInfo,
                      clip: ClipConfig | None = ClipConfig(), spill: bool = True) -> Coadd:
    """Coadd of the inputs (Exposures or visit-image paths, background-subtracted, one band) on the
    patch grid (``patch`` may be a sub-region PatchInfo); inputs that miss the patch are skipped.

    ``spill`` memory-maps the warps to a temporary directory (removed afterwards).
    Raises ValueError when no input overlaps the patch.
    """
    with tempfile.TemporaryDirectory(prefix="skydp_warps_") as tmp:
        warps = []
        for item in exposures:
            exposure = item if isinstance(item, Exposure) else read_exposure(item)
            if exposure.variance is None:
                raise ValueError(f"build_patch_coadd: input visit {exposure.info.visit} detector "
                                 f"{exposure.info.detector} has no variance plane")
            warp = warp_to_patch(exposure, patch, Path(tmp) if spill else None)
            if warp is not None:
                warps.append(warp)
        if not warps:
            raise ValueError(f"build_patch_coadd: no input overlaps tract {patch.tract} patch {patch.patch}")
        coadd = make_coadd(warps, clip=clip)
        del warps
    return coadd
