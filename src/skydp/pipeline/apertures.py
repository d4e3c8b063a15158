"""Circular-aperture fluxes with exact pixel overlap, and the LSST local background.

Every source is measured on its own pixels: pixels of other sources' footprints count as zero
(the expectation of LSST's noise replacement on a background-subtracted image), as do unusable
pixels (zero in the image and variance planes handed in). The sums are those of sep's exact
``sum_circle`` given the footprint map as ``segmap`` with the source's own label as ``seg_id``
and no ``mask`` (pixels of other labels skipped, not replaced by the aperture mean); the
variance sum weights each pixel's variance by its overlap fraction squared: the variance of the
flux sum for independent pixels (sep and photutils weight by the fraction itself, which overstates
the error of small apertures: 6% for the 3-px one, 13% for 1.5 px on noise, as a test shows). They are
computed by ``exact_apertures.aperture_sums``, all radii in one pass per source, several times
faster than sep for the nine DP1 radii (tests compare the two). Radii below 1 px are refused
(such apertures carry no useful flux, and sep, the reference, is not exact below ~0.71 px).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from skydp.pipeline.clipped_sums import sums_within
from skydp.pipeline.exact_apertures import aperture_sums, label_index
from skydp.pipeline.stamps import round_half_up

CLIP_SIGMA = 3.0
CLIP_ITERATIONS = 3
MIN_RADIUS = 1.0  # px


class ApertureSummer:
    """Exact circular-aperture sums on a (background-subtracted) image and its variance.

    ``labelled`` marks the pixels of every footprint; they are excluded from every aperture except
    those of the source's own footprint (see ``fluxes``). Unusable pixels must be 0 in ``variance``
    (and are then ignored: an aperture without a pixel of positive variance is flagged).
    """

    def __init__(self, image: np.ndarray, variance: np.ndarray, labelled: np.ndarray) -> None:
        self.shape = image.shape
        self.image = _native_float(image)
        self.variance = _native_float(variance)
        self.labelled = np.asarray(labelled, dtype=bool)
        self._any_labelled = bool(self.labelled.any())
        self._segmaps: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = {}

    def fluxes(self, x: np.ndarray, y: np.ndarray, radii: tuple[float, ...], label_map: np.ndarray | None = None,
               own: np.ndarray | None = None, parent: np.ndarray | None = None,
               owns_parent: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fluxes, errors and flags (N, len(radii)) in apertures at array-frame (x, y).

        Source i also sums the pixels of ``label_map`` equal to ``own[i]`` (> 0; 0 = none). With
        ``parent`` ((n_labels,), the 1-based parent footprint of each label, as Footprints.parent),
        a source with ``owns_parent[i]`` true instead owns every label whose parent is ``own[i]``:
        a blend parent is measured on its whole footprint in the same pass as its children.
        A flag is set when the aperture extends off the image or holds no usable pixel;
        non-finite positions give NaN and a flag.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        n, k = len(x), len(radii)
        r = np.asarray(radii, dtype=np.float64)
        if np.any(~(r >= MIN_RADIUS)):
            raise ValueError(f"aperture radii must be >= {MIN_RADIUS} px: got {list(radii)}")
        if n == 0 or k == 0:
            return np.zeros((n, k)), np.zeros((n, k)), np.zeros((n, k), dtype=bool)
        use_own = label_map is not None and own is not None
        seg_id = np.asarray(own, dtype=np.int64) if use_own else np.zeros(n, dtype=np.int64)
        seg, start, pixels, _ = self._segmap(label_map if use_own else None)
        by_group = np.zeros(n, dtype=bool) if owns_parent is None or not use_own else np.asarray(owns_parent, bool)
        if by_group.any() and parent is None:
            raise ValueError("owns_parent needs parent, the parent footprint of each label")
        group, members_start, members = _label_groups(parent if by_group.any() else None, start.size - 2)
        finite = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
        order = finite[np.argsort(y[finite], kind="stable")]
        by_radius = np.argsort(r)
        flux_sorted, var_sorted = np.zeros((order.size, k)), np.zeros((order.size, k))
        aperture_sums(self.image, self.variance, seg, self._any_labelled, x[order], y[order], seg_id[order],
                      by_group[order], group, members_start, members, start, pixels, r[by_radius],
                      flux_sorted, var_sorted)
        flux, var = np.full((n, k), np.nan), np.full((n, k), np.nan)
        flux[np.ix_(order, by_radius)] = flux_sorted
        var[np.ix_(order, by_radius)] = var_sorted
        err = np.sqrt(var)
        ny, nx = self.shape
        with np.errstate(invalid="ignore"):
            flag = ((x[:, None] - r < -0.5) | (x[:, None] + r > nx - 0.5)  # the disc reaches off the image
                    | (y[:, None] - r < -0.5) | (y[:, None] + r > ny - 0.5))
            flag |= ~(err > 0) | ~np.isfinite(flux)
        return flux, err, flag

    def _segmap(self, label_map: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """int32 label map, and its ``label_index``: ``label_map`` where it labels a pixel and a label
        no source owns at the other ``labelled`` pixels (so own label 0, or any own label, excludes
        them); without ``label_map`` every labelled pixel has that unowned label."""
        key = 0 if label_map is None else id(label_map)
        if key not in self._segmaps:
            if not self._any_labelled:
                seg = np.zeros((1, 1), dtype=np.int32)  # not read
            elif label_map is None:
                seg = self.labelled.astype(np.int32)
            else:
                if label_map.shape != self.shape:
                    raise ValueError(f"label_map has shape {label_map.shape}, the image {self.shape}")
                seg = np.ascontiguousarray(label_map, dtype=np.int32)
                orphan = self.labelled & (seg == 0)
                if orphan.any():
                    seg = np.where(orphan, np.int32(seg.max() + 1), seg)
            n_labels = int(seg.max()) if label_map is not None and self._any_labelled else 0
            start, pixels = label_index(seg, n_labels) if n_labels else (np.zeros(2, np.int64), np.zeros(0, np.int64))
            self._segmaps[key] = (seg, start, pixels, label_map)  # the label map is kept alive: its id stays unique
        return self._segmaps[key]


def _label_groups(parent: np.ndarray | None, n_labels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group (parent) of each label 0..n_labels (0 for label 0 and labels beyond ``parent``, e.g.
    the unowned label of orphan footprint pixels) and the labels of each group as CSR
    (members[members_start[g]:members_start[g + 1]]); without ``parent`` every group is empty."""
    if parent is None:
        return np.zeros(max(n_labels, 0) + 1, dtype=np.int64), np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    parent = np.asarray(parent, dtype=np.int64)
    if parent.size and parent.min() < 1:
        raise ValueError("parent: every label's parent footprint must be >= 1")
    group = np.zeros(max(n_labels, parent.size) + 1, dtype=np.int64)
    group[1:parent.size + 1] = parent
    members = np.argsort(parent, kind="stable") + 1
    members_start = np.concatenate([[0], np.cumsum(np.bincount(parent, minlength=parent.max(initial=0) + 1))])
    return group, members_start, members


def _native_float(plane: np.ndarray) -> np.ndarray:
    """C-contiguous native-endian float32/float64 view or copy, as sep requires."""
    plane = np.asarray(plane)
    dtype = plane.dtype if plane.dtype in (np.float32, np.float64) else np.float32
    return np.ascontiguousarray(plane, dtype=dtype.newbyteorder("="))


def local_background(image: np.ndarray, bad: np.ndarray, x: np.ndarray, y: np.ndarray,
                     inner: float, outer: float) -> tuple[np.ndarray, np.ndarray]:
    """LSST base_LocalBackground: 3x3-sigma-clipped mean and std of annulus pixels.

    The annulus (``inner``..``outer`` px around the pixel nearest the centroid, array frame)
    ignores ``bad`` pixels (BAD, SAT, NO_DATA) and pixels off the image; as in LSST it is not
    deblended: clipping removes neighbours.
    """
    r_out = int(np.ceil(outer))
    grid = np.arange(-r_out, r_out + 1)
    rr = np.hypot(grid[None, :], grid[:, None])
    dy, dx = np.nonzero((rr >= inner) & (rr <= outer))
    mean, std = np.full(len(x), np.nan), np.full(len(x), np.nan)
    _clipped_annulus(image, np.ascontiguousarray(bad, dtype=bool), round_half_up(x), round_half_up(y),
                     dx - r_out, dy - r_out, mean, std)
    return mean, std


@numba.njit(cache=True, nogil=True)
def _clipped_annulus(image: np.ndarray, bad: np.ndarray, cx: np.ndarray, cy: np.ndarray, dx: np.ndarray,
                     dy: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """Per source: clipped mean and std of the usable annulus pixels (offsets dx, dy about (cx, cy)).

    Compiled: each source's ~1000-2000 annulus values are clipped in a small buffer, one pass per
    round (sums of the kept values and their squares about the round's first mean, the clip
    against the previous round's limits); with numpy the (N, K) gathers and masks of all sources
    at once cost several times more.
    """
    ny, nx = image.shape
    values = np.empty(dx.size)
    for n in range(cx.size):
        count = 0
        for q in range(dx.size):
            j, i = cy[n] + dy[q], cx[n] + dx[q]
            if 0 <= j < ny and 0 <= i < nx and not bad[j, i]:
                values[count] = image[j, i]
                count += 1
        if count == 0:
            continue
        shift = values[0]  # sums about a sample value: no cancellation when |mean| >> std
        lo, hi = -np.inf, np.inf  # the clipped values are those outside every round's limits
        n_before = -1
        for iteration in range(CLIP_ITERATIONS + 1):
            total, sq, n_use = sums_within(values, count, shift, lo, hi)
            if n_use == n_before or n_use == 0:  # the last clip removed nothing: statistics stand
                break
            m = total / n_use
            mean[n] = shift + m
            std[n] = math.sqrt(max(sq - n_use * m * m, 0.0) / (n_use - 1)) if n_use > 1 else np.nan
            if iteration == CLIP_ITERATIONS or not n_use > 1:
                break
            n_before = n_use
            lo = max(lo, mean[n] - CLIP_SIGMA * std[n])
            hi = min(hi, mean[n] + CLIP_SIGMA * std[n])
