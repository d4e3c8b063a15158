"""The simulated pixels against the simulator's truth: noise, star fluxes, positions, PSF, header."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import ndimage

from skydp.exposure import read_exposure
from skydp.sim import simulate
from skydp.sim.render import MOFFAT_BETA

SIGMA_WING = 0.02  # a pixel is "source-free" where every true profile is below 2 % of the sky noise


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim_tiny")
    result = simulate(out, "tiny", seed=3)
    objects = pq.read_table(result.truth_objects)
    return {
        "result": result,
        "objects": {name: objects[name].to_numpy(zero_copy_only=False) for name in objects.column_names},
        "epochs": pq.read_table(result.truth_epochs).to_pydict(),
        "visits": pq.read_table(result.visits).to_pydict(),
        "cosmics": pq.read_table(result.truth_cosmics).to_pydict(),
    }


def _rows(table: dict, **where) -> dict[str, np.ndarray]:
    keep = np.ones(len(next(iter(table.values()))), bool)
    for key, value in where.items():
        keep &= np.asarray(table[key]) == value
    return {k: np.asarray(v)[keep] for k, v in table.items()}


def _visit_row(tiny, image_index: int) -> dict:
    visits = tiny["visits"]
    return {k: v[image_index] for k, v in visits.items()}


def _moffat_radius(flux_njy: np.ndarray, fwhm_px: float, level: float) -> np.ndarray:
    """Radius (px) beyond which a Moffat source of ``flux_njy`` is fainter than ``level`` nJy/px."""
    beta = MOFFAT_BETA
    alpha = fwhm_px / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    peak = np.maximum(flux_njy, 0.0) * (beta - 1.0) / (np.pi * alpha**2)
    ratio = np.maximum(peak / level, 1.0)
    return alpha * np.sqrt(ratio ** (1.0 / beta) - 1.0)


def _source_free(tiny, exp, visit_row) -> np.ndarray:
    """Pixels where no true object, cosmic ray or defect contributes above SIGMA_WING of the noise."""
    obj = tiny["objects"]
    ny, nx = exp.shape
    fwhm_px = visit_row["seeing"] / 0.2
    level = SIGMA_WING * visit_row["sky_noise"]
    flux = obj[f"flux_{visit_row['band']}"].astype(float)
    x, y = exp.sky_to_pixel(obj["ra"], obj["dec"])
    size = np.nan_to_num(obj["hlr_disk"].astype(float)) / 0.2
    radius = _moffat_radius(flux, fwhm_px, level) + 6.0 * size + 2.0
    moving = obj["type"] == "mover"
    radius[moving] = 0.0  # movers are placed from truth_epochs below
    ep = _rows(tiny["epochs"], visit=visit_row["visit"], detector=visit_row["detector"])
    free = np.ones((ny, nx), bool)
    yy, xx = np.mgrid[:ny, :nx]
    mover_ids = set(obj["id"][moving])
    ex, ey, eflux = ep["x"], ep["y"], ep["flux"]
    mover_r = _moffat_radius(eflux, fwhm_px, level) + 4.0
    extra = [(ex[i], ey[i], mover_r[i]) for i in range(ex.size) if ep["id"][i] in mover_ids]
    for xi, yi, ri in list(zip(x, y, radius)) + extra:
        if ri <= 0 or xi < -ri or yi < -ri or xi > nx + ri or yi > ny + ri:
            continue
        x0, x1 = int(max(xi - ri, 0)), int(min(xi + ri + 1, nx))
        y0, y1 = int(max(yi - ri, 0)), int(min(yi + ri + 1, ny))
        sub = (xx[y0:y1, x0:x1] - xi) ** 2 + (yy[y0:y1, x0:x1] - yi) ** 2 <= ri * ri
        free[y0:y1, x0:x1] &= ~sub
    cr = _rows(tiny["cosmics"], visit=visit_row["visit"], detector=visit_row["detector"])
    hit = np.zeros((ny, nx), bool)
    hit[cr["y"], cr["x"]] = True
    hit = ndimage.binary_dilation(hit, iterations=1)
    bad = exp.mask.array & exp.mask.bitmask("BAD", "SAT", "NO_DATA") != 0
    return free & ~hit & ~ndimage.binary_dilation(bad, iterations=2)


def test_noise_matches_variance_in_source_free_pixels(tiny):
    ratios = []
    for k, path in enumerate(tiny["result"].images):
        exp = read_exposure(path)
        free = _source_free(tiny, exp, _visit_row(tiny, k))
        assert free.sum() > 20000, f"too few source-free pixels in {path.name}: {free.sum()}"
        z = exp.image[free] / np.sqrt(exp.variance[free])
        ratios.append(float(np.std(z)))
        assert abs(np.mean(z)) < 0.02, f"{path.name}: mean of image/sigma {np.mean(z):.3f} on empty sky"
    print("std(image/sqrt(variance)) per image:", np.round(ratios, 4))
    assert np.all(np.abs(np.array(ratios) - 1.0) < 0.05)


def _bright_isolated_stars(tiny, exp, visit_row, radius):
    """Static stars on this image bright enough for 0.2 % aperture photometry, with no defect or
    cosmic ray near and neighbours adding < 2 % of their flux to the aperture of ``radius``:
    (x, y, flux, ra, dec, neighbour light in the aperture) from truth_epochs.

    The neighbour light is each neighbour's truth flux times the fraction of the PSF-HDU model
    centred on it that falls in the aperture (galaxies treated as point sources: they are faint
    and small next to the aperture, so the error is a small part of an already small correction).
    """
    ep = _rows(tiny["epochs"], visit=visit_row["visit"], detector=visit_row["detector"])
    obj = tiny["objects"]
    index = {i: n for n, i in enumerate(obj["id"])}
    kind = obj["type"][np.array([index[i] for i in ep["id"]])]
    ny, nx = exp.shape
    half = exp.psf.stamp_size // 2
    cr = _rows(tiny["cosmics"], visit=visit_row["visit"], detector=visit_row["detector"])
    defects = exp.mask.bitmask("BAD", "SAT", "NO_DATA")
    yy, xx = np.mgrid[:ny, :nx]
    out = []
    for n in np.flatnonzero(kind == "star"):
        x, y, f = ep["x"][n], ep["y"][n], ep["flux"][n]
        if not (radius + 2 < x < nx - radius - 3 and radius + 2 < y < ny - radius - 3):
            continue
        ap = (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
        if np.sqrt(exp.variance[ap].sum()) > 2e-3 * f or (exp.mask.array[ap] & defects).any():
            continue
        if np.any(np.hypot(cr["x"] - x, cr["y"] - y) < radius + 2):
            continue
        light = 0.0
        for m in np.flatnonzero((np.hypot(ep["x"] - x, ep["y"] - y) < radius + half) & (np.arange(ep["x"].size) != n)):
            ix, iy = int(round(ep["x"][m])), int(round(ep["y"][m]))
            model = ep["flux"][m] * exp.psf.image_at(ep["x"][m], ep["y"][m])
            y0, x0 = iy - half, ix - half
            sub = (slice(max(y0, 0), min(iy + half + 1, ny)), slice(max(x0, 0), min(ix + half + 1, nx)))
            cut = model[sub[0].start - y0 : sub[0].stop - y0, sub[1].start - x0 : sub[1].stop - x0]
            light += float((cut * ap[sub]).sum())
        if light < 0.02 * f:
            out.append((x, y, f, ep["ra"][n], ep["dec"][n], light))
    return out


@pytest.fixture(scope="module")
def bright_stars(tiny):
    """Per image: (exposure, visit row, isolated bright stars for a 5 FWHM aperture)."""
    out = []
    for k, path in enumerate(tiny["result"].images):
        exp = read_exposure(path)
        row = _visit_row(tiny, k)
        out.append((exp, row, _bright_isolated_stars(tiny, exp, row, 5.0 * row["seeing"] / 0.2)))
    return out


def test_bright_isolated_star_fluxes_match_truth(bright_stars):
    ratios, errors = [], []
    for exp, row, stars in bright_stars:
        radius = 5.0 * row["seeing"] / 0.2
        yy, xx = np.mgrid[: exp.shape[0], : exp.shape[1]]
        for x, y, f, _, _, light in stars:
            ap = (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
            ratios.append((exp.image[ap].sum() - light) / f)
            errors.append(np.sqrt(exp.variance[ap].sum()) / f)
    ratios = np.array(ratios)
    print(f"{ratios.size} stars: aperture flux / truth median {np.median(ratios):.4f}, "
          f"max |dev| {np.max(np.abs(ratios - 1)):.4f}, median noise {np.median(errors):.4f}")
    assert ratios.size >= 5
    assert np.all(np.abs(ratios - 1.0) < 0.01)


def test_wcs_puts_bright_stars_where_their_light_is(bright_stars):
    offsets = []
    for exp, row, stars in bright_stars:
        radius = 3.0 * row["seeing"] / 0.2
        yy, xx = np.mgrid[: exp.shape[0], : exp.shape[1]]
        for _, _, f, ra, dec, light in stars:
            x_wcs, y_wcs = (float(v[0]) for v in exp.sky_to_pixel(np.array([ra]), np.array([dec])))
            cx, cy = x_wcs, y_wcs
            for _ in range(5):  # re-centre so the aperture cannot pull the centroid to the prediction
                ap = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
                w = exp.image[ap]
                cx, cy = (w * xx[ap]).sum() / w.sum(), (w * yy[ap]).sum() / w.sum()
            offsets.append((cx - x_wcs, cy - y_wcs))
    offsets = np.array(offsets)
    print(f"{len(offsets)} stars: centroid - WCS offsets, max |dx| {np.abs(offsets[:, 0]).max():.4f}, "
          f"max |dy| {np.abs(offsets[:, 1]).max():.4f}, rms {np.sqrt((offsets**2).mean()):.4f} px")
    assert len(offsets) >= 5
    assert np.all(np.hypot(offsets[:, 0], offsets[:, 1]) < 0.05)


def test_truth_epoch_positions_agree_with_the_written_wcs(tiny):
    for k, path in enumerate(tiny["result"].images):
        exp = read_exposure(path)
        row = _visit_row(tiny, k)
        ep = _rows(tiny["epochs"], visit=row["visit"], detector=row["detector"])
        x, y = exp.sky_to_pixel(ep["ra"], ep["dec"])
        assert np.max(np.hypot(x - ep["x"], y - ep["y"])) < 1e-4
        assert np.all((ep["x"] >= -0.5) & (ep["x"] < exp.width - 0.5))


def test_psf_hdu_is_the_psf_the_stars_were_drawn_with(bright_stars):
    """A bright isolated star minus truth flux * PSF-HDU model leaves only noise (chi2/dof ~ 1)
    within 3 FWHM, where the star outshines its neighbours. The brightest stars (peak S/N ~ 300)
    also see the ~1e-3 error of shifting a pixelated PSF stamp to a sub-pixel position, hence a
    looser bound on the maximum; a PSF wrong by 2 % in FWHM gives chi2/dof >> 10 on them."""
    chi2 = []
    for exp, row, stars in bright_stars:
        half = exp.psf.stamp_size // 2
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
        for x, y, f, _, _, light in stars:
            ix, iy = int(round(x)), int(round(y))
            core = (xx + ix - x) ** 2 + (yy + iy - y) ** 2 <= (3.0 * row["seeing"] / 0.2) ** 2
            model = f * exp.psf.image_at(x, y)
            data = exp.image[iy - half : iy + half + 1, ix - half : ix + half + 1]
            var = exp.variance[iy - half : iy + half + 1, ix - half : ix + half + 1]
            chi2.append(float(((data - model)[core] ** 2 / var[core]).mean()))
    print("chi2/dof of star - PSF model:", np.round(chi2, 3))
    assert len(chi2) >= 5
    assert np.median(chi2) < 1.2 and max(chi2) < 2.5


def test_images_follow_the_visit_image_contract(tiny):
    moments_over_seeing = []
    for k, path in enumerate(tiny["result"].images):
        exp = read_exposure(path)
        row = _visit_row(tiny, k)
        info = exp.info
        assert (info.visit, info.detector, info.band) == (row["visit"], row["detector"], row["band"])
        assert info.exptime == 30.0
        assert info.mjd == pytest.approx(row["mjd"], abs=1e-9) and info.airmass == pytest.approx(row["airmass"])
        assert info.day_obs == row["day_obs"] and str(info.visit).startswith(str(info.day_obs))
        assert info.bunit == "nJy" and info.warnings == []
        assert exp.wcs.wcs.ctype[0] == "RA---TAN-SIP" and exp.wcs.sip is not None
        # not north-up: the +y axis points at ROTPA east of north
        ra0, dec0 = exp.pixel_to_sky(np.array([256.0]), np.array([256.0]))
        ra1, dec1 = exp.pixel_to_sky(np.array([256.0]), np.array([356.0]))
        pa = np.degrees(np.arctan2((ra1 - ra0) * np.cos(np.radians(dec0)), dec1 - dec0))[0]
        assert (pa - info.rotpa + 180) % 360 - 180 == pytest.approx(0.0, abs=0.05)
        no_data = exp.mask.get("NO_DATA")
        assert no_data.any() and np.all(np.isnan(exp.image[no_data])) and not np.isnan(exp.image[~no_data]).any()
        assert exp.mask.get("BAD").sum() > 0 and not exp.mask.get("CR").any()
        sat = exp.mask.get("SAT")
        if sat.any():  # saturated pixels sit at the full well
            full = (row["full_well"] - row["sky_electrons"]) * row["njy_per_electron"]
            assert np.allclose(exp.image[sat & ~no_data], full, rtol=1e-5)
        assert exp.psf is not None and exp.psf.stamps.shape[0] == 25 and exp.psf.stamp_size % 2 == 1
        assert np.allclose(exp.psf.stamps.sum(axis=(1, 2)), 1.0, atol=1e-5)
        moments_over_seeing.append(exp.psf.shape(255.5, 255.5).fwhm * exp.pixel_scale() / row["seeing"])
    # one profile family scaled by the seeing: the moments FWHM of a Moffat(3.5) is ~12 % above its
    # true FWHM, the same for every image up to the small pixel-convolution term
    ratio = np.array(moments_over_seeing)
    print("PSF moments FWHM / catalogued seeing:", np.round(ratio, 4))
    assert np.all((ratio > 1.0) & (ratio < 1.25)) and ratio.std() < 0.02
