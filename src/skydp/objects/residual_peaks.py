"""Peaks hidden on the wings of brighter stars: found on the image minus the PSF models of the
detected point sources, then given their share of the host's footprint.

A faint source 1-3 PSF FWHM from a star 3-1000 times brighter makes no local maximum of the
PSF-smoothed significance image, only a shoulder on the star's wing, so neither peak finding nor
multi-threshold deblending (``skydp.objects.detection``) can separate it. Crowded-field photometry
finds such sources by subtracting the PSF models of the sources already found and searching the
residual (the find-subtract-find loop of DAOPHOT, Stetson 1987, PASP 99, 191). Here:

1. every deblended source is PSF-fitted in every band (centroid and flux from its detection peak);
   the point-like ones (adaptive-moment trace within ``residual_point_trace`` of the PSF's: a PSF
   model of a galaxy would leave a ring of residual peaks) and the saturated ones (SAT in the 3x3
   centre: stars, whose moments are meaningless around the masked core but whose PSF fit uses the
   unsaturated wings) are subtracted;
2. the residual's S/N image uses the variance plus (``residual_profile_error`` x model)^2, the
   PSF-model error term of DAOPHOT's "profile error": the core of a bright star is never subtracted
   to its photon noise;
3. the bands are combined into the residual significance image exactly as for detection; its local
   maxima above the detection threshold inside a footprint and at least ``residual_min_separation``
   PSF FWHM from every detected peak are candidates;
4. a coadd PSF model slightly too narrow or too wide leaves a ring around every bright star, which
   is point-symmetric about the star, while a companion is not (the symmetry argument of the SDSS
   deblender, Lupton): a candidate is kept only if its residual S/N exceeds the one at its mirror
   image through its host's centre significantly, (s(c) - s(mirror)) / sqrt(2) combined over the
   bands like detection and at least the detection threshold (N(0, 1) per band on blank sky);
5. the host source's pixels are shared between it and its new neighbours: a pixel goes to the source
   whose profile (a Gaussian of the PSF sigma scaled to the source's peak significance, which is
   proportional to its flux) is largest there, a power-diagram split; a new source always keeps its
   peak pixel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from skydp.objects.band_measurement import BandMeasurer, RowGroups
from skydp.objects.config import ObjectConfig
from skydp.objects.detection import BandPlanes, significance_image
from skydp.pipeline.detection import Footprints, snr_image
from skydp.pipeline.stamps import round_half_up

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def add_residual_peaks(planes: list[BandPlanes], found: Footprints, config: ObjectConfig) -> Footprints:
    """``found`` with the sources detected on the PSF-subtracted residual added as new children.

    ``planes`` are in reference-band priority order; the first band's PSF-fit centroids are the
    host centres of the symmetry test.
    """
    n = len(found.x)
    if n == 0:
        return found
    groups = RowGroups(labels=np.arange(1, n + 1), parent_labels=np.zeros(0, dtype=np.int64))
    snrs, centres = [], []
    for p in planes:
        snr, centre = _residual_snr(p, BandMeasurer(p, found, groups, config), found, config)
        snrs.append(snr)
        centres.append(centre)
    z = significance_image(snrs)
    sigma = max(p.sigma for p in planes)
    ix, iy = _candidates(z, found, sigma, config)
    ix, iy = _asymmetric(snrs, found.segmap, centres[0], ix, iy, config.threshold)
    ix, iy = _strongest_apart(z, ix, iy, config.residual_min_separation * FWHM_PER_SIGMA * sigma)
    if len(ix) == 0:
        return found
    return _split_hosts(found, ix, iy, z[iy, ix].astype(np.float64), sigma)


def _residual_snr(planes: BandPlanes, measurer: BandMeasurer, found: Footprints, config: ObjectConfig
                  ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Noise-normalised S/N image of one band's image minus the PSF models of the point-like sources,
    and the PSF-fit centres of all sources (the detection position where the fit failed)."""
    fit = measurer.unforced(found.x, found.y)
    x, y = fit["centroid_x"], fit["centroid_y"]
    mom = measurer.moments(x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        trace_ratio = (mom["ixx"] + mom["iyy"]) / (mom["ixxPSF"] + mom["iyyPSF"])
    point_like = ~fit["free_psfFlux_flag"] & ~mom["i_flag"] & (np.abs(trace_ratio - 1.0) < config.residual_point_trace)
    # a saturated star's flux is flagged (most of the PSF is masked) but fitted on its wings all the same
    point = np.isfinite(fit["free_psfFlux"]) & (fit["free_psfFlux"] > 0) & (point_like | _saturated_centre(planes, x, y))
    model = _model_image(planes, x[point], y[point], fit["free_psfFlux"][point])
    model[planes.unusable] = 0.0
    variance = planes.variance + (np.float32(config.residual_profile_error) * model) ** 2
    # planes.variance already carries the noise scale, so this S/N image is normalised like detection's
    return snr_image(planes.image - model, variance, planes.sigma), (x, y)


def _saturated_centre(planes: BandPlanes, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether any pixel of the 3x3 box around each array-frame position has the SAT bit."""
    mask = planes.exposure.mask
    if "SAT" not in mask.planes:
        return np.zeros(len(x), dtype=bool)
    sat = ndimage.maximum_filter((mask.array & mask.bitmask("SAT")) != 0, size=3, mode="constant")
    ny, nx = sat.shape
    return sat[np.clip(round_half_up(y), 0, ny - 1), np.clip(round_half_up(x), 0, nx - 1)]


def _model_image(planes: BandPlanes, x: np.ndarray, y: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """Sum of flux x PSF stamps at array-frame positions (x, y), float32 on the band's grid."""
    ny, nx = planes.image.shape
    ox, oy = planes.exposure.xy0
    psf = planes.exposure.psf
    half = psf.stamp_size // 2
    padded = np.zeros((ny + 2 * half, nx + 2 * half), dtype=np.float64)
    if len(x):
        stamps = psf.images_at(x + ox, y + oy) * flux[:, None, None]
        cx, cy = round_half_up(x), round_half_up(y)
        offsets = np.arange(psf.stamp_size)
        rows = (cy[:, None, None] + offsets[None, :, None]).clip(0, ny + 2 * half - 1)
        cols = (cx[:, None, None] + offsets[None, None, :]).clip(0, nx + 2 * half - 1)
        np.add.at(padded, (np.broadcast_to(rows, stamps.shape), np.broadcast_to(cols, stamps.shape)), stamps)
    return padded[half:half + ny, half:half + nx].astype(np.float32)


def _candidates(z: np.ndarray, found: Footprints, sigma: float, config: ObjectConfig
                ) -> tuple[np.ndarray, np.ndarray]:
    """Integer array positions of the residual maxima of step 3."""
    local_max = z == ndimage.maximum_filter(z, size=2 * int(np.ceil(sigma)) + 1, mode="constant")
    iy, ix = np.nonzero(local_max & (z >= config.threshold) & (found.segmap > 0))
    if ix.size == 0:
        return ix, iy
    dist, _ = cKDTree(np.column_stack([found.x, found.y])).query(np.column_stack([ix, iy]))
    keep = dist >= config.residual_min_separation * FWHM_PER_SIGMA * sigma
    return ix[keep], iy[keep]


def _asymmetric(snrs: list[np.ndarray], segmap: np.ndarray, centres: tuple[np.ndarray, np.ndarray],
                ix: np.ndarray, iy: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The candidates that pass the symmetry test of step 4."""
    if ix.size == 0:
        return ix, iy
    host = segmap[iy, ix] - 1
    mx = 2.0 * centres[0][host] - ix
    my = 2.0 * centres[1][host] - iy
    anti = [(snr[iy, ix] - ndimage.map_coordinates(snr, [my, mx], order=1, mode="constant", cval=0.0))
            / np.sqrt(2.0) for snr in snrs]
    keep = significance_image(anti) >= threshold
    return ix[keep], iy[keep]


def _strongest_apart(z: np.ndarray, ix: np.ndarray, iy: np.ndarray, min_sep: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Of candidates closer than ``min_sep`` px to each other (a plateau or a noisy residual), the highest."""
    if ix.size == 0:
        return ix, iy
    order = np.argsort(-z[iy, ix], kind="stable")
    ix, iy = ix[order], iy[order]
    tree = cKDTree(np.column_stack([ix, iy]))
    suppressed = np.zeros(ix.size, dtype=bool)
    kept = []
    for k in range(ix.size):
        if not suppressed[k]:
            kept.append(k)
            suppressed[tree.query_ball_point([ix[k], iy[k]], min_sep)] = True
    kept_idx = np.array(kept, dtype=np.int64)
    return ix[kept_idx], iy[kept_idx]


def _split_hosts(found: Footprints, x_new: np.ndarray, y_new: np.ndarray, z_new: np.ndarray,
                 sigma: float) -> Footprints:
    """Add the new sources as children of their hosts' parents and share each host's pixels (step 4)."""
    n = len(found.x)
    host = found.segmap[y_new, x_new]
    new_labels = n + 1 + np.arange(len(x_new))
    segmap = found.segmap.copy()
    boxes = ndimage.find_objects(found.segmap)
    for h in np.unique(host):
        mine = np.flatnonzero(host == h)
        box = boxes[h - 1]
        yy, xx = np.nonzero(segmap[box] == h)
        yy = yy + box[0].start
        xx = xx + box[1].start
        cx = np.r_[found.x[h - 1], x_new[mine]]
        cy = np.r_[found.y[h - 1], y_new[mine]]
        peak = np.r_[found.peak_snr[h - 1], z_new[mine]]
        score = (np.log(np.maximum(peak, 1e-3))[:, None]
                 - ((xx[None, :] - cx[:, None]) ** 2 + (yy[None, :] - cy[:, None]) ** 2) / (2.0 * sigma**2))
        segmap[yy, xx] = np.r_[h, new_labels[mine]][np.argmax(score, axis=0)]
    segmap[y_new, x_new] = new_labels
    return Footprints(
        x=np.r_[found.x, x_new.astype(np.float64)], y=np.r_[found.y, y_new.astype(np.float64)],
        peak_snr=np.r_[found.peak_snr, z_new], segmap=segmap, parent=np.r_[found.parent, found.parent[host - 1]],
        parent_map=found.parent_map, n_parents=found.n_parents,
    )
