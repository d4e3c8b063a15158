"""Circular-aperture fluxes with exact pixel overlap, and the LSST local background.

Every source is measured on its own pixels: pixels of other sources' footprints count as zero
(the expectation of LSST's noise replacement on a background-subtracted image), as do unusable
pixels (zero in the image and variance planes handed in). The aperture sum therefore splits into
the unlabelled ("clean") pixels, summed with row prefix sums for the pixels entirely inside the
circle plus the exact circle-pixel overlap of the boundary pixels, and the source's own footprint
pixels, each weighted by its exact overlap. This costs O(r) per aperture instead of the O(r^2) of
sep.sum_circle, which matters for the 35-70 px apertures of DP1 (sep also rescales sums for
masked pixels, i.e. fills neighbours with the aperture mean; that biases the large apertures).
As sep, the variance sum weights each pixel's variance by its overlap fraction.
"""

from __future__ import annotations

import numpy as np

from skydp.pipeline.stamps import StampCutter, round_half_up

CLIP_SIGMA = 3.0
CLIP_ITERATIONS = 3
_SOURCE_BLOCK = 256  # sources per block of aperture records: bounds the temporaries


class ApertureSummer:
    """Exact circular-aperture sums on a (background-subtracted) image and its variance.

    ``labelled`` marks the pixels of every footprint; they are excluded from every aperture except
    those of the source's own footprint (see ``fluxes``). Unusable pixels must be 0 in ``variance``
    (and are then ignored: an aperture without a pixel of positive variance is flagged).
    """

    def __init__(self, image: np.ndarray, variance: np.ndarray, labelled: np.ndarray) -> None:
        self.shape = image.shape
        self.planes = (image, variance)
        self.clean = tuple(np.where(labelled, np.float32(0), p).astype(np.float32) for p in self.planes)

    def fluxes(self, x: np.ndarray, y: np.ndarray, radii: tuple[float, ...], label_map: np.ndarray | None = None,
               own: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fluxes, errors and flags (N, len(radii)) in apertures at array-frame (x, y).

        Source i also sums the pixels of ``label_map`` equal to ``own[i]`` (> 0; 0 = none).
        A flag is set when the aperture extends off the image or holds no usable pixel.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        n, k = len(x), len(radii)
        r = np.asarray(radii, dtype=np.float64)
        sums = self._clean_sums(x, y, r)
        if label_map is not None and own is not None and np.any(own > 0):
            sums += self._own_sums(x, y, r, label_map, np.asarray(own))
        flux, var = sums[0].reshape(n, k), sums[1].reshape(n, k)
        ny, nx = self.shape
        truncated = ((x[:, None] - r < -0.5) | (x[:, None] + r > nx - 0.5)
                     | (y[:, None] - r < -0.5) | (y[:, None] + r > ny - 0.5))
        flag = truncated | ~(var > 0) | ~np.isfinite(flux)
        return flux, np.sqrt(var), flag

    def _clean_sums(self, x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
        """(2, N*K) sums of the clean planes, in blocks of sources sorted by row (bounded memory)."""
        n, k = len(x), len(r)
        out = np.zeros((2, n, k))
        order = np.argsort(y, kind="stable")
        for start in range(0, n, _SOURCE_BLOCK):
            block = order[start:start + _SOURCE_BLOCK]
            out[:, block] = self._clean_block(x[block], y[block], r).reshape(2, len(block), k)
        return out.reshape(2, n * k)

    def _clean_block(self, x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Prefix sums along rows for the pixels entirely inside each circle, exact overlap on its edge."""
        ny, nx = self.shape
        n, k = len(x), len(r)
        out = np.zeros((2, n * k))
        # one record per (source, radius, image row) the circle touches
        xs, ys, rs = np.repeat(x, k), np.repeat(y, k), np.tile(r, n)
        j_lo = np.maximum(np.floor(ys - rs - 0.5).astype(np.int64) + 1, 0)
        j_hi = np.minimum(np.ceil(ys + rs + 0.5).astype(np.int64) - 1, ny - 1)
        count = np.maximum(j_hi - j_lo + 1, 0)
        if not count.any():
            return out
        rec = np.repeat(np.arange(n * k), count)
        j = _ragged_arange(j_lo, count)
        xc, yc, rr = xs[rec], ys[rec], rs[rec]
        dy0, dy1 = j - 0.5 - yc, j + 0.5 - yc
        ymin = np.where((dy0 < 0) & (dy1 > 0), 0.0, np.minimum(np.abs(dy0), np.abs(dy1)))
        ymax = np.maximum(np.abs(dy0), np.abs(dy1))
        hmax = np.sqrt(np.maximum(rr**2 - ymin**2, 0.0))  # half-chord at the row's widest point
        hmin = np.sqrt(np.maximum(rr**2 - ymax**2, 0.0))  # ... and at its narrowest
        a = np.ceil(xc - hmin + 0.5).astype(np.int64)  # columns a..b lie entirely inside
        b = np.floor(xc + hmin - 0.5).astype(np.int64)
        lo = np.floor(xc - hmax - 0.5).astype(np.int64) + 1  # columns lo..hi touch the circle
        hi = np.ceil(xc + hmax + 0.5).astype(np.int64) - 1
        full = a <= b
        # whole pixels: differences of float64 prefix sums over the rows this block touches
        row0 = int(j.min())
        rows = j - row0
        fa, fb = np.maximum(a, 0), np.minimum(b, nx - 1)
        use = full & (fa <= fb)
        prefix = np.zeros((int(j.max()) - row0 + 1, nx + 1))
        for p, plane in enumerate(self.clean):
            np.cumsum(plane[row0:row0 + len(prefix)], axis=1, dtype=np.float64, out=prefix[:, 1:])
            whole = np.where(use, prefix[rows, fb + 1] - prefix[rows, np.minimum(fa, nx)], 0.0)
            out[p] += np.bincount(rec, whole, minlength=n * k)
        del prefix
        # edge pixels: lo..a-1 and b+1..hi (all of lo..hi when no pixel is whole), within the image
        left_hi = np.where(full, a - 1, hi)
        right_lo = np.where(full, b + 1, hi + 1)
        for s0, s1 in ((np.maximum(lo, 0), np.minimum(left_hi, nx - 1)),
                       (np.maximum(right_lo, 0), np.minimum(hi, nx - 1))):
            m = np.maximum(s1 - s0 + 1, 0)
            idx = np.repeat(np.arange(len(rec)), m)
            col = _ragged_arange(s0, m)
            area = _pixel_overlap(col - xc[idx], dy0[idx], dy1[idx], rr[idx])
            flat = j[idx] * nx + col
            for p, plane in enumerate(self.clean):
                out[p] += np.bincount(rec[idx], area * plane.ravel()[flat], minlength=n * k)
        return out

    def _own_sums(self, x: np.ndarray, y: np.ndarray, r: np.ndarray, label_map: np.ndarray,
                  own: np.ndarray) -> np.ndarray:
        """(2, N*K) sums over each source's own footprint pixels, weighted by exact overlap."""
        n, k = len(x), len(r)
        nx = self.shape[1]
        row_of_label = np.full(int(label_map.max()) + 1, -1, dtype=np.int64)
        row_of_label[own[own > 0]] = np.flatnonzero(own > 0)
        flat = np.flatnonzero(label_map)
        src = row_of_label[label_map.ravel()[flat]]
        keep = src >= 0
        flat, src = flat[keep], src[keep]
        dx = flat % nx - x[src]
        dy = flat // nx - y[src]
        adx, ady = np.abs(dx), np.abs(dy)
        near2 = np.maximum(adx - 0.5, 0) ** 2 + np.maximum(ady - 0.5, 0) ** 2
        far2 = (adx + 0.5) ** 2 + (ady + 0.5) ** 2
        reach = near2 < r.max() ** 2
        flat, src, dx, dy, near2, far2 = flat[reach], src[reach], dx[reach], dy[reach], near2[reach], far2[reach]
        values = [p.ravel()[flat].astype(np.float64) for p in self.planes]
        out = np.zeros((2, n, k))
        for i, radius in enumerate(r):
            w = (far2 <= radius**2).astype(np.float64)
            edge = np.flatnonzero((near2 < radius**2) & (far2 > radius**2))
            w[edge] = _pixel_overlap(dx[edge], dy[edge] - 0.5, dy[edge] + 0.5, np.full(edge.size, radius))
            for p in range(2):
                out[p, :, i] = np.bincount(src, w * values[p], minlength=n)
        return out.reshape(2, n * k)


def _ragged_arange(start: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Concatenation of arange(start[i], start[i] + count[i]) over i."""
    total = int(count.sum())
    ends = np.cumsum(count)
    offset = np.arange(total) - np.repeat(ends - count, count)
    return np.repeat(start, count) + offset


def _pixel_overlap(dx: np.ndarray, dy0: np.ndarray, dy1: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Exact area of the disc of radius r about the origin inside [dx-0.5, dx+0.5] x [dy0, dy1]."""
    return (_corner_area(dx + 0.5, dy1, r) - _corner_area(dx - 0.5, dy1, r)
            - _corner_area(dx + 0.5, dy0, r) + _corner_area(dx - 0.5, dy0, r))


def _corner_area(x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed area of the disc inside the rectangle between (0, 0) and (x, y).

    For x, y >= 0 (clipped to r): x y where the corner is inside the disc, otherwise
    xa y + G(x) - G(xa) with xa = sqrt(r^2 - y^2) and G the primitive of sqrt(r^2 - t^2).
    """
    ax = np.minimum(np.abs(x), r)
    ay = np.minimum(np.abs(y), r)
    r2 = r * r
    xa = np.sqrt(np.maximum(r2 - ay * ay, 0.0))
    inside = ax <= xa
    xb = np.where(inside, xa, ax)

    def prim(t):
        return 0.5 * (t * np.sqrt(np.maximum(r2 - t * t, 0.0)) + r2 * np.arcsin(np.minimum(t / r, 1.0)))

    area = np.where(inside, ax * ay, xa * ay + prim(xb) - prim(xa))
    return np.sign(x) * np.sign(y) * area


def local_background(cutter: StampCutter, x: np.ndarray, y: np.ndarray,
                     inner: float, outer: float) -> tuple[np.ndarray, np.ndarray]:
    """LSST base_LocalBackground: 3x3-sigma-clipped mean and std of annulus pixels.

    The annulus (``inner``..``outer`` px around the pixel nearest the centroid) ignores pixels
    flagged bad (BAD, SAT, NO_DATA); as in LSST it is not deblended: clipping removes neighbours.
    """
    r_out = int(np.ceil(outer))
    grid = np.arange(-r_out, r_out + 1)
    rr = np.hypot(grid[None, :], grid[:, None])
    dy, dx = np.nonzero((rr >= inner) & (rr <= outer))
    dy, dx = dy - r_out, dx - r_out
    cx, cy = round_half_up(x), round_half_up(y)
    values = cutter.gather("image", cx, cy, dx, dy)
    ok = ~cutter.gather("bad", cx, cy, dx, dy)
    for iteration in range(CLIP_ITERATIONS + 1):
        count = ok.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.einsum("nk,nk->n", values, ok, dtype=np.float64) / count
            dev = values - mean[:, None].astype(values.dtype)
            dev *= ok
            std = np.sqrt(np.einsum("nk,nk->n", dev, dev, dtype=np.float64) / (count - 1))
            if iteration < CLIP_ITERATIONS:
                ok &= np.abs(dev) <= (CLIP_SIGMA * std)[:, None]
    return mean, std
