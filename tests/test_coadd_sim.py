"""Warps and coadds of the simulator's ``tiny`` survey (4 r-band visits) against its truth tables:
star positions and fluxes after warping, coadd noise against its variance, sqrt(N) depth, cosmic
rays and movers CLIPPED, the coadd PSF against star shapes, the inputs table, template selection."""

from __future__ import annotations

import dataclasses
import math

import galsim
import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.stats import sigma_clipped_stats
from scipy import ndimage

from skydp.coadd import build_patch_coadd, make_coadd, select_template_visits, warp_to_patch
from skydp.exposure import read_exposure
from skydp.sim import simulate
from skydp.skymap import DEFAULT_SKYMAP, PatchInfo

HALF = 330  # the sub-patch is 660 x 660 px around the field: the 512 px detector rotated fits


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("coadd_sim")
    simulate(out, preset="tiny", seed=1)
    visits = pq.read_table(out / "visits.parquet").to_pandas()
    r = visits[visits.band == "r"].sort_values("visit")
    exposures = [read_exposure(out / p) for p in r.image]
    ra, dec = exposures[0].pixel_to_sky(np.array([255.5]), np.array([255.5]))
    tract, patch = DEFAULT_SKYMAP.find_tract_patch(ra, dec)
    info = DEFAULT_SKYMAP.patch_info(int(tract[0]), int(patch[0]))
    x, y = DEFAULT_SKYMAP.tract_pixels(info.tract, ra, dec)
    x0, y0 = int(x[0]) - HALF, int(y[0]) - HALF
    wcs = info.wcs.deepcopy()
    wcs.wcs.crpix = wcs.wcs.crpix - np.array([x0 - info.xy0[0], y0 - info.xy0[1]], dtype=float)
    sub = dataclasses.replace(info, wcs=wcs, xy0=(x0, y0), shape=(2 * HALF, 2 * HALF))
    return {"dir": out, "visits": r, "exposures": exposures, "patch": sub,
            "coadd": build_patch_coadd(exposures, sub),
            "objects": pq.read_table(out / "truth_objects.parquet").to_pandas(),
            "epochs": pq.read_table(out / "truth_epochs.parquet").to_pandas(),
            "cosmics": pq.read_table(out / "truth_cosmics.parquet").to_pandas()}


def _array_xy(exposure, ra, dec) -> tuple[np.ndarray, np.ndarray]:
    x, y = exposure.sky_to_pixel(np.asarray(ra, float), np.asarray(dec, float))
    return x - exposure.xy0[0], y - exposure.xy0[1]


def _isolated_bright_stars(sim: dict, exposure, lo: float = 1e5, hi: float = 2e6, edge: int = 25):
    """Truth stars brighter than ``lo`` nJy with no object above 1 % of their flux within 15 px, on good pixels."""
    objs = sim["objects"]
    flux = objs.flux_r.to_numpy()
    x, y = _array_xy(exposure, objs.ra, objs.dec)
    ny, nx = exposure.shape
    inside = (x > edge) & (x < nx - edge) & (y > edge) & (y < ny - edge)
    chosen = []
    for i in np.flatnonzero(inside & (objs.type.to_numpy() == "star") & (flux > lo) & (flux < hi)):
        near = np.hypot(x - x[i], y - y[i]) < 15
        near[i] = False
        if np.any(flux[near] > 0.01 * flux[i]):
            continue
        r, c = int(round(y[i])), int(round(x[i]))
        stamp = exposure.image[r - 15:r + 16, c - 15:c + 16]
        if np.isfinite(stamp).all() and not exposure.mask.array[r - 15:r + 16, c - 15:c + 16].any():
            chosen.append(i)
    return objs.iloc[chosen], x[chosen], y[chosen]


def _moments(image: np.ndarray, x: float, y: float) -> galsim.hsm.ShapeData:
    r, c = int(round(y)), int(round(x))
    return galsim.hsm.FindAdaptiveMom(galsim.Image(np.asarray(image[r - 15:r + 16, c - 15:c + 16], np.float64),
                                                   xmin=c - 15, ymin=r - 15))


def _source_free(exposure, sigma: float = 2.0) -> np.ndarray:
    """Pixels with data farther than 4 px from anything above 2 sigma in the PSF-smoothed image."""
    image = np.nan_to_num(exposure.image)
    smooth_var = ndimage.gaussian_filter(np.nan_to_num(exposure.variance), sigma) / (4 * np.pi * sigma**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = ndimage.gaussian_filter(image, sigma) / np.sqrt(smooth_var)
    return ~ndimage.binary_dilation(snr > 2, iterations=4) & np.isfinite(exposure.image) & (exposure.mask.array == 0)


def test_warped_stars_land_on_truth_and_keep_their_flux(sim: dict) -> None:
    exposure = sim["exposures"][0]
    warp = warp_to_patch(exposure, sim["patch"])
    stars, x, y = _isolated_bright_stars(sim, warp)
    assert len(stars) >= 8
    offsets, ratios = [], []
    for (_, star), xw, yw in zip(stars.iterrows(), x, y):
        mom = _moments(warp.image, xw, yw)
        offsets.append((mom.moments_centroid.x - xw, mom.moments_centroid.y - yw))
        xi, yi = _array_xy(exposure, [star.ra], [star.dec])
        yy, xx = np.mgrid[:warp.height, :warp.width]
        yi_, xi_ = np.mgrid[:exposure.height, :exposure.width]
        ratios.append(np.nansum(warp.image[np.hypot(xx - xw, yy - yw) < 12])
                      / np.sum(exposure.image[np.hypot(xi_ - xi[0], yi_ - yi[0]) < 12]))
    offsets = np.array(offsets)
    assert np.all(np.abs(np.median(offsets, axis=0)) < 0.02)
    assert abs(np.median(ratios) - 1) < 1e-3


def test_coadd_noise_matches_variance(sim: dict) -> None:
    coadd = sim["coadd"]
    good = _source_free(coadd.exposure) & (coadd.input_count == 4)
    assert good.sum() > 10000
    _, _, std = sigma_clipped_stats((coadd.exposure.image / np.sqrt(coadd.exposure.variance))[good])
    assert 0.95 <= std <= 1.1


def test_depth_improves_as_sqrt_n(sim: dict) -> None:
    """Noise of the 4-visit coadd against a 1-visit coadd, relative to the inverse-variance expectation
    (sqrt(4) = 2 for equal visits)."""
    full = sim["coadd"]
    single = build_patch_coadd(sim["exposures"][:1], sim["patch"], clip=None)
    good = _source_free(full.exposure) & _source_free(single.exposure) & (full.input_count == 4)
    noise = [sigma_clipped_stats(c.exposure.image[good])[2] for c in (single, full)]
    w = full.inputs["weight"].to_numpy()
    expected = math.sqrt(w.sum() / w[0])
    assert abs(noise[0] / noise[1] / expected - 1) < 0.1
    assert 1.6 < expected < 2.4  # four visits of similar depth


def test_cosmic_rays_and_movers_are_clipped(sim: dict) -> None:
    coadd = sim["coadd"].exposure
    clipped = coadd.mask.get("CLIPPED")
    visits = {int(v): e for v, e in zip(sim["visits"].visit, sim["exposures"])}
    cr = sim["cosmics"][sim["cosmics"].visit.isin(list(visits))]
    sky = math.sqrt(float(np.nanmedian(sim["exposures"][0].variance)))
    cr = cr[cr.flux > 10 * sky]
    hits, artifacts = [], np.zeros(coadd.shape, bool)
    for visit, rows in cr.groupby("visit"):
        ra, dec = visits[int(visit)].pixel_to_sky(rows.x.to_numpy(float), rows.y.to_numpy(float))
        x, y = (np.round(a).astype(int) for a in _array_xy(coadd, ra, dec))
        ok = np.isfinite(coadd.image[np.clip(y, 0, coadd.height - 1), np.clip(x, 0, coadd.width - 1)])
        ok &= (x >= 0) & (x < coadd.width) & (y >= 0) & (y < coadd.height)
        hits.extend(clipped[y[ok], x[ok]])
        artifacts[y[ok], x[ok]] = True
    assert len(hits) >= 30
    assert np.mean(hits) >= 0.7
    movers = sim["epochs"][(sim["epochs"].id.isin(sim["objects"].id[sim["objects"].type == "mover"]))
                           & sim["epochs"].visit.isin(list(visits)) & sim["epochs"].drawn]
    x, y = (np.round(a).astype(int) for a in _array_xy(coadd, movers.ra, movers.dec))
    on = (x >= 3) & (x < coadd.width - 3) & (y >= 3) & (y < coadd.height - 3) & (movers.flux.to_numpy() > 20 * sky)
    assert on.sum() >= 2
    assert clipped[y[on], x[on]].all()
    # few clipped pixels elsewhere: not at cosmic rays, movers, transients or variables
    moving = np.zeros(coadd.shape, bool)
    moving[y[on], x[on]] = True
    varying = sim["objects"][sim["objects"].type.isin(["transient", "variable"])]
    vx, vy = (np.round(a).astype(int) for a in _array_xy(coadd, varying.ra, varying.dec))
    inside = (vx >= 0) & (vx < coadd.width) & (vy >= 0) & (vy < coadd.height)
    moving[vy[inside], vx[inside]] = True
    expected = ndimage.binary_dilation(artifacts | moving, iterations=8)
    stray = clipped & ~expected
    assert stray.sum() < 0.01 * np.isfinite(coadd.image).sum()


def test_coadd_psf_matches_star_shapes(sim: dict) -> None:
    coadd = sim["coadd"].exposure
    stars, x, y = _isolated_bright_stars(sim, coadd)
    assert len(stars) >= 8
    ratio = [_moments(coadd.image, xs, ys).moments_sigma / coadd.psf.shape(xs + coadd.xy0[0], ys + coadd.xy0[1]).sigma
             for xs, ys in zip(x, y)]
    assert abs(np.median(ratio) - 1) < 0.03


def test_inputs_table_and_metadata(sim: dict) -> None:
    coadd = sim["coadd"]
    table = coadd.inputs.to_pandas()
    visits = sim["visits"]
    assert sorted(table.visit) == sorted(visits.visit)
    merged = table.merge(visits[["visit", "seeing", "mjd"]], on="visit", suffixes=("", "_truth"))
    np.testing.assert_allclose(merged.mjd, merged.mjd_truth, atol=1e-6)
    # seeing is the moments FWHM (2.3548 sigma) of the warped PSF: the input PSF's, and ranked as the truth
    by_visit = {e.info.visit: e for e in sim["exposures"]}
    input_fwhm = [by_visit[v].psf.shape(255.5, 255.5).fwhm * by_visit[v].pixel_scale() for v in merged.visit]
    np.testing.assert_allclose(merged.seeing, input_fwhm, rtol=0.03)
    assert np.array_equal(np.argsort(merged.seeing.to_numpy()), np.argsort(merged.seeing_truth.to_numpy()))
    median_var = [np.nanmedian(e.variance) for e in sim["exposures"]]
    np.testing.assert_allclose(table.weight / table.weight.iloc[0], median_var[0] / np.array(median_var), rtol=0.05)
    assert (table.n_clipped > 0).all() and (table.n_pixels > 100000).all()
    info = coadd.exposure.info
    assert info.band == "r" and info.exptime == pytest.approx(visits.exptime.sum())
    assert info.mjd == pytest.approx(visits.mjd.mean())
    assert coadd.input_count.max() == 4 and coadd.input_count.dtype == np.int32
    assert np.array_equal(coadd.input_count == 0, coadd.exposure.mask.get("NO_DATA"))


def test_template_selection(sim: dict) -> None:
    seeing = dict(zip(sim["visits"].visit.astype(int), sim["visits"].seeing))
    chosen = select_template_visits(seeing)
    assert len(chosen) == 3  # ceil(4 / 3) = 2 < the minimum of 3
    assert set(chosen) == set(sorted(seeing, key=seeing.get)[:3])
    many = {v: s for v, s in zip(range(12), np.linspace(1.2, 0.6, 12))}
    assert select_template_visits(many) == [11, 10, 9, 8]
    assert select_template_visits({1: 0.9, 2: 0.7}) == [2, 1]
    with pytest.raises(ValueError, match="fraction"):
        select_template_visits(seeing, fraction=0)


def test_two_inputs_and_bad_input(sim: dict) -> None:
    warps = [warp_to_patch(e, sim["patch"]) for e in sim["exposures"][:2]]
    coadd = make_coadd(warps)
    assert coadd.input_count.max() == 2 and coadd.exposure.mask.get("CLIPPED").any()
    with pytest.raises(ValueError, match="shape"):
        make_coadd([warps[0], warp_to_patch(sim["exposures"][2], dataclasses.replace(sim["patch"], shape=(600, 600)))])
    no_var = dataclasses.replace(warps[1], variance=None)
    with pytest.raises(ValueError, match="variance"):
        make_coadd([warps[0], no_var])
    far = DEFAULT_SKYMAP.patch_info(100, 0)
    with pytest.raises(ValueError, match="no input overlaps"):
        build_patch_coadd(sim["exposures"][:1], far)
    assert isinstance(far, PatchInfo)
