"""Single-visit processing of one detector: background, PSF, cosmic rays, detection, deblending,
measurement, aperture correction, ids and the CcdVisit summary (issue 4)."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa

from skydp import ids, tables
from skydp.exposure import Exposure, Mask, PixelPsf
from skydp.pipeline.aperture_correction import fit_aperture_correction
from skydp.pipeline.apertures import ApertureSummer, local_background
from skydp.pipeline.background import Background, estimate_background, masked_mesh_mean
from skydp.pipeline.classification import classify
from skydp.pipeline.config import APERTURE_RADII, CALIB_APERTURE_RADIUS, SingleVisitConfig
from skydp.pipeline.cosmic_rays import find_cosmic_rays, interpolate_over, psf_sharpness_ratios
from skydp.pipeline.detection import Footprints, detect, disk_dilate, gaussian_kernel_1d, snr_image
from skydp.pipeline.empty_apertures import MIN_APERTURES, empty_aperture_noise
from skydp.pipeline.moments import adaptive_moments
from skydp.pipeline.pixel_flags import FLAG_PLANES, footprint_area_and_bits, pixel_flags
from skydp.pipeline.psf_estimation import PsfEstimationError, estimate_psf, gaussian_psf
from skydp.pipeline.psf_photometry import fit_psf
from skydp.pipeline.sky_sources import place_sky_sources
from skydp.pipeline.stamps import StampCutter
from skydp.pipeline.summary import ccd_visit_row, sky_noise

UNUSABLE_PLANES = ("BAD", "SAT", "NO_DATA")  # removed from every fit and sum (LSST badMaskPlanes)
KIND_SOURCE, KIND_PARENT, KIND_SKY = 0, 1, 2


@dataclass
class SourceFootprints:
    """Footprints of the catalogue rows.

    ``segmap`` labels each grown footprint pixel with the 1-based index of its deblended source
    and ``parent_map`` with its parent footprint; ``source_id[label - 1]`` and
    ``parent_source_id[parent - 1]`` give the Source ids (a parent with a single source is that
    source itself).
    """

    segmap: np.ndarray
    parent_map: np.ndarray
    source_id: np.ndarray
    parent_source_id: np.ndarray


@dataclass
class SingleVisitResult:
    exposure: Exposure  # background-subtracted; CR/INTRP/DETECTED/EDGE set; psf set
    background: Background
    sources: pa.Table  # exactly skydp.tables.arrow_schema("Source")
    footprints: SourceFootprints
    ccd_visit: dict


def process_visit_image(exposure: Exposure, config: SingleVisitConfig | None = None) -> SingleVisitResult:
    """Run single-visit processing on one detector image; the input exposure is not modified."""
    config = config or SingleVisitConfig()
    _check_input(exposure)
    exp = exposure.copy()
    mask = exp.mask
    for name in ("BAD", "SAT", "INTRP", "CR", "EDGE", "DETECTED", "NO_DATA", "SUSPECT"):
        mask.add_plane(name)

    # bad input: NaN pixels -> NO_DATA, non-positive or non-finite variance -> BAD
    nodata = ~np.isfinite(exp.image)
    if nodata.any():
        _set_plane(mask, "NO_DATA", nodata)
        exp.image[nodata] = 0.0
    if exp.variance is not None:
        bad_var = ~((exp.variance > 0) & (exp.variance < np.inf))  # NaN compares false: bad too
        if bad_var.any():
            _set_plane(mask, "BAD", bad_var & ~nodata)
    unusable = (mask.array & mask.bitmask(*UNUSABLE_PLANES)) != 0
    any_unusable = bool(unusable.any())

    # 1. background (first pass: sep's clipping only; refined after detection)
    background = estimate_background(exp.image, unusable, config.background_mesh, config.background_filter)
    if exp.variance is None:
        exp.variance = np.maximum(background.rms_image(), 0) ** 2
        exp.info.warnings.append("variance estimated from the background RMS map (no VARIANCE plane)")
    exp.image -= background.image()
    var_work = np.asarray(exp.variance, dtype=np.float32)  # zero at unusable pixels: a copy then
    if any_unusable:
        var_work = var_work.copy() if var_work is exp.variance else var_work
        var_work[unusable] = 0.0
        exp.image[unusable] = 0.0

    # 2. PSF
    n_psf_star = None
    if exp.psf is None:
        try:
            exp.psf, n_psf_star = _psf_from_stars(exp, var_work, unusable, config)
        except PsfEstimationError as exc:
            exp.psf = gaussian_psf(config.initial_psf_fwhm, config.psf_stamp_size, exp.xy0)
            n_psf_star = 0
            exp.info.warnings.append(f"{exc}; using a Gaussian PSF of FWHM {config.initial_psf_fwhm} px")
    ny, nx = exp.shape
    cx_parent, cy_parent = exp.xy0[0] + (nx - 1) / 2.0, exp.xy0[1] + (ny - 1) / 2.0
    psf_shape = exp.psf.shape(cx_parent, cy_parent)
    psf_kernel = exp.psf.image(cx_parent, cy_parent)
    sigma = psf_shape.sigma

    # 3. cosmic rays
    # the sharpest PSF anywhere on the detector sets the limit, so no star core passes for a CR
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 3) + exp.xy0[0], np.linspace(0, ny - 1, 3) + exp.xy0[1])
    ratios = np.min([psf_sharpness_ratios(exp.psf.image(a, b)) for a, b in zip(gx.ravel(), gy.ravel())], axis=0)
    crs = find_cosmic_rays(exp.image, var_work, unusable, ratios,
                           config.cr_min_sigma, config.cr_sharpness_margin)
    if crs.any():
        _set_plane(mask, "CR", crs)
        interpolate_over(exp.image, crs, unusable)
        _set_plane(mask, "INTRP", crs)

    # 4-5. detection and deblending
    edge = len(gaussian_kernel_1d(sigma)) // 2
    edge_bit = np.int32(mask.bitmask("EDGE"))
    for border in (mask.array[:edge, :], mask.array[-edge:, :], mask.array[:, :edge], mask.array[:, -edge:]):
        border |= edge_bit
    snr = snr_image(exp.image, var_work, sigma)
    found = detect(snr, config.threshold, config.min_area, config.grow_sigma * sigma,
                   config.deblend, config.deblend_nthresh, config.deblend_cont)
    del snr
    detected = found.segmap > 0
    _set_plane(mask, "DETECTED", detected)

    # 1 (again). background re-estimated with the detected footprints, widened to cover the PSF
    # wings of bright sources, masked
    masked = _grown_mask(detected, config.background_mask_grow * sigma, unusable)
    correction = masked_mesh_mean(exp.image, masked, config.background_mesh, config.background_filter)
    del masked
    exp.image -= correction.image()
    if any_unusable:
        exp.image[unusable] = 0.0
    background = background.plus(correction)
    if n_psf_star:
        # the PSF was estimated on the first-pass background, which bright stars' wings bias high:
        # refit it on the refined one (a stamp-wide offset of ~1 nJy/px is ~0.5% of the model's flux)
        try:
            exp.psf, n_psf_star = _psf_from_stars(exp, var_work, unusable, config)
        except PsfEstimationError:
            pass  # keep the first-pass PSF

    # 6-8. measurement, aperture correction, ids
    avoid = unusable | detected  # not blank sky
    columns, row_labels = _measure(exp, var_work, unusable, detected, avoid, found, config, sigma)
    n_rows = len(columns["x"])
    counter = np.arange(1, n_rows + 1)
    ccd_visit_id = _ccd_visit_id(exp)
    source_ids = counter if ccd_visit_id == 0 else ids.source_id(exp.info.visit, exp.info.detector, counter)
    columns["sourceId"] = source_ids
    kind = columns.pop("_kind")
    parent_row = columns.pop("_parent_row")
    columns["parentSourceId"] = np.where(parent_row >= 0, source_ids[np.maximum(parent_row, 0)], 0)
    columns["visit"] = np.full(n_rows, exp.info.visit, dtype=np.int64)
    columns["detector"] = np.full(n_rows, exp.info.detector, dtype=np.int32)
    columns["band"] = np.full(n_rows, exp.info.band or "", dtype=object)
    columns["physical_filter"] = np.full(n_rows, exp.info.physical_filter or "", dtype=object)
    known = {c.name for c in tables.columns("Source")}
    sources = tables.to_arrow("Source", {k: v for k, v in columns.items() if k in known})

    footprints = _footprints(found, source_ids, row_labels, kind)
    noise = sky_noise(exp.image, avoid)
    usable_variance = exp.variance[~unusable] if any_unusable else exp.variance
    ccd_visit = ccd_visit_row(exp, ccd_visit_id, sigma, psf_kernel, float(np.median(background.values)),
                              noise, float(np.median(usable_variance)) if usable_variance.size else float("nan"),
                              n_psf_star)
    return SingleVisitResult(exposure=exp, background=background, sources=sources, footprints=footprints,
                             ccd_visit=ccd_visit)


def _psf_from_stars(exp: Exposure, var_work: np.ndarray, unusable: np.ndarray,
                    config: SingleVisitConfig) -> tuple[PixelPsf, int]:
    """The PSF estimated from the image's stars and how many were used (PsfEstimationError if too few)."""
    estimated = estimate_psf(exp.image, var_work, unusable, exp.xy0, config.initial_psf_fwhm,
                             config.psf_stamp_size, config.psf_n_components, config.psf_spatial_order,
                             config.psf_grid, config.psf_min_snr, config.psf_max_stars)
    return estimated.psf, estimated.n_stars


def _grown_mask(mask: np.ndarray, radius: float, also: np.ndarray | None = None) -> np.ndarray:
    """``mask`` grown by at least ``radius`` px, OR ``also`` (when given), for masks that only have
    to cover a region (the PSF wings kept out of the background fit).

    The disk growth runs on 2x2-binned pixels (a binned pixel is set if any of its four is) with
    the radius widened by the binned pixels' half-diagonals, so the result contains the exact disk
    growth and exceeds it by at most ~3 px, for a quarter of the work.
    """
    ny, nx = mask.shape
    by, bx = -(-ny // 2), -(-nx // 2)
    m = mask.view(np.uint8)
    binned = np.zeros((by, bx), dtype=np.uint8)
    for dy in (0, 1):
        for dx in (0, 1):
            part = m[dy::2, dx::2]
            np.maximum(binned[:part.shape[0], :part.shape[1]], part, out=binned[:part.shape[0], :part.shape[1]])
    grown = disk_dilate(binned, (radius + np.sqrt(2.0)) / 2)
    out = np.zeros((ny, nx), dtype=bool) if also is None else np.array(also, dtype=bool)
    _upsample_or(grown.view(bool), out)
    return out


@numba.njit(cache=True, nogil=True)
def _upsample_or(binned: np.ndarray, out: np.ndarray) -> None:
    """out |= ``binned`` repeated 2 x 2 (cropped to out): one pass, where numpy's broadcast-reshape
    copy and a separate OR each crossed the full-size plane."""
    ny, nx = out.shape
    for j in range(ny):
        row = binned[j // 2]
        for i in range(nx):
            if row[i // 2]:
                out[j, i] = True


def _set_plane(mask: Mask, name: str, where: np.ndarray) -> None:
    """Set mask plane ``name`` (already added) where ``where`` is true, keeping the other bits: one
    pass over the image, unlike Mask.set's boolean indexing, which is slow on dense planes."""
    np.bitwise_or(mask.array, np.int32(mask.bitmask(name)), out=mask.array, where=where)


def _check_input(exposure: Exposure) -> None:
    if exposure.wcs is None or not exposure.wcs.is_celestial:
        raise ValueError(f"visit {exposure.info.visit} detector {exposure.info.detector}: "
                         "the exposure has no celestial WCS; sky positions cannot be measured")
    if min(exposure.shape) < 16:
        raise ValueError(f"visit {exposure.info.visit} detector {exposure.info.detector}: "
                         f"image {exposure.shape} is too small to process")


def _ccd_visit_id(exp: Exposure) -> int:
    """Packed visit+detector id; 0 for images without an LSST visit id (e.g. plain FITS images)."""
    if exp.info.visit == 0:
        exp.info.warnings.append("no visit id: ccdVisitId = 0 and sourceId = the row counter")
        return 0
    return ids.pack_visit_detector(exp.info.visit, exp.info.detector)


def _measure(exp: Exposure, var_work: np.ndarray, unusable: np.ndarray, detected: np.ndarray, avoid: np.ndarray,
             found: Footprints, config: SingleVisitConfig, sigma: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Measure all rows: deblended/isolated sources, blend parents, sky sources."""
    ny, nx = exp.shape
    psf = exp.psf
    size = psf.stamp_size
    cutter = StampCutter(max(size // 2, 1) + 2)
    cutter.add("image", exp.image)
    cutter.add("variance", var_work)
    cutter.add("bad", unusable, fill=True)
    cutter.add("labels", found.segmap)
    cutter.add("parents", found.parent_map)
    cutter.add("mask", exp.mask.array, fill=exp.mask.bitmask("NO_DATA"))
    cutter.add("avoid", avoid, fill=True)

    n_src = len(found.x)
    n_child = found.n_children
    blend_parents = np.flatnonzero(n_child > 1) + 1  # parent labels
    # a blend parent starts at its brightest child
    brightest = np.zeros(found.n_parents + 1, dtype=np.int64)
    if n_src:
        order = np.lexsort((-found.peak_snr, found.parent))
        first = np.r_[True, found.parent[order][1:] != found.parent[order][:-1]]
        brightest[found.parent[order][first]] = order[first]
    rng = np.random.default_rng(config.seed if config.seed is not None
                                else [exp.info.visit % 2**32, exp.info.detector])
    sky_x, sky_y = place_sky_sources(cutter, "avoid", (ny, nx), config.n_sky_sources, size, rng)

    groups = [  # (kind, x0, y0, label plane, labels, fit centroid)
        (KIND_SOURCE, found.x, found.y, "labels", np.arange(1, n_src + 1), True),
        (KIND_PARENT, found.x[brightest[blend_parents]], found.y[brightest[blend_parents]], "parents",
         blend_parents, True),
        (KIND_SKY, sky_x, sky_y, "labels", np.zeros(len(sky_x), dtype=np.int64), False),
    ]
    bits = exp.mask.bitmask(*[p for p in FLAG_PLANES.values() if p in exp.mask.planes])
    # plane -> (footprint area, OR of the flag bits) per label; index 0 (no label) stays 0. A parent
    # footprint is the union of its children's, so its values add up (area) and OR (bits) theirs.
    area, fp_bits = footprint_area_and_bits(exp.mask.array, found.segmap, n_src, bits)
    parent_area = np.bincount(found.parent, weights=area[1:], minlength=found.n_parents + 1).astype(np.int64)
    parent_bits = np.zeros(found.n_parents + 1, dtype=np.int64)
    np.bitwise_or.at(parent_bits, found.parent, fp_bits[1:])
    per_label = {"labels": (area, fp_bits), "parents": (parent_area, parent_bits)}
    parts = [_measure_group(exp, unusable, per_label, cutter, psf, size, sigma, config, *g) for g in groups]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n_rows = len(cols["x"])
    kind = cols["_kind"]
    row_labels = np.concatenate([g[4] for g in groups])

    # apertures of all rows in one sweep: blend parents own their children's pixels
    flux, err, flag = ApertureSummer(exp.image, var_work, detected).fluxes(
        cols["x"], cols["y"], APERTURE_RADII, found.segmap, row_labels, found.parent, kind == KIND_PARENT)
    for j, r in enumerate(APERTURE_RADII):
        cols[f"ap{r:02d}Flux"], cols[f"ap{r:02d}FluxErr"], cols[f"ap{r:02d}Flux_flag"] = flux[:, j], err[:, j], flag[:, j]
    empty = empty_aperture_noise(exp.image, var_work, avoid, CALIB_APERTURE_RADIUS, config.n_empty_apertures, rng)
    if config.n_empty_apertures > 0 and empty.n_apertures < MIN_APERTURES:
        exp.info.warnings.append(f"only {empty.n_apertures} blank {CALIB_APERTURE_RADIUS:g}-px apertures fit between "
                                 "the detections: calibFluxErr holds pixel noise only")

    # deblending bookkeeping: parents get deblend_nChild, children their parent's row
    parent_row_of_label = np.full(found.n_parents + 1, -1, dtype=np.int64)
    parent_row_of_label[blend_parents] = n_src + np.arange(len(blend_parents))
    cols["_parent_row"] = np.full(n_rows, -1, dtype=np.int64)
    cols["_parent_row"][:n_src] = parent_row_of_label[found.parent]
    cols["deblend_nChild"] = np.zeros(n_rows, dtype=np.int32)
    cols["deblend_nChild"][n_src:n_src + len(blend_parents)] = n_child[blend_parents - 1]

    _apply_aperture_correction(cols, kind, config, (ny, nx), empty.variance)
    classify(cols, config.extendedness_ratio)
    # parent coordinates and sky positions
    cols["x"] = cols["x"] + exp.xy0[0]
    cols["y"] = cols["y"] + exp.xy0[1]
    _sky_coordinates(exp, cols)
    return cols, row_labels


def _measure_group(exp, unusable, per_label, cutter, psf, size, sigma, config,
                   kind, x0, y0, plane, labels, fit_centroid) -> dict[str, np.ndarray]:
    n = len(x0)
    x0 = np.asarray(x0, dtype=np.float64)
    y0 = np.asarray(y0, dtype=np.float64)
    ox, oy = exp.xy0

    def psf_at(xa, ya):  # PSF in array coordinates, from the phase tables (error < 3e-5 of the peak)
        return psf.images_at(xa + ox, ya + oy, tabulated=True)

    def psf_cores_at(xa, ya, core):
        return psf.cores_at(xa + ox, ya + oy, core)

    core = min(size, 2 * int(np.ceil(config.centroid_core_sigma * sigma)) + 1)
    fit = fit_psf(cutter, psf_at, x0, y0, plane, labels, size, np.full(n, fit_centroid), core_size=max(core, 3),
                  psf_cores_at=psf_cores_at)
    out: dict[str, np.ndarray] = {"_kind": np.full(n, kind, dtype=np.int8), "x": fit.x, "y": fit.y,
                                  "xErr": fit.x_err, "yErr": fit.y_err, "_xy_cov": fit.xy_cov,
                                  "centroid_flag": fit.centroid_flag, "psfFlux": fit.flux,
                                  "psfFluxErr": fit.flux_err, "psfFlux_flag": fit.flux_flag,
                                  "psfFlux_area": fit.area, "_psf_chi2": fit.chi2}
    cx, cy = np.floor(fit.x + 0.5), np.floor(fit.y + 0.5)
    sig0 = np.full(n, sigma)
    mom = adaptive_moments(fit.data, fit.variance, fit.good, fit.x - cx, fit.y - cy, sig0)
    # the PSF's moments on its central box of +-6 PSF sigma: its adaptive weight (sigma ~ the PSF's)
    # is below 2e-8 beyond, so the wings there add nothing but cost
    box = slice(max(size // 2 - int(np.ceil(6 * sigma)), 0), size // 2 + int(np.ceil(6 * sigma)) + 1)
    psf_box = np.ascontiguousarray(fit.psf[:, box, box])
    pmom = adaptive_moments(psf_box, np.zeros_like(psf_box), np.ones(psf_box.shape, bool), fit.x - cx, fit.y - cy, sig0)
    out.update(ixx=mom.ixx, iyy=mom.iyy, ixy=mom.ixy, ixxPSF=pmom.ixx, iyyPSF=pmom.iyy, ixyPSF=pmom.ixy,
               gaussianFlux=mom.gaussian_flux, gaussianFluxErr=mom.gaussian_flux_err,
               gaussianFlux_flag=mom.flag, invalidPsfFlag=pmom.flag)
    out["_ee_calib"] = np.einsum("nij,ij->n", fit.psf, _circle_overlap(size, CALIB_APERTURE_RADIUS))

    out["sky"], out["skyErr"] = local_background(exp.image, unusable, fit.x, fit.y,
                                                 *(np.array(config.local_background_radii) * sigma))

    area, fp_bits = per_label[plane]  # label 0 (sky sources): no footprint, area 0, no bits
    out.update(pixel_flags(exp.mask, cutter, fp_bits[labels], fit.x, fit.y, exp.shape))
    out["footprintArea_value"] = np.where(labels > 0, area[labels], 0).astype(np.int32)
    out["sky_source"] = np.full(n, kind == KIND_SKY)
    return out


def _circle_overlap(size: int, radius: float, oversample: int = 16) -> np.ndarray:
    """Fraction of each pixel of a (size, size) stamp inside a circle about the centre pixel."""
    sub = (np.arange(size * oversample) + 0.5) / oversample - 0.5 - size // 2
    inside = (sub[None, :] ** 2 + sub[:, None] ** 2) <= radius**2
    return inside.reshape(size, oversample, size, oversample).mean(axis=(1, 3))


def _apply_aperture_correction(cols: dict, kind: np.ndarray, config: SingleVisitConfig,
                               shape: tuple[int, int], empty_variance: float) -> None:
    """calibFlux = 12-px aperture scaled to total by the PSF model's encircled energy, its error
    with the empty-aperture variance added; psfFlux and gaussianFlux are corrected to it with
    Chebyshev fields fitted on bright isolated stars."""
    ee = cols.pop("_ee_calib")
    cols["calibFlux"] = cols["ap12Flux"] / ee
    cols["calibFluxErr"] = np.sqrt(cols["ap12FluxErr"] ** 2 + empty_variance) / ee
    with np.errstate(divide="ignore", invalid="ignore"):
        trace_ratio = (cols["ixx"] + cols["iyy"]) / (cols["ixxPSF"] + cols["iyyPSF"])
        snr = cols["psfFlux"] / cols["psfFluxErr"]
    flagged = np.zeros(len(kind), dtype=bool)
    for name in ("pixelFlags_edge", "pixelFlags_saturated", "pixelFlags_bad", "pixelFlags_nodata",
                 "pixelFlags_cr", "pixelFlags_interpolated", "centroid_flag", "psfFlux_flag",
                 "gaussianFlux_flag", "ap12Flux_flag"):
        flagged |= cols[name]
    stars = ((kind == KIND_SOURCE) & (cols["_parent_row"] < 0) & ~flagged & (snr > config.apcorr_min_snr)
             & (np.abs(trace_ratio - 1) < 0.1))
    for flux in ("psfFlux", "gaussianFlux"):
        field = fit_aperture_correction(cols["x"][stars], cols["y"][stars], cols["calibFlux"][stars],
                                        cols["calibFluxErr"][stars], cols[flux][stars], cols[f"{flux}Err"][stars],
                                        shape, config.apcorr_order)
        corr = field(cols["x"], cols["y"])
        cols[flux] = cols[flux] * corr
        cols[f"{flux}Err"] = cols[f"{flux}Err"] * corr
        if flux == "psfFlux":
            cols["psfFlux_apCorr"] = corr
            cols["psfFlux_apCorrErr"] = np.full(len(kind), field.error)
            cols["psfFlux_flag"] = cols["psfFlux_flag"] | (field.coeffs is None)


def _sky_coordinates(exp: Exposure, cols: dict) -> None:
    """ra/dec, coord_ra/coord_dec and their errors (see Exposure.pixel_to_sky_with_errors)."""
    ra, dec, cols["raErr"], cols["decErr"], cols["ra_dec_Cov"] = exp.pixel_to_sky_with_errors(
        cols["x"], cols["y"], cols["xErr"] ** 2, cols["yErr"] ** 2, cols.pop("_xy_cov"))
    cols["ra"] = cols["coord_ra"] = ra
    cols["dec"] = cols["coord_dec"] = dec
    cols.pop("_psf_chi2")


def _footprints(found: Footprints, source_ids: np.ndarray, row_labels: np.ndarray,
                kind: np.ndarray) -> SourceFootprints:
    n_src = len(found.x)
    parent_ids = np.zeros(found.n_parents, dtype=np.int64)
    # a parent with one source is that source; a blend parent is its own row
    single = kind == KIND_SOURCE
    parent_ids[found.parent[single[:n_src]] - 1] = source_ids[:n_src]
    blend = kind == KIND_PARENT
    parent_ids[row_labels[blend] - 1] = source_ids[blend]
    return SourceFootprints(segmap=found.segmap, parent_map=found.parent_map, source_id=source_ids[:n_src],
                            parent_source_id=parent_ids)
