"""Detection: PSF-matched-filter S/N image, sep thresholding + multi-threshold deblending, footprint growth.

As LSST's SourceDetectionTask: the image is correlated with a circular Gaussian of the PSF sigma,
the variance with the squared kernel, and pixels with smoothed S/N above the threshold form
footprints, which are then grown by ``grow_sigma`` PSF sigma. sep (SExtractor's extractor)
labels the footprints and splits blends at their peaks (multi-threshold deblending); we run it on
our own S/N image with its filter off and an absolute threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import sep
from scipy import ndimage

PIXSTACK = 1_000_000  # sep's first active-pixel stack size


@dataclass
class Footprints:
    """Detected sources and their pixels.

    ``segmap`` (int32, ny x nx) holds, for every pixel of a grown footprint, the 1-based index
    of the deblended source (child or isolated source) owning it; 0 elsewhere.
    ``parent`` (n,) gives for each source its 1-based parent footprint (connected component),
    and ``parent_map`` the same image in parent labels. A parent with more than one source is a blend.
    """

    x: np.ndarray  # (n,) 0-based array-frame peak-region barycentre on the S/N image
    y: np.ndarray
    peak_snr: np.ndarray
    segmap: np.ndarray
    parent: np.ndarray
    parent_map: np.ndarray
    n_parents: int

    @property
    def n_children(self) -> np.ndarray:
        """Number of deblended sources per parent (index 0 = parent label 1)."""
        return np.bincount(self.parent, minlength=self.n_parents + 1)[1:]


def gaussian_kernel_1d(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian, width int(7 sigma + 0.5)//2*2 + 1 as LSST's detection kernel."""
    half = max(1, int(7.0 * sigma + 0.5) // 2)
    u = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-0.5 * (u / sigma) ** 2)
    return k / k.sum()


def snr_image(image: np.ndarray, variance: np.ndarray, sigma: float) -> np.ndarray:
    """PSF-smoothed S/N: (K*I) / sqrt(K^2*V) with K the separable Gaussian of ``sigma`` px.

    Pixels with zero variance (masked) contribute neither signal nor noise; outside the image
    counts as zero. Returns float32, 0 where the ratio is not finite.
    """
    if image.shape != variance.shape:
        raise ValueError(f"snr_image: image {image.shape} and variance {variance.shape} differ in shape")
    k = gaussian_kernel_1d(sigma)
    return _snr_separable(np.ascontiguousarray(image, dtype=np.float32),
                          np.ascontiguousarray(variance, dtype=np.float32),
                          k.astype(np.float32), (k * k).astype(np.float32))


@numba.njit(cache=True, nogil=True)
def _correlate_row(row: np.ndarray, k: np.ndarray, out: np.ndarray) -> None:
    """out = row correlated with k (odd length), zero beyond the ends; taps outer so the inner
    loop is a vectorisable multiply-add over the row."""
    nx, half = row.size, k.size // 2
    out[:] = 0.0
    for t in range(k.size):
        shift, kt = t - half, k[t]
        lo, hi = max(0, -shift), min(nx, nx - shift)
        dst, src = out[lo:hi], row[lo + shift:hi + shift]  # slices: numba then vectorises the loop
        for i in range(hi - lo):
            dst[i] += kt * src[i]


@numba.njit(cache=True, nogil=True, error_model="numpy")  # x/0 is inf or NaN, then set to 0
def _snr_separable(image: np.ndarray, variance: np.ndarray, k: np.ndarray, k2: np.ndarray) -> np.ndarray:
    """(k x k correlated image) / sqrt(k2 x k2 correlated variance), in one pass over the rows.

    A compiled loop because both planes are smoothed along rows into a ring of 2 * half + 1
    filtered rows and combined down the columns row by row: no full-size temporaries, which with
    scipy's correlate1d (fast only along the contiguous axis) needed two transposed copies of
    both planes and dominated detection time.
    """
    ny, nx = image.shape
    n_taps, half = k.size, k.size // 2
    ring_i = np.zeros((n_taps, nx), dtype=np.float32)
    ring_v = np.zeros((n_taps, nx), dtype=np.float32)
    out = np.empty((ny, nx), dtype=np.float32)
    acc_i = np.empty(nx, dtype=np.float32)
    acc_v = np.empty(nx, dtype=np.float32)
    for j in range(-half, ny):
        src = j + half  # newest input row, filtered into the ring
        slot = src % n_taps
        if src < ny:
            _correlate_row(image[src], k, ring_i[slot])
            _correlate_row(variance[src], k2, ring_v[slot])
        else:
            ring_i[slot, :] = 0.0
            ring_v[slot, :] = 0.0
        if j < 0:
            continue
        acc_i[:] = 0.0
        acc_v[:] = 0.0
        for t in range(n_taps):
            row = j - half + t
            if row < 0:
                continue
            ri, rv = ring_i[row % n_taps], ring_v[row % n_taps]
            ki, kv = k[t], k2[t]
            for i in range(nx):
                acc_i[i] += ki * ri[i]
                acc_v[i] += kv * rv[i]
        row = out[j]
        for i in range(nx):  # branch-free, so vectorised; zero variance gives inf or NaN, fixed below
            row[i] = acc_i[i] / np.sqrt(acc_v[i])
        for i in range(nx):
            if not np.isfinite(row[i]):
                row[i] = 0.0
    return out


def detect(snr: np.ndarray, threshold: float, min_area: int, grow_radius: float,
           deblend: bool, deblend_nthresh: int, deblend_cont: float) -> Footprints:
    """Threshold ``snr`` at ``threshold``, deblend, and grow footprints by ``grow_radius`` px."""
    ny, nx = snr.shape
    sep.set_sub_object_limit(4096)
    data = np.ascontiguousarray(snr, dtype=np.float32)
    # sep allocates its active-pixel stack up front, a cost that grows with it: start with room
    # for any usual scene and only retry with the whole image when a huge footprint fills it
    for stack in (PIXSTACK, ny * nx):
        sep.set_extract_pixstack(max(stack, PIXSTACK))
        try:
            objects, segmap = sep.extract(
                data, threshold, minarea=min_area, filter_kernel=None, deblend_nthresh=deblend_nthresh,
                deblend_cont=deblend_cont if deblend else 1.0, clean=False, segmentation_map=True,
            )
            break
        except Exception as exc:  # sep raises a bare Exception
            if "pixel buffer full" not in str(exc) or stack >= ny * nx:
                raise
    segmap = segmap.astype(np.int32, copy=False)
    n = len(objects)
    if n:
        segmap = disk_dilate(segmap, grow_radius)
    parent_map, n_parents = ndimage.label(segmap > 0, structure=np.ones((3, 3), dtype=bool))
    parent_map = parent_map.astype(np.int32, copy=False)
    parent = _parent_of_labels(segmap, parent_map, n)
    return Footprints(
        x=np.asarray(objects["x"], dtype=np.float64), y=np.asarray(objects["y"], dtype=np.float64),
        peak_snr=np.asarray(objects["peak"], dtype=np.float64), segmap=segmap, parent=parent,
        parent_map=parent_map, n_parents=int(n_parents),
    )


@numba.njit(cache=True, nogil=True)
def _parent_of_labels(segmap: np.ndarray, parent_map: np.ndarray, n: int) -> np.ndarray:
    """(n,) connected component (parent label) of each source label 1..n, 0 if it has no pixel.

    Every source's pixels lie in one component, so any own pixel tells it; one compiled pass
    (numpy needed a flat index of every labelled pixel and a scatter, several times slower).
    """
    parent = np.zeros(n, dtype=np.int64)
    ny, nx = segmap.shape
    for j in range(ny):
        for i in range(nx):
            lab = segmap[j, i]
            if lab > 0:
                parent[lab - 1] = parent_map[j, i]
    return parent


def disk_dilate(labels: np.ndarray, radius: float) -> np.ndarray:
    """Grow non-zero labels into zero pixels within ``radius`` px (isotropic, a disk).

    Where grown footprints meet, the larger label wins; pixels already labelled keep their label;
    the dtype is kept. Only boundary pixels (a 4-neighbour with another label) are spread: any
    labelled pixel within the disk of an unlabelled pixel has, on the axis-steps towards it, a
    boundary pixel of the same label that is nearer still, so the result is the full disk maximum.
    """
    r = int(np.floor(radius))
    if r < 1 or labels.size == 0:
        return labels
    half_widths = np.array([int(np.floor(np.sqrt(radius**2 - dy**2))) for dy in range(-r, r + 1)], dtype=np.int64)
    return _dilate_from_boundaries(np.ascontiguousarray(labels), half_widths)


@numba.njit(cache=True, nogil=True)
def _dilate_from_boundaries(labels: np.ndarray, half_widths: np.ndarray) -> np.ndarray:
    """Max of the labels over the disk (rows -r..r, half-widths ``half_widths``) at unlabelled pixels.

    Compiled: footprints cover a small part of an image, and spreading only their boundary pixels
    is a few times less work than the separable maximum filters over every pixel it replaces.
    """
    ny, nx = labels.shape
    r = half_widths.size // 2
    grown = labels.copy()
    for j in range(ny):
        for i in range(nx):
            lab = labels[j, i]
            if lab == 0:
                continue
            if ((i == 0 or labels[j, i - 1] == lab) and (i == nx - 1 or labels[j, i + 1] == lab)
                    and (j == 0 or labels[j - 1, i] == lab) and (j == ny - 1 or labels[j + 1, i] == lab)):
                continue  # interior: its disk is covered by nearer boundary pixels
            for dy in range(max(-r, -j), min(r, ny - 1 - j) + 1):
                w = half_widths[dy + r]
                row = j + dy
                for q in range(max(0, i - w), min(nx - 1, i + w) + 1):
                    if labels[row, q] == 0 and grown[row, q] < lab:
                        grown[row, q] = lab
    return grown
