"""Rings sky map: tract count as LSST's lsst_cells_v1, lookups against the tract WCS, inner regions
partitioning the sky, poles, RA wrap and patches overlapping a detector polygon."""

from __future__ import annotations

import numpy as np
import pytest

from skydp.ids import N_PATCHES, N_TRACTS
from skydp.skymap import DEFAULT_SKYMAP, SkyMap


def _random_sky(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))


def test_tract_count_matches_lsst_cells_v1() -> None:
    assert DEFAULT_SKYMAP.num_tracts == N_TRACTS
    assert DEFAULT_SKYMAP.patches_per_side**2 == N_PATCHES


def test_tract_pixels_agree_with_tract_wcs() -> None:
    ra, dec = _random_sky(20000)
    tract, _ = DEFAULT_SKYMAP.find_tract_patch(ra, dec)
    for t in [0, 1, int(tract[0]), 9000, N_TRACTS - 1]:
        sel = tract == t
        if not sel.any():  # polar caps are small: use positions near the tract centre
            ra0, dec0 = DEFAULT_SKYMAP.tract_center(t)
            r, d = ra0 + np.array([0.0, 40.0, 200.0]), np.full(3, dec0 - np.sign(dec0 or 1) * 0.5)
        else:
            r, d = ra[sel], dec[sel]
        x, y = DEFAULT_SKYMAP.tract_pixels(t, r, d)
        wx, wy = DEFAULT_SKYMAP.tract_wcs(t).all_world2pix(r, d, 0)
        np.testing.assert_allclose(x, wx, atol=1e-6)
        np.testing.assert_allclose(y, wy, atol=1e-6)


def test_inner_regions_partition_the_sky() -> None:
    """Every position is patch-inner in exactly one patch of its own tract and tract-inner only there."""
    ra, dec = _random_sky(200000)
    tract, patch = DEFAULT_SKYMAP.find_tract_patch(ra, dec)
    x, y = DEFAULT_SKYMAP.tract_pixels(tract, ra, dec)
    size = DEFAULT_SKYMAP.tract_size
    # the tract inner region lies well inside the grid of inner patches
    assert np.all((x > -0.5) & (x < size - 0.5) & (y > -0.5) & (y < size - 0.5))
    inner = DEFAULT_SKYMAP.patch_inner
    px, py = np.floor((x + 0.5) / inner).astype(int), np.floor((y + 0.5) / inner).astype(int)
    n_inner = np.zeros(ra.size, int)
    for p in range(N_PATCHES):  # count, per position, the patches of its tract whose inner box holds it
        n_inner += (px + py * DEFAULT_SKYMAP.patches_per_side) == p
    assert np.all(n_inner == 1)
    np.testing.assert_array_equal(patch, px + py * DEFAULT_SKYMAP.patches_per_side)
    for t, p in zip(tract[:50], patch[:50]):
        sel = (tract == t) & (patch == p)
        assert DEFAULT_SKYMAP.is_patch_inner(int(t), int(p), ra[sel], dec[sel]).all()
        assert DEFAULT_SKYMAP.is_tract_inner(int(t), ra[sel], dec[sel]).all()
    # a neighbouring tract may hold the position in its pixel grid, but not in its inner region
    assert not DEFAULT_SKYMAP.is_tract_inner(int(tract[0]) + 1, ra[:1], dec[:1]).any()


def test_poles_and_ra_wrap() -> None:
    t, _ = DEFAULT_SKYMAP.find_tract_patch(np.array([0.0, 123.0, 300.0, 10.0]), np.array([-90.0, -89.9, 90.0, 89.5]))
    np.testing.assert_array_equal(t, [0, 0, N_TRACTS - 1, N_TRACTS - 1])
    t1, p1 = DEFAULT_SKYMAP.find_tract_patch(np.array([-0.001, 359.999, 720.0]), np.array([1.0, 1.0, 1.0]))
    t2, p2 = DEFAULT_SKYMAP.find_tract_patch(np.array([359.999, 359.999, 0.0]), np.array([1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(p1, p2)
    # positions either side of RA 0 on the equator are in one tract (centred at RA 0) and adjacent pixels
    x, y = DEFAULT_SKYMAP.tract_pixels(int(t1[0]), np.array([359.9999, 0.0001]), np.array([1.0, 1.0]))
    assert abs(x[0] - x[1] - 2 * 0.0001 * 3600 / 0.2 * np.cos(np.radians(1.0))) < 0.05


def test_patch_info_geometry() -> None:
    ra, dec = np.array([53.1]), np.array([-28.1])
    tract, patch = DEFAULT_SKYMAP.find_tract_patch(ra, dec)
    info = DEFAULT_SKYMAP.patch_info(int(tract[0]), int(patch[0]))
    assert info.shape == (4200, 4200)
    assert info.inner_bbox[2] - info.inner_bbox[0] == 4000
    assert info.xy0 == (info.inner_bbox[0] - 100, info.inner_bbox[1] - 100)
    ax, ay = info.wcs.all_world2pix(ra, dec, 0)
    tx, ty = DEFAULT_SKYMAP.tract_pixels(info.tract, ra, dec)
    np.testing.assert_allclose([ax[0] + info.xy0[0], ay[0] + info.xy0[1]], [tx[0], ty[0]], atol=1e-6)
    assert info.inner_bbox[0] - 0.5 <= tx[0] < info.inner_bbox[2] - 0.5
    assert info.index == (info.patch % 10, info.patch // 10)


def _square(c_ra: float, c_dec: float, half: float, rot: float) -> tuple[np.ndarray, np.ndarray]:
    """Corners (ll, ul, ur, lr) of a square of half-side ``half`` deg rotated by ``rot`` rad."""
    corners = np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]]) * half
    off = corners @ np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]]).T
    return c_ra + off[:, 0] / np.cos(np.radians(c_dec)), c_dec + off[:, 1]


def test_patches_overlapping_a_detector_footprint() -> None:
    """Brute force: points sampled over a rotated 0.3 deg square fall in outer boxes of listed patches only,
    and every listed patch's outer box receives some of them."""
    c_ra, c_dec, half, rot = 150.7, 2.2, 0.15, np.radians(25.0)
    ra, dec = _square(c_ra, c_dec, half, rot)
    rotm = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
    found = set(DEFAULT_SKYMAP.patches_overlapping(ra, dec))
    u, v = np.meshgrid(np.linspace(-1, 1, 300), np.linspace(-1, 1, 300))
    pts = np.column_stack([u.ravel(), v.ravel()]) * half @ rotm.T
    sra, sdec = c_ra + pts[:, 0] / np.cos(np.radians(c_dec)), c_dec + pts[:, 1]
    seen = set()
    border = DEFAULT_SKYMAP.patch_border
    for t in {t for t, _ in found}:
        x, y = DEFAULT_SKYMAP.tract_pixels(t, sra, sdec)
        for p in range(N_PATCHES):
            x0, y0, x1, y1 = DEFAULT_SKYMAP.patch_info(t, p).outer_bbox
            if np.any((x >= x0 - 0.5) & (x < x1 - 0.5) & (y >= y0 - 0.5) & (y < y1 - 0.5)):
                seen.add((t, p))
    tract, patch = DEFAULT_SKYMAP.find_tract_patch(sra, sdec)
    assert set(zip(tract.tolist(), patch.tolist())) <= found  # every inner home is listed
    assert seen == found
    assert border == 100


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="dec"):
        DEFAULT_SKYMAP.find_tract(np.array([10.0]), np.array([91.0]))
    with pytest.raises(ValueError, match="tract"):
        DEFAULT_SKYMAP.patch_info(N_TRACTS, 0)
    with pytest.raises(ValueError, match="patch"):
        DEFAULT_SKYMAP.patch_info(5, 100)
    with pytest.raises(ValueError, match="do not cover"):
        SkyMap(num_rings=10)
    with pytest.raises(ValueError, match="corners"):
        DEFAULT_SKYMAP.patches_overlapping(np.array([1.0, 2.0]), np.array([0.0, 0.0]))


def test_coverage_of_a_footprint_by_patches() -> None:
    sm = DEFAULT_SKYMAP
    tract = 5063
    wcs = sm.tract_wcs(tract)
    # a 2000 px square inside patch 55's inner box: covered by that patch alone
    x0, y0, x1, y1 = sm.patch_info(tract, 55).inner_bbox
    xs = np.array([x0 + 500, x0 + 500, x0 + 2500, x0 + 2500], float)
    ys = np.array([y0 + 500, y0 + 2500, y0 + 2500, y0 + 500], float)
    ra, dec = wcs.pixel_to_world_values(xs, ys)
    assert sm.coverage(tract, [55], ra, dec) == 1.0
    assert sm.coverage(tract, [0, 99], ra, dec) == 0.0
    # a square centred on the right edge of the tract's patch grid: half of it lies beyond
    edge = sm.tract_size + sm.patch_border - 0.5  # pixel edge of the outermost patches' outer boxes
    xs = np.array([edge - 1000, edge - 1000, edge + 1000, edge + 1000])
    ys = np.array([20000.0, 22000.0, 22000.0, 20000.0])
    ra, dec = wcs.pixel_to_world_values(xs, ys)
    assert sm.coverage(tract, range(N_PATCHES), ra, dec) == pytest.approx(0.5, abs=1e-9)
    with pytest.raises(ValueError, match="4 corners"):
        sm.coverage(tract, [55], ra[:3], dec[:3])


def test_template_tract_choice_covers_detectors_at_tract_edges() -> None:
    """4k x 4k detectors (0.2"/px) at random places and angles until the tract with the most
    overlapping patches leaves part of one uncovered (~3.5% of detectors on this sky map): the
    chosen tract, with every patch available, covers all of it."""
    from skydp.diffim.template import choose_template_tract

    sm = DEFAULT_SKYMAP
    rng = np.random.default_rng(7)
    half = 4096 * 0.2 / 3600 / 2
    for _ in range(1000):
        ra, dec = _square(rng.uniform(0, 360), rng.uniform(-60, 5), half, rng.uniform(0, np.pi))
        available: dict[int, list[int]] = {}
        for t, p in sm.patches_overlapping(ra, dec):
            available.setdefault(t, []).append(p)
        most_patches = max(sorted(available), key=lambda t: len(available[t]))
        if sm.coverage(most_patches, available[most_patches], ra, dec) < 0.99:
            break
    else:
        pytest.fail("no detector at a tract edge found")
    chosen = choose_template_tract((ra, dec), available)
    assert sm.coverage(chosen, available[chosen], ra, dec) == 1.0
    assert chosen != most_patches
