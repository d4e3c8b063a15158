"""Running state of the DiaObjects during association, with a lazily rebuilt spatial index.

Per object: id, sum of DiaSource unit vectors (its direction is the mean position), count and
summed on-sky covariance (arcsec^2), in arrays that grow by doubling. Candidate search uses a
cKDTree built on a snapshot of the directions (in HEALPix nested order, see ``spatial_order``),
queried with the radius plus a margin; exact
distances to the current directions then decide. Objects created since the snapshot, and objects
whose mean moved by more than the margin since it, are searched in a small tree of their own
instead. The big tree is rebuilt only when that set exceeds a tenth of it, so a visit costs
O(visit size + touched objects) on average, not O(all objects).
"""

from __future__ import annotations

import healpy as hp
import numpy as np
from scipy.spatial import cKDTree

from skydp.association.matching import ARCSEC

MARGIN_ARCSEC = 1.0
_REBUILD_FRACTION = 0.1
_NEAREST = 4  # objects per source from the k-nearest query; sources with more fall back to a ball query
_ORDER_NSIDE = 1 << 16  # HEALPix resolution (3.2") of the space-filling order of tree points and queries


def chord(arcsec: float) -> float:
    """Chord length on the unit sphere of an angle in arcsec."""
    return 2.0 * np.sin(np.radians(arcsec * ARCSEC) / 2.0)


class ObjectState:
    """DiaObjects known so far (see the module docstring)."""

    def __init__(self, ids: np.ndarray, vec_sum: np.ndarray, count: np.ndarray, cov_sum: np.ndarray) -> None:
        self.size = 0
        capacity = max(1024, ids.size)
        self.ids = np.zeros(capacity, np.int64)
        self.vec_sum = np.zeros((capacity, 3))
        self.count = np.zeros(capacity)
        self.cov_sum = np.zeros((capacity, 3))
        self._tree: cKDTree | None = None
        self._tree_size = 0
        self._tree_objects = np.empty(0, np.int64)  # object index of each tree point
        self._snapshot = np.empty((0, 3))  # directions when the tree was built, in object order
        self._stale = np.zeros(capacity, bool)
        self.add(ids, vec_sum, count, cov_sum)

    def directions(self, index: np.ndarray | slice) -> np.ndarray:
        v = self.vec_sum[index]
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    def covariance(self, index: np.ndarray) -> np.ndarray:
        """On-sky covariance (ee, nn, en) of the mean positions, arcsec^2."""
        return self.cov_sum[index] / self.count[index, None] ** 2

    def add(self, ids: np.ndarray, vec_sum: np.ndarray, count: np.ndarray, cov_sum: np.ndarray) -> None:
        end = self.size + ids.size
        if end > self.ids.size:
            self._grow(max(end, 2 * self.ids.size))
        self.ids[self.size:end] = ids
        self.vec_sum[self.size:end] = vec_sum
        self.count[self.size:end] = count
        self.cov_sum[self.size:end] = cov_sum
        self.size = end

    def update(self, index: np.ndarray, vectors: np.ndarray, cov: np.ndarray) -> None:
        """Add one DiaSource (unit vector, covariance) to each object of ``index`` (no repeats)."""
        self.vec_sum[index] += vectors
        self.count[index] += 1
        self.cov_sum[index] += cov
        indexed = index[index < self._tree_size]
        if indexed.size:
            moved = np.linalg.norm(self.directions(indexed) - self._snapshot[indexed], axis=1)
            self._stale[indexed[moved > chord(MARGIN_ARCSEC)]] = True

    def candidates(self, vectors: np.ndarray, radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
        """(source, object) index pairs closer than ``radius_arcsec`` (current mean positions)."""
        if self.size == 0 or len(vectors) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        loose = self._loose_objects()
        if loose.size > max(1000, _REBUILD_FRACTION * self._tree_size):
            self._rebuild()
            loose = self._loose_objects()
        parts_s, parts_o = [], []
        if self._tree is not None:
            s, o = pairs_within(self._tree, vectors, chord(radius_arcsec + MARGIN_ARCSEC))
            o = self._tree_objects[o]
            keep = ~self._stale[o]
            parts_s.append(s[keep])
            parts_o.append(o[keep])
        if loose.size:
            directions = self.directions(loose)
            order = spatial_order(directions)
            s, o = pairs_within(cKDTree(directions[order], balanced_tree=False), vectors, chord(radius_arcsec))
            parts_s.append(s)
            parts_o.append(loose[order[o]])
        s, o = np.concatenate(parts_s), np.concatenate(parts_o)
        close = np.linalg.norm(vectors[s] - self.directions(o), axis=1) <= chord(radius_arcsec)
        return s[close], o[close]

    def _loose_objects(self) -> np.ndarray:
        """Objects not (reliably) in the big tree: created after it, or moved beyond the margin."""
        return np.concatenate([np.flatnonzero(self._stale[:self._tree_size]),
                               np.arange(self._tree_size, self.size)])

    def _rebuild(self) -> None:
        self._snapshot = self.directions(slice(0, self.size))
        self._tree_objects = spatial_order(self._snapshot)
        self._tree = cKDTree(self._snapshot[self._tree_objects], balanced_tree=False)
        self._tree_size = self.size
        self._stale[:] = False

    def _grow(self, capacity: int) -> None:
        for name in ("ids", "vec_sum", "count", "cov_sum", "_stale"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), old.dtype)
            new[:self.size] = old[:self.size]
            setattr(self, name, new)


def spatial_order(vectors: np.ndarray) -> np.ndarray:
    """Order of (N, 3) unit vectors along the HEALPix nested (Z-order) curve.

    A cKDTree built on points in this order, queried in this order, touches memory almost
    sequentially: 1.7x faster builds and 1.4x faster queries than random order for 3e5 points
    and 1e4 queries, where cache misses dominate.
    """
    return np.argsort(hp.vec2pix(_ORDER_NSIDE, vectors[:, 0], vectors[:, 1], vectors[:, 2], nest=True))


def pairs_within(tree: cKDTree, vectors: np.ndarray, radius_chord: float) -> tuple[np.ndarray, np.ndarray]:
    """All (vector, tree point) index pairs closer than ``radius_chord``.

    A k-nearest query (fast, vectorised) finds them; the rare vectors with all k slots filled
    get an exact ball query instead, so no pair is missed. The queries run in ``spatial_order``.
    """
    k = min(_NEAREST, tree.n)
    order = spatial_order(vectors)
    dist, idx = tree.query(vectors[order], k=k, distance_upper_bound=radius_chord)
    dist, idx = dist.reshape(len(vectors), k), idx.reshape(len(vectors), k)
    full = np.zeros(len(vectors), bool)
    if k == _NEAREST:
        full[order] = np.isfinite(dist[:, -1])
    found = np.isfinite(dist) & ~full[order, None]
    s, o = order[np.nonzero(found)[0]], idx[found]
    if full.any():
        rows = np.flatnonzero(full)
        balls = tree.query_ball_point(vectors[rows], radius_chord)
        s = np.concatenate([s, np.repeat(rows, [len(b) for b in balls])])
        o = np.concatenate([o, np.concatenate([np.asarray(b, np.int64) for b in balls])])
    return s.astype(np.int64), o.astype(np.int64)
