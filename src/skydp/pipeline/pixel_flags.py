"""LSST base_PixelFlags: mask planes anywhere in a source's footprint and in the 3x3 centre box."""

from __future__ import annotations

import numpy as np

from skydp.exposure import Mask
from skydp.pipeline.stamps import StampCutter, round_half_up

# DP1 flag stem -> mask plane; "Center" variants exist for the planes listed in CENTER_FLAGS
FLAG_PLANES = {"edge": "EDGE", "bad": "BAD", "saturated": "SAT", "cr": "CR", "interpolated": "INTRP",
               "suspect": "SUSPECT", "nodata": "NO_DATA"}
CENTER_FLAGS = ("saturated", "cr", "interpolated", "suspect")


def footprint_mask_bits(mask: np.ndarray, labels: np.ndarray, n_labels: int, bits: int) -> np.ndarray:
    """OR of ``mask & bits`` over the pixels of each label 1..n_labels (index 0 = label 1)."""
    out = np.zeros(n_labels + 1, dtype=np.int64)
    hit = np.flatnonzero(((mask & bits) != 0).ravel() & (labels.ravel() > 0))
    if hit.size:
        np.bitwise_or.at(out, labels.ravel()[hit], (mask.ravel()[hit] & bits).astype(np.int64))
    return out[1:]


def pixel_flags(mask: Mask, cutter: StampCutter, footprint_bits: np.ndarray, x: np.ndarray, y: np.ndarray,
                shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """DP1 pixelFlags_* columns from per-source footprint bits and the 3x3 box at (x, y) (array frame).

    ``cutter`` must hold the mask plane as 'mask'.
    """
    ny, nx = shape
    centre = np.bitwise_or.reduce(
        cutter.cut("mask", round_half_up(x), round_half_up(y), 3).reshape(len(x), -1), axis=1
    ) if len(x) else np.zeros(0, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for stem, plane in FLAG_PLANES.items():
        bit = mask.bitmask(plane) if plane in mask.planes else 0
        out[f"pixelFlags_{stem}"] = ((footprint_bits & bit) != 0) | ((centre & bit) != 0)
        if stem in CENTER_FLAGS:
            out[f"pixelFlags_{stem}Center"] = (centre & bit) != 0
    out["pixelFlags_offimage"] = ~((x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5))
    return out
