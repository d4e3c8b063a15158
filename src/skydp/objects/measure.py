"""Object table of one patch: multi-band detection, deblending, reference band, per-band measurement.

Steps (LSST's coadd pipeline: detectCoaddSources, mergeCoaddDetections, deblend,
measureMergedCoaddSources, mergeCoaddMeasurements, forcedPhotCoadd):
1. every band's noise-normalised S/N image is combined into a chi-squared significance image and
   thresholded at ``threshold`` Gaussian-equivalent sigma (``skydp.objects.detection``); footprints are
   deblended at their peaks;
2. in every band the PSF-fit centroid and free PSF flux are measured from the detection peak;
3. the reference band is the first of i, r, z, y, g, u whose free PSF flux has S/N >= ``ref_band_snr``
   (else the band of largest S/N); its centroid is the object position (x, y, coord_ra, coord_dec);
4. every band is measured at that position (forced): PSF flux, apertures, moments, GaussianFlux,
   Kron flux in the reference band's Kron ellipse, blendedness, pixel flags; then aperture correction
   and the extendedness classifiers.
Rows: every deblended or isolated source, then every blend parent (``deblend_nChild`` > 0, not primary).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from skydp import ids, tables
from skydp.coadd import Coadd
from skydp.exposure import Exposure
from skydp.objects.band_measurement import BandMeasurer, Ellipse, RowGroups, apply_aperture_correction
from skydp.objects.config import REF_BAND_PRIORITY, ObjectConfig
from skydp.objects.detection import detect_objects, prepare_band
from skydp.pipeline.classification import classify
from skydp.pipeline.detection import Footprints
from skydp.pipeline.stamps import round_half_up
from skydp.skymap import PatchInfo, SkyMap

AB_ZERO_POINT_NJY = 31.4


def measure_objects(coadds: Mapping[str, Exposure | Coadd], patch: PatchInfo, skymap: SkyMap,
                    config: ObjectConfig | None = None) -> pa.Table:
    """Object table (exact ``Object`` schema) of one patch from its background-subtracted coadds.

    ``coadds`` maps band -> coadd on the patch grid (all bands on the same grid; parent pixels are tract
    pixels), each with a variance plane and a PSF. Given as ``skydp.coadd.Coadd``, its input_count map
    gives {b}_inputCount and its inputs table {b}_epoch (weight-averaged mid-exposure MJD of the inputs
    whose box holds the object); given as a plain Exposure those two columns are null.
    """
    config = config or ObjectConfig()
    inputs = {b: (c.input_count, c.inputs) for b, c in coadds.items() if isinstance(c, Coadd)}
    coadds = {b: c.exposure if isinstance(c, Coadd) else c for b, c in coadds.items()}
    bands = _check_inputs(coadds)
    prepared = [prepare_band(b, coadds[b], config.noise_sample) for b in bands]
    planes = [p for p, _ in prepared]
    snrs = [s for _, s in prepared]
    del prepared
    found = detect_objects(snrs, max(p.sigma for p in planes), config.threshold, config.min_area,
                           config.grow_sigma, config.deblend, config.deblend_nthresh, config.deblend_cont)
    del snrs
    if len(found.x) == 0:
        return tables.empty_table("Object")
    groups, x_peak, y_peak = _row_groups(found)
    measurers = {p.band: BandMeasurer(p, found, groups, config) for p in planes}
    cols: dict[str, np.ndarray] = {}

    # 2-3. unforced centroids and fluxes; reference band and position
    unforced = {b: m.unforced(x_peak, y_peak) for b, m in measurers.items()}
    ref_index = _reference_band(bands, unforced, config.ref_band_snr)
    ref = {k: _pick(ref_index, [unforced[b][k] for b in bands])
           for k in ("centroid_x", "centroid_y", "centroid_xErr", "centroid_yErr", "_centroid_xy_cov",
                     "centroid_flag")}
    x, y = ref["centroid_x"], ref["centroid_y"]

    # 4. forced measurements at the reference position
    moments = {b: m.moments(x, y) for b, m in measurers.items()}
    ref_mom = {k: _pick(ref_index, [moments[b][k] for b in bands])
               for k in ("ixx", "iyy", "ixy", "i_flag", "ixxPSF", "iyyPSF", "ixyPSF")}
    use_psf = ref_mom["i_flag"] | ~np.isfinite(ref_mom["ixx"])
    ellipse = Ellipse(*(np.where(use_psf, ref_mom[f"{k}PSF"], ref_mom[k]) for k in ("ixx", "iyy", "ixy")))
    kron_units = {}
    for b, m in measurers.items():
        kron_units[b], moments[b]["kronRad"] = m.kron_radius(x, y, ellipse)
    ref_units = _pick(ref_index, [kron_units[b] for b in bands])
    kron_scale = np.maximum(config.kron_radius_factor * np.nan_to_num(ref_units, nan=0.0), config.kron_min_radius)

    shape = planes[0].image.shape
    for b, m in measurers.items():
        band_cols = {**unforced[b], **moments[b], **m.forced(x, y, ellipse, kron_scale)}
        band_cols["kronFlux_flag"] |= ~np.isfinite(kron_units[b])
        stars = _apcorr_stars(band_cols, config.apcorr_min_snr)
        stars[groups.n_children:] = False  # blend parents are not stars
        stars[:groups.n_children] &= m.aperture_loss(x, y) <= config.apcorr_max_loss
        apply_aperture_correction(band_cols, m.encircled_energy(x, y), stars, x, y, shape, config.apcorr_order,
                                  config.apcorr_systematic)
        classify(band_cols, config.extendedness_ratio)
        _magnitudes(band_cols)
        band_cols.pop("_centroid_xy_cov")
        ox, oy = coadds[b].xy0
        band_cols["centroid_x"] = band_cols["centroid_x"] + ox
        band_cols["centroid_y"] = band_cols["centroid_y"] + oy
        if b in inputs:
            band_cols["inputCount"] = _value_at(inputs[b][0], x, y)
            band_cols["epoch"] = _epoch(inputs[b][1], x + ox, y + oy)
        cols.update({f"{b}_{k}": v for k, v in band_cols.items()})

    # global columns
    ref_exp = coadds[bands[0]]
    ox, oy = ref_exp.xy0
    cols["x"], cols["y"] = x + ox, y + oy
    cols["xErr"], cols["yErr"] = ref["centroid_xErr"], ref["centroid_yErr"]
    cols["xy_flag"] = ref["centroid_flag"]
    cols.update(_sky_coordinates(ref_exp, cols["x"], cols["y"], cols["xErr"] ** 2, cols["yErr"] ** 2,
                                 ref["_centroid_xy_cov"]))
    cols["refBand"] = np.array(bands, dtype=object)[ref_index]
    cols["shape_xx"], cols["shape_yy"], cols["shape_xy"] = ref_mom["ixx"], ref_mom["iyy"], ref_mom["ixy"]
    cols["shape_flag"] = ref_mom["i_flag"]
    cols["refExtendedness"] = _pick(ref_index, [cols[f"{b}_extendedness"] for b in bands])
    cols["refSizeExtendedness"] = _pick(ref_index, [cols[f"{b}_sizeExtendedness"] for b in bands])
    cols.update(_family_columns(found, groups, patch, skymap, cols["coord_ra"], cols["coord_dec"]))
    return tables.to_arrow("Object", cols)


def _check_inputs(coadds: Mapping[str, Exposure]) -> list[str]:
    if not coadds:
        raise ValueError("measure_objects: no coadds given")
    known = [c.name[:-len("_psfFlux")] for c in tables.columns("Object") if c.name.endswith("_psfFlux")]
    unknown = sorted(set(coadds) - set(known))
    if unknown:
        raise ValueError(f"measure_objects: band(s) {unknown} have no columns in the Object table (bands {known})")
    bands = [b for b in REF_BAND_PRIORITY if b in coadds]
    first = coadds[bands[0]]
    for b in bands:
        exp = coadds[b]
        if not isinstance(exp, Exposure):
            raise ValueError(f"measure_objects: coadd of band {b} is a {type(exp).__name__}, not an Exposure")
        if exp.shape != first.shape or exp.xy0 != first.xy0:
            raise ValueError(f"measure_objects: band {b} coadd grid (shape {exp.shape}, xy0 {exp.xy0}) differs "
                             f"from band {bands[0]} ({first.shape}, {first.xy0}); all bands must share the patch grid")
    return bands


def _row_groups(found: Footprints) -> tuple[RowGroups, np.ndarray, np.ndarray]:
    """Children then blend parents; a parent starts at its brightest child's peak."""
    n_src = len(found.x)
    blend_parents = np.flatnonzero(found.n_children > 1) + 1
    order = np.lexsort((-found.peak_snr, found.parent))
    first = np.r_[True, found.parent[order][1:] != found.parent[order][:-1]]
    brightest = np.zeros(found.n_parents + 1, dtype=np.int64)
    brightest[found.parent[order][first]] = order[first]
    groups = RowGroups(labels=np.arange(1, n_src + 1), parent_labels=blend_parents)
    x = np.concatenate([found.x, found.x[brightest[blend_parents]]])
    y = np.concatenate([found.y, found.y[brightest[blend_parents]]])
    return groups, x, y


def _reference_band(bands: list[str], unforced: dict[str, dict[str, np.ndarray]], min_snr: float) -> np.ndarray:
    """Index into ``bands`` (already in priority order) of each row's reference band."""
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.stack([np.where(unforced[b]["free_psfFlux_flag"], np.nan,
                                 unforced[b]["free_psfFlux"] / unforced[b]["free_psfFluxErr"]) for b in bands])
    snr = np.nan_to_num(snr, nan=-np.inf)
    significant = snr >= min_snr
    first = np.argmax(significant, axis=0)
    return np.where(significant.any(axis=0), first, np.argmax(snr, axis=0))


def _pick(index: np.ndarray, per_band: list[np.ndarray]) -> np.ndarray:
    return np.stack(per_band)[index, np.arange(len(index))]


def _apcorr_stars(c: dict[str, np.ndarray], min_snr: float) -> np.ndarray:
    """Bright, unflagged, PSF-sized objects used to fit the aperture correction."""
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = c["psfFlux"] / c["psfFluxErr"]
        trace_ratio = (c["ixx"] + c["iyy"]) / (c["ixxPSF"] + c["iyyPSF"])
    flagged = (c["psfFlux_flag"] | c["gaussianFlux_flag"] | c["calibFlux_flag"] | c["centroid_flag"]
               | c["pixelFlags_saturated"] | c["pixelFlags_nodata"] | c["pixelFlags_interpolated"])
    return ~flagged & (snr > min_snr) & (np.abs(trace_ratio - 1) < 0.1)


def _magnitudes(c: dict[str, np.ndarray]) -> None:
    flux, err = c["psfFlux"], c["psfFluxErr"]
    positive = flux > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        c["psfMag"] = np.where(positive, AB_ZERO_POINT_NJY - 2.5 * np.log10(flux), np.nan)
        c["psfMagErr"] = np.where(positive, 2.5 / np.log(10) * err / flux, np.nan)


def _value_at(plane: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Plane value at the pixel holding each array-frame position (0 off the plane)."""
    ny, nx = plane.shape
    ix, iy = round_half_up(x), round_half_up(y)
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    return np.where(inside, plane[np.clip(iy, 0, ny - 1), np.clip(ix, 0, nx - 1)], 0)


def _epoch(inputs: pa.Table, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weight-averaged mid-exposure MJD of the inputs whose covered box holds each parent position."""
    total = np.zeros(len(x))
    weight = np.zeros(len(x))
    for row in inputs.select(["weight", "mjd", "exptime", "bbox"]).to_pylist():
        if row["bbox"] is None:
            continue
        x0, y0, x1, y1 = row["bbox"]
        inside = (x >= x0 - 0.5) & (x < x1 - 0.5) & (y >= y0 - 0.5) & (y < y1 - 0.5)
        total += inside * row["weight"] * (row["mjd"] + row["exptime"] / 2.0 / 86400.0)
        weight += inside * row["weight"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, total / weight, np.nan)


def _sky_coordinates(exp: Exposure, x: np.ndarray, y: np.ndarray, vxx: np.ndarray, vyy: np.ndarray,
                     vxy: np.ndarray) -> dict[str, np.ndarray]:
    """coord_ra/dec and the covariance of (ra, dec), as for Sources (Exposure.pixel_to_sky_with_errors)."""
    values = exp.pixel_to_sky_with_errors(x, y, vxx, vyy, np.nan_to_num(vxy, nan=0.0))
    return dict(zip(("coord_ra", "coord_dec", "coord_raErr", "coord_decErr", "coord_ra_dec_Cov"), values))


def _family_columns(found: Footprints, groups: RowGroups, patch: PatchInfo, skymap: SkyMap, ra: np.ndarray,
                    dec: np.ndarray) -> dict[str, np.ndarray]:
    """Ids, deblending bookkeeping, footprint areas and detect_is* flags."""
    n_src, n_par = groups.n_children, len(groups.parent_labels)
    n_rows = n_src + n_par
    object_id = np.asarray(ids.object_id(patch.tract, patch.patch, np.arange(1, n_rows + 1)), dtype=np.int64)
    parent_row = np.full(found.n_parents + 1, -1, dtype=np.int64)
    parent_row[groups.parent_labels] = n_src + np.arange(n_par)
    child_parent_row = parent_row[found.parent]
    parent_id = np.zeros(n_rows, dtype=np.int64)
    parent_id[:n_src] = np.where(child_parent_row >= 0, object_id[np.maximum(child_parent_row, 0)], 0)
    n_child = np.zeros(n_rows, dtype=np.int32)
    n_child[n_src:] = found.n_children[groups.parent_labels - 1]
    area_child = np.bincount(found.segmap.ravel(), minlength=n_src + 1)
    area_parent = np.bincount(found.parent_map.ravel(), minlength=found.n_parents + 1)
    inner = skymap.is_patch_inner(patch.tract, patch.patch, ra, dec) & skymap.is_tract_inner(patch.tract, ra, dec)
    return {"objectId": object_id, "parentObjectId": parent_id, "deblend_nChild": n_child,
            "detect_isIsolated": (parent_id == 0) & (n_child == 0),
            "detect_isPrimary": inner & (n_child == 0),
            "footprintArea": np.concatenate([area_child[groups.labels], area_parent[groups.parent_labels]]),
            "tract": np.full(n_rows, patch.tract, dtype=np.int64), "patch": np.full(n_rows, patch.patch, dtype=np.int64)}
