"""Cut (N, S, S) stamps around many positions at once from padded planes."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class StampCutter:
    """Holds planes padded by ``pad`` px so that stamps near the border need no special case.

    ``cut(plane, cx, cy, size)`` returns stamps whose centre pixel S//2 is array pixel (cx, cy)
    (integers, array frame); padding pixels have value ``fill``.
    """

    def __init__(self, pad: int) -> None:
        self.pad = int(pad)
        self._planes: dict[str, np.ndarray] = {}

    def add(self, name: str, plane: np.ndarray, fill: float | int = 0) -> None:
        """Register a plane under ``name`` (a padded copy is kept)."""
        p = self.pad
        padded = np.empty((plane.shape[0] + 2 * p, plane.shape[1] + 2 * p), dtype=plane.dtype)
        if p:  # frame and interior written separately: about twice as fast as np.pad
            padded[:p] = padded[-p:] = fill
            padded[:, :p] = padded[:, -p:] = fill
        padded[p:padded.shape[0] - p, p:padded.shape[1] - p] = plane
        self._planes[name] = padded

    def cut(self, name: str, cx: np.ndarray, cy: np.ndarray, size: int) -> np.ndarray:
        """(N, size, size) stamps of plane ``name`` centred on integer array pixels (cx, cy)."""
        half = size // 2
        if half > self.pad:
            raise ValueError(f"stamp size {size} exceeds the padding {self.pad}")
        padded = self._planes[name]
        ny, nx = padded.shape
        x0 = np.clip(np.asarray(cx, dtype=np.int64) + self.pad - half, 0, nx - size)
        y0 = np.clip(np.asarray(cy, dtype=np.int64) + self.pad - half, 0, ny - size)
        # one gather of whole windows: much faster than a per-pixel (N, S, S) fancy index
        return sliding_window_view(padded, (size, size))[y0, x0]

    def gather(self, name: str, cx: np.ndarray, cy: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """(N, K) values of plane ``name`` at pixels (cx + dx[k], cy + dy[k]); |dx|, |dy| <= pad."""
        if len(dx) and max(np.abs(dx).max(), np.abs(dy).max()) > self.pad:
            raise ValueError(f"offsets exceed the padding {self.pad}")
        padded = self._planes[name]
        nx = padded.shape[1]
        base = (np.asarray(cy, dtype=np.int64) + self.pad) * nx + np.asarray(cx, dtype=np.int64) + self.pad
        return padded.ravel()[base[:, None] + (np.asarray(dy) * nx + np.asarray(dx))[None, :]]


def round_half_up(v: np.ndarray) -> np.ndarray:
    """floor(v + 0.5) as int64: the pixel convention of PixelPsf.images_at."""
    return np.floor(np.asarray(v, dtype=np.float64) + 0.5).astype(np.int64)
