"""DiaSource detection and measurement on a difference image (LSST detectAndMeasure, issue 8 item 2).

Detection: the difference is correlated with a Gaussian of the difference-PSF sigma and divided by
the equally smoothed noise (the same matched filter as single-visit detection); pixels above
+threshold and below -threshold form positive and negative footprints, grown by ``grow_sigma`` PSF
sigma. A positive and a negative detection in the same grown footprint, closer than
``dipole_max_separation`` PSF FWHM, are one DiaSource with a dipole fit; every other detection is a
DiaSource of its own polarity. DETECTED / DETECTED_NEGATIVE are set on the difference mask.

Measurement: PSF-fit centroid (on the sign-flipped image for negative detections; the midpoint of
the two lobes for dipoles) with errors; psfFlux = signed PSF amplitude at the centroid (LSST
base_PsfFlux); apFlux in a 12 px circle; adaptive moments of the (sign-flipped) detection and of
the PSF in arcsec^2; scienceFlux and templateFlux = forced PSF fluxes on the visit image and on the
matched template (templateFluxErr corrected for the template noise correlated by the warp,
``warp.covariance_factor``, and by the matching kernel, ``convolved_noise_factor``); pixel flags
from the mask over the footprint and the 3 x 3 centre.
"""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa
from scipy import ndimage
from scipy.spatial import cKDTree

from skydp import ids, tables
from skydp.diffim.config import DiffimConfig
from skydp.diffim.decorrelation import convolved_noise_factor
from skydp.diffim.dipole import fit_dipole
from skydp.diffim.subtract import UNUSABLE_PLANES, Difference
from skydp.exposure import Exposure
from skydp.forced import forced_photometry_xy
from skydp.pipeline.apertures import ApertureSummer
from skydp.pipeline.detection import detect, snr_image
from skydp.pipeline.moments import adaptive_moments
from skydp.pipeline.pixel_flags import footprint_mask_bits, pixel_flags
from skydp.pipeline.psf_photometry import fit_psf, measurement_stamps
from skydp.pipeline.stamps import StampCutter, round_half_up
from skydp.warp import covariance_factor

# Forced-photometry PSF phases: DiaSources are few per image, so a coarse table (4 x 4 phases, centring
# error <= 1/8 px, flux bias < 0.3 % for sigma >= 1.5 px) instead of the default 16 x 16 (2.5 s per image)
FORCED_PHASES = 4


def detect_dia_sources(diff: Difference, science: Exposure, config: DiffimConfig | None = None) -> pa.Table:
    """DiaSource table (exact schema, diaObjectId 0) of the detections on ``diff.difference``."""
    config = config or DiffimConfig()
    exp = diff.difference
    if exp.psf is None or exp.variance is None:
        raise ValueError("detect_dia_sources: the difference image needs a PSF and a variance plane")
    if science.shape != exp.shape or science.xy0 != exp.xy0:
        raise ValueError(f"detect_dia_sources: science image {science.shape} at {science.xy0} is not on the "
                         f"difference grid {exp.shape} at {exp.xy0}")
    ny, nx = exp.shape
    x0, y0 = exp.xy0
    mask = exp.mask
    unusable = ((mask.array & mask.bitmask(*[p for p in UNUSABLE_PLANES if p in mask.planes])) != 0)
    unusable |= ~np.isfinite(exp.image) | ~np.isfinite(exp.variance) | (exp.variance <= 0)
    image = np.where(unusable, 0.0, exp.image).astype(np.float32)
    variance = np.where(unusable, 0.0, exp.variance).astype(np.float32)
    centre = (x0 + (nx - 1) / 2.0, y0 + (ny - 1) / 2.0)
    psf_shape = exp.psf.shape(*centre)
    sigma, fwhm = psf_shape.sigma, psf_shape.fwhm

    snr = snr_image(image, variance, sigma)
    grow = config.grow_sigma * sigma
    pos = detect(snr, config.detection_threshold, 1, grow, False, 1, 1.0)
    neg = detect(-snr, config.detection_threshold, 1, grow, False, 1, 1.0)
    del snr
    mask.set("DETECTED", mask.get("DETECTED") | (pos.segmap > 0))
    mask.set("DETECTED_NEGATIVE", mask.get("DETECTED_NEGATIVE") | (neg.segmap > 0))

    # rows: dipole pairs, then unpaired positives, then unpaired negatives
    pairs = _pair_lobes(pos, neg, config.dipole_max_separation * fwhm, (ny, nx))
    paired_p = np.zeros(len(pos.x), dtype=bool)
    paired_n = np.zeros(len(neg.x), dtype=bool)
    paired_p[pairs[:, 0]] = paired_n[pairs[:, 1]] = True
    single_p, single_n = np.flatnonzero(~paired_p), np.flatnonzero(~paired_n)
    n_pair = len(pairs)
    n = n_pair + len(single_p) + len(single_n)
    if n == 0:
        return tables.empty_table("DiaSource")
    row_of_pos = np.zeros(len(pos.x) + 1, dtype=np.int32)
    row_of_neg = np.zeros(len(neg.x) + 1, dtype=np.int32)
    row_of_pos[pairs[:, 0] + 1] = np.arange(1, n_pair + 1)
    row_of_neg[pairs[:, 1] + 1] = np.arange(1, n_pair + 1)
    row_of_pos[single_p + 1] = n_pair + 1 + np.arange(len(single_p))
    row_of_neg[single_n + 1] = n_pair + len(single_p) + 1 + np.arange(len(single_n))
    labels = np.maximum(row_of_pos[pos.segmap], row_of_neg[neg.segmap])  # footprint of each row (1-based)

    is_negative = np.zeros(n, dtype=bool)
    is_negative[n_pair + len(single_p):] = True
    peak = np.concatenate([np.maximum(pos.peak_snr[pairs[:, 0]], neg.peak_snr[pairs[:, 1]]),
                           pos.peak_snr[single_p], neg.peak_snr[single_n]])
    start_x = np.concatenate([0.5 * (pos.x[pairs[:, 0]] + neg.x[pairs[:, 1]]), pos.x[single_p], neg.x[single_n]])
    start_y = np.concatenate([0.5 * (pos.y[pairs[:, 0]] + neg.y[pairs[:, 1]]), pos.y[single_p], neg.y[single_n]])

    size = exp.psf.stamp_size
    pad = max(size // 2, int(np.ceil(config.aperture_radius))) + 2
    cutters = {}
    for sign in (1, -1):
        cutter = StampCutter(pad)
        cutter.add("image", image if sign > 0 else -image)
        cutter.add("variance", variance)
        cutter.add("bad", unusable, fill=True)
        cutter.add("none", np.zeros((ny, nx), dtype=np.int32))
        cutters[sign] = cutter
    cutters[1].add("mask", mask.array, fill=mask.bitmask("NO_DATA"))

    def psf_at(xa, ya):
        return exp.psf.images_at(xa + x0, ya + y0)

    # centroids: PSF fits on the sign-flipped image for negatives; dipoles take the lobe midpoint
    x, y = start_x.copy(), start_y.copy()
    x_err, y_err, xy_cov = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    centroid_flag = np.zeros(n, dtype=bool)
    for sign, rows in ((1, np.arange(n_pair, n_pair + len(single_p))), (-1, np.arange(n_pair + len(single_p), n))):
        if rows.size:
            fit = fit_psf(cutters[sign], psf_at, start_x[rows], start_y[rows], "none", np.zeros(rows.size, np.int64),
                          size, np.ones(rows.size, dtype=bool))
            x[rows], y[rows], x_err[rows], y_err[rows] = fit.x, fit.y, fit.x_err, fit.y_err
            xy_cov[rows], centroid_flag[rows] = fit.xy_cov, fit.centroid_flag
    dipole = _dipole_columns(exp, image, variance, ~unusable, pos, neg, pairs, n, fwhm, config)
    if n_pair:
        x[:n_pair], y[:n_pair] = dipole.pop("_x") - x0, dipole.pop("_y") - y0
        x_err[:n_pair], y_err[:n_pair], xy_cov[:n_pair] = dipole.pop("_x_err"), dipole.pop("_y_err"), dipole.pop("_xy_cov")
        centroid_flag[:n_pair] = ~np.isfinite(x_err[:n_pair])
        is_negative[:n_pair] = dipole["dipoleFluxDiff"][:n_pair] < 0
    else:
        for key in ("_x", "_y", "_x_err", "_y_err", "_xy_cov"):
            dipole.pop(key)

    flux = fit_psf(cutters[1], psf_at, x, y, "none", np.zeros(n, np.int64), size, np.zeros(n, dtype=bool))
    _, _, good = measurement_stamps(cutters[1], x, y, "none", np.zeros(n, np.int64), size)
    summer = ApertureSummer(image, variance, np.zeros((ny, nx), dtype=bool))
    ap, ap_err, ap_flag = summer.fluxes(x, y, (config.aperture_radius,))

    # shapes on the sign-flipped stamps
    signed = np.where(is_negative[:, None, None], -1.0, 1.0)
    data, var, good_m = measurement_stamps(cutters[1], x, y, "none", np.zeros(n, np.int64), size)
    cx, cy = np.floor(x + 0.5), np.floor(y + 0.5)
    sig0 = np.full(n, sigma)
    mom = adaptive_moments(data * signed, var, good_m, x - cx, y - cy, sig0)
    pmom = adaptive_moments(flux.psf, np.zeros_like(flux.psf), np.ones(flux.psf.shape, bool), x - cx, y - cy, sig0)
    scale2 = np.asarray(exp.pixel_scale(x + x0, y + y0)) ** 2
    t, tp = mom.ixx + mom.iyy, pmom.ixx + pmom.iyy
    with np.errstate(invalid="ignore", divide="ignore"):
        extendedness = 1.0 - np.exp(-0.5 * (t - tp) ** 2 / tp)

    bits = mask.bitmask(*mask.planes)
    fp_bits = footprint_mask_bits(mask.array, labels, n, bits)
    flags = pixel_flags(mask, cutters[1], fp_bits, x, y, (ny, nx))
    centre_bits = np.bitwise_or.reduce(cutters[1].cut("mask", round_half_up(x), round_half_up(y), 3).reshape(n, -1), axis=1)
    for plane, stem in (("NO_DATA", "nodata"), ("STREAK", "streak")):
        bit = mask.bitmask(plane) if plane in mask.planes else 0
        flags[f"pixelFlags_{stem}Center"] = (centre_bits & bit) != 0
        flags[f"pixelFlags_{stem}"] = ((fp_bits & bit) != 0) | flags[f"pixelFlags_{stem}Center"]
    boxes = ndimage.find_objects(labels, max_label=n)
    bbox_size = np.array([max(b[0].stop - b[0].start, b[1].stop - b[1].start) if b is not None else 0 for b in boxes])

    px, py = x + x0, y + y0
    ra, dec, ra_err, dec_err, ra_dec_cov = exp.pixel_to_sky_with_errors(px, py, x_err**2, y_err**2, xy_cov)
    sci = forced_photometry_xy(science, px, py, phases=FORCED_PHASES)
    tmpl = forced_photometry_xy(diff.matched_template, px, py, phases=FORCED_PHASES)
    # the matched template's noise is correlated by the warp and the kernel; the forced fit's error
    # assumes independent pixels. The PSF (x) kernel is broad next to the Lanczos kernel, so the
    # warp's factor is its large-area limit.
    template_var_factor = np.full(n, covariance_factor() if diff.template_warped else 1.0)
    if diff.convolved == "template" and diff.kernel is not None:
        psfs = diff.matched_template.psf.images_at(px, py)
        template_var_factor *= convolved_noise_factor(psfs, diff.kernel.kernel_images(x, y))
    template_err = tmpl["psfFluxErr"].to_numpy(zero_copy_only=False) * np.sqrt(template_var_factor)
    info = exp.info
    counter = np.arange(1, n + 1)
    dia_id = ids.source_id(info.visit, info.detector, counter) if info.visit else counter
    cols = {
        "diaSourceId": dia_id, "visit": np.full(n, info.visit), "detector": np.full(n, info.detector),
        "band": np.full(n, info.band or "", dtype=object), "diaObjectId": np.zeros(n, dtype=np.int64),
        "ssObjectId": np.zeros(n, dtype=np.int64), "parentDiaSourceId": np.zeros(n, dtype=np.int64),
        "midpointMjdTai": np.full(n, info.mjd_mid), "bboxSize": bbox_size,
        "time_processed": pa.array([datetime.datetime.now(datetime.UTC).replace(tzinfo=None)] * n,
                                   pa.timestamp("us")),
        "coord_ra": ra, "coord_dec": dec, "ra": ra, "dec": dec, "raErr": ra_err, "decErr": dec_err,
        "ra_dec_Cov": ra_dec_cov, "x": px, "y": py, "xErr": x_err, "yErr": y_err, "centroid_flag": centroid_flag,
        "apFlux": ap[:, 0], "apFluxErr": ap_err[:, 0], "apFlux_flag": ap_flag[:, 0], "snr": peak,
        "psfFlux": flux.flux, "psfFluxErr": flux.flux_err, "psfChi2": flux.chi2,
        "psfNdata": good.reshape(n, -1).sum(axis=1).astype(np.int32), "psfFlux_flag": flux.flux_flag,
        "scienceFlux": sci["psfFlux"].to_numpy(zero_copy_only=False),
        "scienceFluxErr": sci["psfFluxErr"].to_numpy(zero_copy_only=False),
        "forced_PsfFlux_flag": sci["psfFlux_flag"].to_numpy(zero_copy_only=False),
        "templateFlux": tmpl["psfFlux"].to_numpy(zero_copy_only=False),
        "templateFluxErr": template_err,
        "isNegative": is_negative,
        "ixx": mom.ixx * scale2, "iyy": mom.iyy * scale2, "ixy": mom.ixy * scale2,
        "ixxPSF": pmom.ixx * scale2, "iyyPSF": pmom.iyy * scale2, "ixyPSF": pmom.ixy * scale2,
        "shape_flag": mom.flag, "extendedness": extendedness, "pixelFlags": np.zeros(n, dtype=bool),
        **dipole, **flags,
    }
    return tables.to_arrow("DiaSource", cols)


def _pair_lobes(pos, neg, max_separation: float, shape: tuple[int, int]) -> np.ndarray:
    """(K, 2) indices of (positive, negative) detections forming dipoles: same grown footprint, within
    ``max_separation`` px, matched one-to-one closest first."""
    if len(pos.x) == 0 or len(neg.x) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    joint, _ = ndimage.label((pos.segmap > 0) | (neg.segmap > 0), structure=np.ones((3, 3), dtype=bool))
    ny, nx = shape

    def component(xs, ys):
        return joint[np.clip(np.floor(ys + 0.5).astype(int), 0, ny - 1), np.clip(np.floor(xs + 0.5).astype(int), 0, nx - 1)]

    cp, cn = component(pos.x, pos.y), component(neg.x, neg.y)
    tree = cKDTree(np.column_stack([neg.x, neg.y]))
    candidates = tree.query_ball_point(np.column_stack([pos.x, pos.y]), max_separation)
    links = [(np.hypot(pos.x[i] - neg.x[j], pos.y[i] - neg.y[j]), i, j)
             for i, near in enumerate(candidates) for j in near if cp[i] == cn[j] and cp[i] > 0]
    used_p, used_n, pairs = set(), set(), []
    for _, i, j in sorted(links):
        if i not in used_p and j not in used_n:
            used_p.add(i)
            used_n.add(j)
            pairs.append((i, j))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _dipole_columns(exp: Exposure, image, variance, good, pos, neg, pairs, n: int, fwhm: float,
                    config: DiffimConfig) -> dict[str, np.ndarray]:
    """dipole* columns for all n rows (the first len(pairs) are the pairs) and the pairs' centroids."""
    k = len(pairs)
    nan = np.full(n, np.nan)
    out = {name: nan.copy() for name in ("dipoleMeanFlux", "dipoleMeanFluxErr", "dipoleFluxDiff", "dipoleFluxDiffErr",
                                         "dipoleLength", "dipoleAngle", "dipoleChi2")}
    out["dipoleNdata"] = np.zeros(n, dtype=np.int64)
    out["isDipole"] = np.zeros(n, dtype=bool)
    out["dipoleFitAttempted"] = np.zeros(n, dtype=bool)
    cx, cy, ex, ey, cxy = (np.full(k, np.nan) for _ in range(5))
    x0, y0 = exp.xy0
    half = int(min(exp.psf.stamp_size // 2 - 2, np.ceil(2.0 * fwhm + 0.5 * config.dipole_max_separation * fwhm)))
    for r, (i, j) in enumerate(pairs):
        start = (pos.x[i] + x0, pos.y[i] + y0, neg.x[j] + x0, neg.y[j] + y0)
        fit = fit_dipole(image, variance, good, exp.xy0, exp.psf, start, half)
        out["dipoleFitAttempted"][r] = True
        out["dipoleNdata"][r] = fit.n_data
        cx[r], cy[r] = 0.5 * (fit.x_pos + fit.x_neg), 0.5 * (fit.y_pos + fit.y_neg)
        if not fit.ok:
            continue
        fp, fn = fit.flux_pos, fit.flux_neg
        v = fit.cov_flux
        out["dipoleMeanFlux"][r] = 0.5 * (fp + fn)
        out["dipoleMeanFluxErr"][r] = 0.5 * np.sqrt(v[0, 0] + v[1, 1] + 2 * v[0, 1])
        out["dipoleFluxDiff"][r] = fp - fn
        out["dipoleFluxDiffErr"][r] = np.sqrt(v[0, 0] + v[1, 1] - 2 * v[0, 1])
        dx, dy = fit.x_pos - fit.x_neg, fit.y_pos - fit.y_neg
        out["dipoleLength"][r] = np.hypot(dx, dy)
        out["dipoleAngle"][r] = np.degrees(np.arctan2(dy, dx))
        out["dipoleChi2"][r] = fit.chi2_dof
        out["isDipole"][r] = bool(min(fp / np.sqrt(v[0, 0]), fn / np.sqrt(v[1, 1])) >= config.detection_threshold)
        c = fit.cov_xy  # midpoint = (pos + neg) / 2
        ex[r] = 0.5 * np.sqrt(c[0, 0] + c[2, 2] + 2 * c[0, 2])
        ey[r] = 0.5 * np.sqrt(c[1, 1] + c[3, 3] + 2 * c[1, 3])
        cxy[r] = 0.25 * (c[0, 1] + c[0, 3] + c[2, 1] + c[2, 3])
    out.update(_x=cx, _y=cy, _x_err=ex, _y_err=ey, _xy_cov=cxy)
    return out
