"""Cut (N, S, S) stamps and pixel sets around many positions at once, straight from the planes."""

from __future__ import annotations

import numba
import numpy as np


class StampCutter:
    """Stamps and pixel gathers from registered planes; pixels beyond a plane take its ``fill``.

    Planes are referenced, not copied (a padded copy of every 4k x 4k plane used to cost as much
    as the cuts): do not modify a plane while cutting from it. ``pad`` is the largest stamp
    half-size or gather offset callers may request, a guard against runaway sizes.
    ``cut(plane, cx, cy, size)`` returns stamps whose centre pixel S//2 is array pixel (cx, cy).
    """

    def __init__(self, pad: int) -> None:
        self.pad = int(pad)
        self._planes: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, name: str, plane: np.ndarray, fill: float = 0) -> None:
        """Register a 2-D plane under ``name`` with the value ``fill`` beyond its edges."""
        plane = np.ascontiguousarray(plane)
        if plane.ndim != 2:
            raise ValueError(f"StampCutter.add: plane {name!r} must be 2-D, got shape {plane.shape}")
        self._planes[name] = (plane, np.full(1, fill, dtype=plane.dtype))

    def plane(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The registered plane ``name`` and its fill value (a 1-element array of its dtype)."""
        return self._planes[name]

    def cut(self, name: str, cx: np.ndarray, cy: np.ndarray, size: int) -> np.ndarray:
        """(N, size, size) stamps of plane ``name`` centred on integer array pixels (cx, cy)."""
        if size // 2 > self.pad:
            raise ValueError(f"stamp size {size} exceeds the padding {self.pad}")
        plane, fill = self._planes[name]
        cx, cy = np.asarray(cx, dtype=np.int64).ravel(), np.asarray(cy, dtype=np.int64).ravel()
        out = np.empty((cx.size, size, size), dtype=plane.dtype)
        _cut(plane, cx, cy, fill, out)
        return out

    def gather(self, name: str, cx: np.ndarray, cy: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """(N, K) values of plane ``name`` at pixels (cx + dx[k], cy + dy[k]); |dx|, |dy| <= pad."""
        dx, dy = np.asarray(dx, dtype=np.int64).ravel(), np.asarray(dy, dtype=np.int64).ravel()
        if len(dx) and max(np.abs(dx).max(), np.abs(dy).max()) > self.pad:
            raise ValueError(f"offsets exceed the padding {self.pad}")
        plane, fill = self._planes[name]
        cx, cy = np.asarray(cx, dtype=np.int64).ravel(), np.asarray(cy, dtype=np.int64).ravel()
        out = np.empty((cx.size, dx.size), dtype=plane.dtype)
        _gather(plane, cx, cy, dx, dy, fill, out)
        return out


@numba.njit(cache=True, nogil=True)
def _cut(plane: np.ndarray, cx: np.ndarray, cy: np.ndarray, fill: np.ndarray, out: np.ndarray) -> None:
    """out[n] = the stamp about (cx[n], cy[n]); a compiled copy so that stamps crossing the border
    need neither a padded plane nor a per-pixel index array."""
    ny, nx = plane.shape
    size = out.shape[1]
    half = size // 2
    for n in range(cx.size):
        x0, y0 = cx[n] - half, cy[n] - half
        if x0 >= 0 and y0 >= 0 and x0 + size <= nx and y0 + size <= ny:
            for j in range(size):
                out[n, j, :] = plane[y0 + j, x0:x0 + size]
            continue
        for j in range(size):
            y = y0 + j
            for i in range(size):
                x = x0 + i
                out[n, j, i] = plane[y, x] if 0 <= y < ny and 0 <= x < nx else fill[0]


@numba.njit(cache=True, nogil=True)
def _gather(plane: np.ndarray, cx: np.ndarray, cy: np.ndarray, dx: np.ndarray, dy: np.ndarray,
            fill: np.ndarray, out: np.ndarray) -> None:
    ny, nx = plane.shape
    for n in range(cx.size):
        for k in range(dx.size):
            y, x = cy[n] + dy[k], cx[n] + dx[k]
            out[n, k] = plane[y, x] if 0 <= y < ny and 0 <= x < nx else fill[0]


def round_half_up(v: np.ndarray) -> np.ndarray:
    """floor(v + 0.5) as int64: the pixel convention of PixelPsf.images_at."""
    return np.floor(np.asarray(v, dtype=np.float64) + 0.5).astype(np.int64)
