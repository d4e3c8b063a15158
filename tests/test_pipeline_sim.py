"""Single-visit quality bars of issue 4 on simulator output (``tiny`` preset) against its truth tables.

Each truth epoch (truth_epochs.parquet: true flux and pixel position per visit) is matched to the
nearest measured source within 1.5 px. "Isolated" means the light of all other drawn objects at the
object's position, weighted by a generous Moffat-like profile (1 + (d / 4 px)^2)^-2.5, is below 1%
of its own flux; objects within 3 px of a BAD/SAT/NO_DATA pixel or 10 px of the border are left
out. The true PSF S/N is flux * sqrt(sum P^2) / sky sigma with P the true PSF (the PSF HDU).
The simulator's fields are dense (many blends, unresolved faint galaxies), unlike the GalSim scenes
of test_pipeline_truth, which control the truth exactly and run in the default suite.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree
from test_pipeline_truth import flux_bias_and_pull, robust_std

from skydp.exposure import Exposure, read_exposure
from skydp.pipeline import SingleVisitResult, process_visit_image
from skydp.pipeline.apertures import ApertureSummer
from skydp.pipeline.config import CALIB_APERTURE_RADIUS
from skydp.sim import simulate
from skydp.sim.presets import get_preset

pytestmark = pytest.mark.slow

SEED = 1
MATCH_RADIUS = 1.5  # px
CONTAMINATION = 0.01
DETECTABLE_SNR = 5.0  # true PSF S/N of an object the detection would find
ISOLATION_SIGMA = 0.5  # detectable neighbours' light allowed in the calibFlux aperture, in calibFluxErr
MEASURED = ("psfFlux", "psfFluxErr", "calibFlux", "calibFluxErr", "x", "y", "xErr", "yErr", "extendedness")
FLAGS = ("pixelFlags_edge", "pixelFlags_saturated", "pixelFlags_bad", "pixelFlags_nodata", "pixelFlags_cr",
         "pixelFlags_interpolated", "pixelFlags_crCenter")


@dataclass
class Visit:
    exposure: Exposure
    result: SingleVisitResult


def _sky_sigma(exposure: Exposure) -> float:
    """Median pixel noise over the usable pixels (NO_DATA pixels have no finite variance)."""
    var = exposure.variance
    return float(np.sqrt(np.median(var[np.isfinite(var) & (var > 0)])))


def _true_snr(flux: np.ndarray, psf: np.ndarray, exposure: Exposure) -> np.ndarray:
    """True PSF S/N of objects of ``flux`` with true PSF stamps ``psf`` (N, S, S) on ``exposure``."""
    return flux * np.sqrt(np.sum(psf**2, axis=(1, 2))) / _sky_sigma(exposure)


def _process(outdir: Path) -> dict[int, Visit]:
    visits = {}
    for row in pl.read_parquet(outdir / "visits.parquet").iter_rows(named=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exposure = read_exposure(outdir / row["image"])
        visits[row["visit"]] = Visit(exposure, process_visit_image(exposure))
    return visits


def _truth(outdir: Path, visits: dict[int, Visit], true_psf: dict[int, Exposure]) -> dict[str, np.ndarray]:
    """Drawn truth epochs with isolation, usable position, true S/N and the matched measurement."""
    objects = pl.read_parquet(outdir / "truth_objects.parquet").select("id", "type", "size")
    epochs = pl.read_parquet(outdir / "truth_epochs.parquet").filter(pl.col("drawn")).join(objects, on="id")
    parts = []
    for visit, v in visits.items():
        e = epochs.filter(pl.col("visit") == visit)
        x, y, flux = e["x"].to_numpy(), e["y"].to_numpy(), e["flux"].to_numpy()
        tree = cKDTree(np.column_stack([x, y]))
        contamination = np.zeros(len(x))
        for i, near in enumerate(tree.query_ball_point(np.column_stack([x, y]), 40.0)):
            near = np.array([j for j in near if j != i], dtype=int)
            d = np.hypot(x[near] - x[i], y[near] - y[i])
            contamination[i] = np.sum(flux[near] * (1 + (d / 4.0) ** 2) ** -2.5) / flux[i]
        exp = v.exposure
        ny, nx = exp.shape
        masked = ndimage.binary_dilation((exp.mask.array & exp.mask.bitmask("BAD", "SAT", "NO_DATA")) != 0,
                                         iterations=3)
        ix, iy = np.clip(np.round(x).astype(int), 0, nx - 1), np.clip(np.round(y).astype(int), 0, ny - 1)
        usable = ~masked[iy, ix] & (x > 10) & (x < nx - 11) & (y > 10) & (y < ny - 11)
        snr = _true_snr(flux, true_psf[visit].psf.images_at(x, y), exp)
        t = v.result.sources
        real = ~t["sky_source"].to_numpy(zero_copy_only=False) & (t["deblend_nChild"].to_numpy() == 0)
        sx, sy = np.where(real, t["x"].to_numpy(), -1e9), t["y"].to_numpy()
        d, m = cKDTree(np.column_stack([sx, sy])).query(np.column_stack([x, y]))
        part = {"visit": np.full(len(x), visit), "type": e["type"].to_numpy(), "size": e["size"].to_numpy(),
                "x_true": x, "y_true": y, "flux_true": flux, "snr": snr, "found": d <= MATCH_RADIUS,
                "isolated": (contamination < CONTAMINATION) & usable}
        for name in MEASURED + FLAGS:
            part[name] = t[name].to_numpy(zero_copy_only=False)[m]
        part["row"] = m
        parts.append(part)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.fixture(scope="module")
def with_psf(tmp_path_factory):
    outdir = simulate(tmp_path_factory.mktemp("sim_psf"), preset="tiny", seed=SEED, progress=False).outdir
    visits = _process(outdir)
    return visits, _truth(outdir, visits, {k: v.exposure for k, v in visits.items()}), outdir


@pytest.fixture(scope="module")
def without_psf(tmp_path_factory, with_psf):
    outdir = simulate(tmp_path_factory.mktemp("sim_nopsf"), preset="tiny", seed=SEED, write_psf=False,
                      progress=False).outdir
    visits = _process(outdir)
    true_psf = {k: v.exposure for k, v in with_psf[0].items()}
    for k, v in visits.items():
        assert v.exposure.psf is None
        assert np.array_equal(v.exposure.image, true_psf[k].image, equal_nan=True)  # the same scene, only the PSF HDU is gone
    return visits, _truth(outdir, visits, true_psf), outdir


def _clean(t: dict[str, np.ndarray]) -> np.ndarray:
    flagged = np.zeros(len(t["x"]), dtype=bool)
    for name in FLAGS:
        flagged |= t[name]
    return t["found"] & ~flagged


def _psf_flux_bias_and_pull(t: dict[str, np.ndarray], label: str) -> tuple[float, float]:
    sel = (t["type"] == "star") & t["isolated"] & _clean(t) & (t["snr"] > 20)
    f, fe, ft = t["psfFlux"][sel], t["psfFluxErr"][sel], t["flux_true"][sel]
    bias, pull = flux_bias_and_pull(f, fe, ft)
    print(f"{label}: isolated stars S/N>20 n={sel.sum()}: psfFlux median bias {bias:+.4f}, pull robust std {pull:.3f}")
    assert sel.sum() >= 100
    return bias, pull


def _enclosed(stamps: np.ndarray, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Exact-overlap sums within ``radius`` of (N, S, S) stamps about (S//2 + dx, S//2 + dy), in one
    ApertureSummer call on a mosaic of the stamps."""
    n, size, _ = stamps.shape
    tile = size + 2
    cols = int(np.ceil(np.sqrt(n)))
    mosaic = np.zeros((tile * (-(-n // cols)), tile * cols))
    row, col = np.divmod(np.arange(n), cols)
    for k in range(n):
        mosaic[row[k] * tile + 1:row[k] * tile + 1 + size, col[k] * tile + 1:col[k] * tile + 1 + size] = stamps[k]
    summer = ApertureSummer(mosaic, np.ones_like(mosaic), np.zeros(mosaic.shape, bool))
    return summer.fluxes(col * tile + 1 + size // 2 + dx, row * tile + 1 + size // 2 + dy, (radius,))[0][:, 0]


def _calib_light_of_others(outdir: Path, visits: dict[int, Visit], t: dict[str, np.ndarray],
                           sel: np.ndarray, min_snr: float = 0.0) -> np.ndarray:
    """For the selected matches: light of all OTHER drawn truth objects (with ``min_snr``, only those
    whose true PSF S/N reaches it) inside the calibFlux aperture, in calibFlux units (divided by the
    star's true enclosed fraction).

    Every drawn truth epoch is rendered as a point source with the true PSF (galaxies too: their
    total flux, not their shape) and summed in the 12-px aperture at the measured position with the
    same exclusion of other footprints as the measurement; the star's own light (true flux times
    the true PSF's enclosed fraction) is subtracted.
    """
    epochs = pl.read_parquet(outdir / "truth_epochs.parquet").filter(pl.col("drawn"))
    light = np.full(len(sel), np.nan)
    for visit, v in visits.items():
        idx = np.flatnonzero(sel & (t["visit"] == visit))
        if not idx.size:
            continue
        e = epochs.filter(pl.col("visit") == visit)
        x, y, flux = e["x"].to_numpy(), e["y"].to_numpy(), e["flux"].to_numpy()
        psf, (ny, nx) = v.exposure.psf, v.exposure.shape
        size = psf.stamp_size
        half = size // 2
        scene = np.zeros((ny + 2 * size, nx + 2 * size))
        stamps = psf.images_at(x, y)
        shown = _true_snr(flux, stamps, v.exposure) >= min_snr
        x, y, flux, stamps = x[shown], y[shown], flux[shown], stamps[shown] * flux[shown, None, None]
        cx, cy = np.floor(x + 0.5).astype(int) + size, np.floor(y + 0.5).astype(int) + size
        for k in range(len(x)):
            scene[cy[k] - half:cy[k] + half + 1, cx[k] - half:cx[k] + half + 1] += stamps[k]
        scene = scene[size:-size, size:-size]
        src = v.result.sources
        rows = t["row"][idx]
        mx, my = src["x"].to_numpy()[rows], src["y"].to_numpy()[rows]
        label_of = {sid: k + 1 for k, sid in enumerate(v.result.footprints.source_id)}
        labels = np.array([label_of[sid] for sid in src["sourceId"].to_numpy()[rows]])
        segmap = v.result.footprints.segmap
        in_aperture = ApertureSummer(scene, np.ones_like(scene), segmap > 0).fluxes(
            mx, my, (CALIB_APERTURE_RADIUS,), segmap, labels)[0][:, 0]
        ee = _enclosed(psf.images_at(mx, my), mx - np.floor(mx + 0.5), my - np.floor(my + 0.5), CALIB_APERTURE_RADIUS)
        light[idx] = (in_aperture - t["flux_true"][idx] * ee) / ee
    return light


def test_completeness(with_psf):
    _, t, _ = with_psf
    star = (t["type"] == "star") & t["isolated"]
    hi = star & (t["snr"] >= 10)
    mid = star & (t["snr"] >= 5) & (t["snr"] < 7)
    c_hi, c_mid = t["found"][hi].mean(), t["found"][mid].mean()
    print(f"completeness, isolated stars: S/N>=10 {c_hi:.3f} (n={hi.sum()}), S/N 5-7 {c_mid:.3f} (n={mid.sum()})")
    assert hi.sum() >= 200 and mid.sum() >= 30
    assert c_hi >= 0.95
    assert c_mid >= 0.50


def test_psf_flux_bias_and_pull(with_psf):
    bias, pull = _psf_flux_bias_and_pull(with_psf[1], "PSF HDU")
    assert abs(bias) <= 0.01
    assert 0.9 <= pull <= 1.2


def test_calib_flux_bias(with_psf):
    _, t, _ = with_psf
    sel = (t["type"] == "star") & t["isolated"] & _clean(t) & (t["snr"] > 20)
    bias = np.median(t["calibFlux"][sel] / t["flux_true"][sel] - 1)
    print(f"calibFlux vs total flux: n={sel.sum()} median bias {bias:+.4f}")
    assert abs(bias) <= 0.01


def _calib_flux_pull(outdir: Path, visits: dict[int, Visit], t: dict[str, np.ndarray],
                     label: str) -> tuple[int, float, float]:
    """n, median bias and pull of calibFlux against the true total flux for stars isolated at the
    aperture's scale: isolated stars with S/N > 20 into whose 12-px aperture the detectable other
    objects (true PSF S/N >= DETECTABLE_SNR) put less than ISOLATION_SIGMA of calibFluxErr.

    Generic isolation (others' light < 1 % of the star's own, PSF-weighted) admits, for bright stars,
    neighbours whose wings put several sigma into the 452-px aperture: those are blends, which LSST
    users cut with blendedness. Faint undetectable objects stay in every aperture: their confusion
    is what calibFluxErr's empty-aperture term must carry.
    """
    sel = (t["type"] == "star") & t["isolated"] & _clean(t) & (t["snr"] > 20)
    neighbours = _calib_light_of_others(outdir, visits, t, sel, min_snr=DETECTABLE_SNR)
    err = t["calibFluxErr"]
    apart = sel & (np.abs(neighbours) < ISOLATION_SIGMA * err)
    _, pull_all = flux_bias_and_pull(t["calibFlux"][sel], err[sel], t["flux_true"][sel])
    bias, pull = flux_bias_and_pull(t["calibFlux"][apart], err[apart], t["flux_true"][apart])
    print(f"{label}: calibFlux of stars isolated at the aperture's scale n={apart.sum()}/{sel.sum()}: median "
          f"bias {bias:+.4f}, pull robust std {pull:.3f} (all {sel.sum()} isolated stars: {pull_all:.3f})")
    return int(apart.sum()), bias, pull


def test_calib_flux_pull(with_psf):
    """Measured (tiny preset, 20x the natural star density, seed 1): n=289 of 371, bias -0.22%,
    pull 1.13 (1.39 over all 371). Without calibFluxErr's empty-aperture term: 1.31 (1.66)."""
    visits, t, outdir = with_psf
    n, bias, pull = _calib_flux_pull(outdir, visits, t, "tiny")
    assert n >= 200
    assert abs(bias) <= 0.01
    assert 0.9 <= pull <= 1.2


def test_calib_flux_excess_is_light_of_other_objects(with_psf):
    """The calibFlux excess over the true flux follows, one for one, the light that the other drawn
    truth objects put into the aperture (a confusion term, real light, not an error of ours), and the
    pull against truth that includes that light is much closer to 1.

    Measured (tiny preset, seed 1, n=371): slope 0.978 (data excess against rendered light, median
    216 nJy against a 511 nJy error, which includes the empty-aperture term); pull against the true
    flux 1.39, against true flux + other objects' light 1.02. The offset (-249 nJy) is the mean
    light of undetected objects, which the background model rightly removes as sky.
    """
    visits, t, outdir = with_psf
    sel = (t["type"] == "star") & t["isolated"] & _clean(t) & (t["snr"] > 20)
    light = _calib_light_of_others(outdir, visits, t, sel)[sel]
    excess = t["calibFlux"][sel] - t["flux_true"][sel]
    err = t["calibFluxErr"][sel]
    slope, offset = np.linalg.lstsq(np.column_stack([light, np.ones_like(light)]) / err[:, None], excess / err,
                                    rcond=None)[0]
    pull_true = robust_std(excess / err)
    pull_with_light = robust_std((excess - light) / err)
    print(f"calibFlux excess vs light of other objects in the aperture: n={sel.sum()} median light "
          f"{np.median(light):.0f} nJy (error {np.median(err):.0f}); slope {slope:.3f} offset {offset:+.0f} nJy; "
          f"pull vs true flux {pull_true:.3f}, vs true flux + others' light {pull_with_light:.3f}")
    assert 0.85 <= slope <= 1.15
    assert 0.9 <= pull_with_light <= 1.2 < pull_true


@pytest.mark.parametrize("galaxy_mag_limit", [22.0, 27.0])
def test_calib_flux_pull_on_2048_detectors(tmp_path, galaxy_mag_limit):
    """The bar on 2048^2 detectors at twice the natural star density, with galaxies drawn to r = 27
    as in every simulation (faint-galaxy confusion in the 12-px aperture, which calibFluxErr holds
    through its empty-aperture term) and only to r = 22 (no confusion: the estimator's error alone).

    Measured (seed 1), stars isolated at the aperture's scale (see _calib_flux_pull): r <= 27,
    n=794 of 861: bias +0.05%, pull 1.05 (1.12 over all 861; without the empty-aperture term 1.12
    and 1.20); r <= 22, n=903 of 909: bias +0.06%, pull 1.01 (1.02 over all; 1.02 and 1.05 without).
    At the natural star density over all isolated stars, seeds 1-3: 1.16, 1.21, 1.06 (seed 2 at the
    aperture's scale: 1.10).
    """
    preset = get_preset("tiny", detector_shape=(2048, 2048), star_density_scale=2.0,
                        galaxy_mag_limit=galaxy_mag_limit)
    outdir = simulate(tmp_path / "sim", preset=preset, seed=SEED, progress=False).outdir
    visits = _process(outdir)
    t = _truth(outdir, visits, {k: v.exposure for k, v in visits.items()})
    n, bias, pull = _calib_flux_pull(outdir, visits, t, f"galaxies to r={galaxy_mag_limit:g}")
    assert n >= 300
    assert abs(bias) <= 0.01
    assert 0.9 <= pull <= 1.2


def test_aperture_correction_is_one_with_true_psf(with_psf):
    """With the true PSF (the PSF HDU) psfFlux and calibFlux both estimate the total flux, so the
    fitted aperture correction must be 1 within its error and flat over the detector: a few bright
    stars with neighbours' light in their apertures once made it a +-2% tilt (1k x 1k detectors).
    Measured: 1.0005-1.0011, 0.4-1.1 of apCorrErr (0.06-0.16%) from 1, constant in every visit."""
    visits, _, _ = with_psf
    for visit, v in visits.items():
        t = v.result.sources
        real = ~t["sky_source"].to_numpy(zero_copy_only=False)
        corr, err = t["psfFlux_apCorr"].to_numpy()[real], t["psfFlux_apCorrErr"].to_numpy()[real]
        print(f"visit {visit}: apCorr {corr.min():.4f}..{corr.max():.4f}, apCorrErr {err[0]:.4f}")
        assert np.ptp(corr) <= 0.002
        assert abs(np.median(corr) - 1) <= min(3 * err[0], 0.003)


def test_centroids(with_psf):
    _, t, _ = with_psf
    sel = (t["type"] == "star") & t["isolated"] & _clean(t) & (t["snr"] > 100)
    dx, dy = t["x"][sel] - t["x_true"][sel], t["y"][sel] - t["y_true"][sel]
    rms = np.sqrt(np.mean(dx**2 + dy**2) / 2)
    px, py = robust_std(dx / t["xErr"][sel]), robust_std(dy / t["yErr"][sel])
    print(f"centroids S/N>100: n={sel.sum()} rms {rms:.4f} px, pull robust std x {px:.3f} y {py:.3f}")
    assert sel.sum() >= 100
    assert rms <= 0.02
    assert 0.8 <= px <= 1.3 and 0.8 <= py <= 1.3


def test_extendedness(with_psf):
    _, t, _ = with_psf
    ok = t["isolated"] & _clean(t) & (t["snr"] > 50)
    stars = ok & (t["type"] == "star")
    galaxies = ok & (t["type"] == "galaxy") & (t["size"] > 0.6)
    f_star, f_gal = np.mean(t["extendedness"][stars] == 0), np.mean(t["extendedness"][galaxies] == 1)
    print(f"extendedness: stars S/N>50 with 0: {f_star:.3f} (n={stars.sum()}); "
          f"galaxies hlr>0.6\" S/N>50 with 1: {f_gal:.3f} (n={galaxies.sum()})")
    assert stars.sum() >= 100 and galaxies.sum() >= 10
    assert f_star >= 0.95
    assert f_gal >= 0.90


def test_sky_sources(with_psf):
    visits, _, _ = with_psf
    ratios = []
    for v in visits.values():
        t = v.result.sources
        sky = t["sky_source"].to_numpy(zero_copy_only=False)
        ratios.append(t["psfFlux"].to_numpy()[sky] / t["psfFluxErr"].to_numpy()[sky])
    ratio = np.concatenate(ratios)
    print(f"sky sources: n={len(ratio)} std(psfFlux/psfFluxErr) {np.std(ratio):.3f}")
    assert len(ratio) >= 30
    assert 0.9 <= np.std(ratio) <= 1.2


def test_cosmic_rays_against_truth(with_psf):
    visits, t, outdir = with_psf
    cosmics = pl.read_parquet(outdir / "truth_cosmics.parquet")
    found = strong = 0
    components = with_truth = 0
    for visit, v in visits.items():
        cr = v.result.exposure.mask.get("CR")
        c = cosmics.filter(pl.col("visit") == visit)
        cx, cy = c["x"].to_numpy().astype(int), c["y"].to_numpy().astype(int)
        sky_sigma = _sky_sigma(v.exposure)
        bright = c["flux"].to_numpy() > 5 * sky_sigma
        strong += bright.sum()
        found += cr[cy[bright], cx[bright]].sum()
        labels, n = ndimage.label(cr, structure=np.ones((3, 3), bool))
        components += n
        with_truth += len(np.unique(labels[cy, cx][labels[cy, cx] > 0]))
    stars = (t["type"] == "star") & t["found"] & (t["snr"] > 100)
    print(f"CR: truth pixels > 5 sigma flagged {found}/{strong}; our CR regions with a true hit "
          f"{with_truth}/{components}; stars S/N>100 with crCenter {t['pixelFlags_crCenter'][stars].sum()}"
          f"/{stars.sum()}")
    assert strong >= 50
    assert found / strong >= 0.90
    assert with_truth / components >= 0.90
    assert t["pixelFlags_crCenter"][stars].mean() < 0.02


def test_psf_estimated_without_psf_hdu(with_psf, without_psf):
    """Without the PSF HDU: estimated PSF FWHM within 3% of the true PSF's, psfFlux unbiased."""
    visits, t, _ = without_psf
    true = with_psf[0]
    errors = []
    for visit, v in visits.items():
        ny, nx = v.exposure.shape
        for x in (60.0, nx / 2, nx - 60.0):
            for y in (60.0, ny / 2, ny - 60.0):
                est = v.result.exposure.psf.shape(x, y).fwhm
                errors.append(est / true[visit].exposure.psf.shape(x, y).fwhm - 1)
    errors = np.array(errors)
    n_star = [v.result.ccd_visit["nPsfStar"] for v in visits.values()]
    print(f"estimated PSF FWHM relative error over 9 positions x {len(visits)} visits: "
          f"max |err| {np.max(np.abs(errors)):.4f}, median {np.median(errors):+.4f}; nPsfStar {n_star}")
    assert np.all(np.abs(errors) <= 0.03)
    bias, _ = _psf_flux_bias_and_pull(t, "estimated PSF")
    assert abs(bias) <= 0.01


def test_psf_flux_pull_with_estimated_psf(without_psf):
    """psfFlux pull with the estimated PSF (~40-45 PSF stars per 512^2 image).

    Measured: pull 1.10 (S/N 20-50 0.91, 50-200 0.90, >200 1.47), bias +0.03%; per-visit flux
    offsets of the model <= 0.18%, within-visit model error 0.22% (rms over the stars of the
    psfFlux ratio of a true star fitted with the model). Before (25-px stamps fitted on the
    first-pass background, stamps normalised by their sums): pull 1.28, offsets up to 0.37% (a
    25-px stamp misses 0.1-0.5% of the light of these Moffat PSFs), within-visit error 0.26%.
    With ~3x the PSF stars (1024^2 detectors of the same field: 114-132) the within-visit error is
    0.17%, not the 0.13% of pure star noise: most of what is left is not the PSF stars' noise.
    """
    _, t, _ = without_psf
    _, pull = _psf_flux_bias_and_pull(t, "estimated PSF")
    assert 0.9 <= pull <= 1.2
