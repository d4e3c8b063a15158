"""Stamps and pixel gathers straight from the unpadded planes.

``skydp.pipeline.stamps.StampCutter`` keeps a padded copy of every plane; on a 4k x 4k image the
three copies forced photometry needs cost about as much as measuring 25,000 positions. Here stamps
wholly inside the image are windows of the plane itself and only the few that cross the border
are assembled pixel by pixel, with ``fill`` outside.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def cut(plane: np.ndarray, cx: np.ndarray, cy: np.ndarray, size: int, fill: float | int = 0) -> np.ndarray:
    """(N, size, size) stamps whose centre pixel size//2 is array pixel (cx[i], cy[i])."""
    ny, nx = plane.shape
    half = size // 2
    x0, y0 = np.asarray(cx, dtype=np.intp) - half, np.asarray(cy, dtype=np.intp) - half
    out = np.empty((x0.size, size, size), dtype=plane.dtype)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + size <= nx) & (y0 + size <= ny)
    if ny >= size and nx >= size:
        out[inside] = sliding_window_view(plane, (size, size))[y0[inside], x0[inside]]
    else:
        inside[:] = False
    border = np.flatnonzero(~inside)
    if border.size:
        offsets = np.arange(size)
        out[border] = gather(plane, x0[border] + half, y0[border] + half,
                             *(a.ravel() - half for a in np.meshgrid(offsets, offsets)), fill).reshape(-1, size, size)
    return out


def gather(plane: np.ndarray, cx: np.ndarray, cy: np.ndarray, dx: np.ndarray, dy: np.ndarray,
           fill: float | int = 0) -> np.ndarray:
    """(N, K) values of ``plane`` at pixels (cx + dx[k], cy + dy[k]); ``fill`` outside the plane."""
    ny, nx = plane.shape
    cx, cy = np.asarray(cx, dtype=np.intp), np.asarray(cy, dtype=np.intp)
    dx, dy = np.asarray(dx, dtype=np.intp), np.asarray(dy, dtype=np.intp)
    flat = plane.reshape(-1)
    out = np.empty((cx.size, dx.size), dtype=plane.dtype)
    if dx.size == 0:
        return out
    inside = ((cx + dx.min() >= 0) & (cx + dx.max() < nx) & (cy + dy.min() >= 0) & (cy + dy.max() < ny))
    out[inside] = flat[(cy[inside] * nx + cx[inside])[:, None] + (dy * nx + dx)[None, :]]
    border = np.flatnonzero(~inside)
    if border.size:
        px = cx[border, None] + dx[None, :]
        py = cy[border, None] + dy[None, :]
        outside = (px < 0) | (px >= nx) | (py < 0) | (py >= ny)
        values = plane[np.clip(py, 0, ny - 1), np.clip(px, 0, nx - 1)]
        values[outside] = fill
        out[border] = values
    return out
