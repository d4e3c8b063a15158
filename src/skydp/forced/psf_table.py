"""PSF realised once per image at quantised sub-pixel phases, then gathered per position.

``PixelPsf.images_at`` costs one inverse FFT per position; forced photometry needs the PSF at
tens of thousands of positions per image. The PSF varies slowly over a detector and a flux fit is
insensitive to a tiny centring error, so the PSF is realised once on a grid of nodes at Q x Q
sub-pixel phases (centres of Q equal bins of the offset x - floor(x + 0.5) in [-0.5, 0.5)). A
position then takes the nearest phase and a bilinear blend of the four surrounding nodes: no FFT,
only gathers. The phase error is at most 1/(2Q) px; for a Gaussian of width sigma the fitted
amplitude is biased by about -(dx^2 + dy^2) / (4 sigma^2), i.e. < 1e-4 for Q = 16 and sigma >= 1 px
(``tests/test_forced_psf_table.py`` measures it against ``images_at``).

Nodes: when the PixelPsf stamps sit on a full rectangular grid (as written by the simulator and
by ``estimate_psf``), the nodes are that grid and the bilinear blend reproduces PixelPsf's own
interpolation exactly; otherwise (scattered stamps) a regular grid over the image is used.
"""

from __future__ import annotations

import numpy as np

from skydp.exposure import PixelPsf

DEFAULT_PHASES = 16
SCATTERED_NODES = 5  # nodes per axis over the image when the PSF stamps are not on a grid


def _nodes(psf: PixelPsf, bbox: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Node coordinates (parent px) along x and y."""
    xs, ys = np.unique(psf.x), np.unique(psf.y)
    if xs.size * ys.size == psf.x.size:
        pairs = set(zip(psf.x.tolist(), psf.y.tolist()))
        if len(pairs) == psf.x.size:  # every (x, y) combination present: a full rectangular grid
            return xs, ys
    x0, y0, x1, y1 = bbox
    n = SCATTERED_NODES
    return np.linspace(x0, x1 - 1, n), np.linspace(y0, y1 - 1, n)


def _axis_weights(nodes: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower node index, upper node index and the weight of the upper node; clamped outside."""
    if nodes.size == 1:
        zero = np.zeros(q.shape, dtype=np.intp)
        return zero, zero, np.zeros(q.shape, dtype=np.float32)
    q = np.clip(q, nodes[0], nodes[-1])
    i0 = np.clip(np.searchsorted(nodes, q, side="right") - 1, 0, nodes.size - 2)
    t = (q - nodes[i0]) / (nodes[i0 + 1] - nodes[i0])
    return i0, i0 + 1, t.astype(np.float32)


class PhasedPsf:
    """Table (ny_nodes, nx_nodes, Q, Q, F, F) float32 of PSF images cropped to ``size`` x ``size``.

    ``images(x, y)`` (parent pixels) returns (N, F, F) stamps on the same pixel convention as
    ``PixelPsf.images_at``: stamp pixel F//2 is image pixel floor(x + 0.5), floor(y + 0.5). The
    crop keeps the full PSF normalisation (stamps sum to 1 over the full S x S), so an amplitude
    fitted on the cropped region is still the total flux.
    """

    def __init__(self, psf: PixelPsf, bbox: tuple[int, int, int, int], size: int | None = None,
                 phases: int = DEFAULT_PHASES) -> None:
        full = psf.stamp_size
        size = full if size is None else int(size)
        if size % 2 == 0 or not 1 <= size <= full:
            raise ValueError(f"PSF fit size must be odd and in [1, {full}], got {size}")
        if phases < 1:
            raise ValueError(f"phases must be >= 1, got {phases}")
        self.size, self.phases = size, int(phases)
        self.node_x, self.node_y = _nodes(psf, bbox)
        centres = (np.arange(phases) + 0.5) / phases - 0.5
        # every (node, phase) pair: positions near each node whose offset from the rounded pixel is the phase
        ny, nx = self.node_y.size, self.node_x.size
        gy, gx, qy, qx = np.meshgrid(np.arange(ny), np.arange(nx), np.arange(phases), np.arange(phases),
                                     indexing="ij")
        px = np.floor(self.node_x[gx] + 0.5) + centres[qx]
        py = np.floor(self.node_y[gy] + 0.5) + centres[qy]
        lo = full // 2 - size // 2
        table = np.empty((px.size, size, size), dtype=np.float32)
        block = 1024
        flat_x, flat_y = px.ravel(), py.ravel()
        for start in range(0, flat_x.size, block):
            stamps = psf.images_at(flat_x[start:start + block], flat_y[start:start + block])
            table[start:start + block] = stamps[:, lo:lo + size, lo:lo + size]
        self.table = table.reshape(ny, nx, phases, phases, size, size)

    def phase_index(self, v: np.ndarray) -> np.ndarray:
        """Phase bin of each coordinate: floor((v - floor(v + 0.5) + 0.5) * Q), in [0, Q)."""
        frac = v - np.floor(v + 0.5) + 0.5
        return np.minimum((frac * self.phases).astype(np.intp), self.phases - 1)

    def images(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(N, F, F) float32 PSF stamps at parent positions (x, y)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        qx, qy = self.phase_index(x), self.phase_index(y)
        ix0, ix1, tx = _axis_weights(self.node_x, x)
        iy0, iy1, ty = _axis_weights(self.node_y, y)
        table = self.table
        if self.node_x.size == 1 and self.node_y.size == 1:
            return table[0, 0, qy, qx]
        out = table[iy0, ix0, qy, qx] * ((1 - tx) * (1 - ty))[:, None, None]
        out += table[iy0, ix1, qy, qx] * (tx * (1 - ty))[:, None, None]
        out += table[iy1, ix0, qy, qx] * ((1 - tx) * ty)[:, None, None]
        out += table[iy1, ix1, qy, qx] * (tx * ty)[:, None, None]
        return out
