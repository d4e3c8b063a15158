"""LSST base_PixelFlags: mask planes anywhere in a source's footprint and in the 3x3 centre box."""

from __future__ import annotations

import numba
import numpy as np

from skydp.exposure import Mask
from skydp.pipeline.stamps import StampCutter, round_half_up

# DP1 flag stem -> mask plane; "Center" variants exist for the planes listed in CENTER_FLAGS
FLAG_PLANES = {"edge": "EDGE", "bad": "BAD", "saturated": "SAT", "cr": "CR", "interpolated": "INTRP",
               "suspect": "SUSPECT", "nodata": "NO_DATA"}
CENTER_FLAGS = ("saturated", "cr", "interpolated", "suspect")


def footprint_mask_bits(mask: np.ndarray, labels: np.ndarray, n_labels: int, bits: int) -> np.ndarray:
    """OR of ``mask & bits`` over the pixels of each label 1..n_labels (index 0 = label 1)."""
    return footprint_area_and_bits(mask, labels, n_labels, bits)[1][1:]


def footprint_area_and_bits(mask: np.ndarray, labels: np.ndarray, n_labels: int,
                            bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel count and OR of ``mask & bits`` per label 0..n_labels (labels beyond are ignored)."""
    if mask.shape != labels.shape:
        raise ValueError(f"footprint flags: mask {mask.shape} and labels {labels.shape} differ in shape")
    area = np.zeros(n_labels + 1, dtype=np.int64)
    out = np.zeros(n_labels + 1, dtype=np.int64)
    _area_and_bits(np.ascontiguousarray(mask).ravel(), np.ascontiguousarray(labels).ravel(), np.int64(bits), area, out)
    return area, out


@numba.njit(cache=True, nogil=True)
def _area_and_bits(mask: np.ndarray, labels: np.ndarray, bits: np.int64, area: np.ndarray, out: np.ndarray) -> None:
    """One compiled pass for what took a bincount and four full-size numpy temporaries."""
    n_labels = area.size - 1
    for p in range(labels.size):
        lab = labels[p]
        if 0 < lab <= n_labels:
            area[lab] += 1
            out[lab] |= mask[p] & bits


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
