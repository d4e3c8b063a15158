"""Exact circular apertures (ApertureSummer) against sep's exact overlap and closed-form areas."""

from __future__ import annotations

import numpy as np
import sep

from skydp.pipeline.apertures import ApertureSummer

RADII = (3, 6, 9, 12, 17, 25, 35, 50, 70)
# sep's exact mode is not exact below r ~ 0.71 px (a pixel whose centre lies within r - 0.71 of
# the centre counts as wholly inside), so r < 1 is checked against closed forms instead


def test_matches_sep_exact_overlap_without_footprints():
    rng = np.random.default_rng(3)
    ny, nx = 300, 400
    image = rng.normal(size=(ny, nx)).astype(np.float32)
    var = (1 + rng.random((ny, nx))).astype(np.float32)
    x, y = rng.uniform(75, nx - 75, 200), rng.uniform(75, ny - 75, 200)
    flux, err, flag = ApertureSummer(image, var, np.zeros((ny, nx), bool)).fluxes(x, y, RADII)
    for i, r in enumerate(RADII[:-1]):  # r = 70 does not fit in the image without truncation
        f, e, _ = sep.sum_circle(image, x, y, r, var=var, subpix=0)
        np.testing.assert_allclose(flux[:, i], f, rtol=0, atol=1e-6 * r**2)
        np.testing.assert_allclose(err[:, i], e, rtol=1e-9)
        assert not flag[:, i].any()


def test_own_footprint_overlap_is_exact():
    """Own-footprint pixels are weighted by the closed-form circle-pixel overlap."""
    ones = np.ones((200, 200), np.float32)
    labels = np.ones(ones.shape, np.int32)  # one footprint covering the image
    summer = ApertureSummer(ones, ones, labels > 0)
    flux, _, flag = summer.fluxes(np.array([100.3]), np.array([99.8]), RADII[:-1] + (0.7,), labels, np.array([1]))
    np.testing.assert_allclose(flux[0], np.pi * np.array(RADII[:-1] + (0.7,)) ** 2, rtol=1e-12)
    assert not flag.any()
    # centred on the corner pixel, r = 0.7: the disc minus two segments beyond x, y < -0.5
    flux, _, flag = summer.fluxes(np.array([0.0]), np.array([0.0]), (0.7,), labels, np.array([1]))
    segment = 0.49 * np.arccos(0.5 / 0.7) - 0.5 * np.sqrt(0.49 - 0.25)
    assert abs(flux[0, 0] - (np.pi * 0.49 - 2 * segment)) < 1e-12
    assert flag[0, 0]
    # a single lit pixel under a centred r = 0.7 disc: the disc minus four segments
    delta = np.zeros((9, 9), np.float32)
    delta[4, 4] = 1
    flux, _, _ = ApertureSummer(delta, ones[:9, :9], labels[:9, :9] > 0).fluxes(
        np.array([4.0]), np.array([4.0]), (0.7,), labels[:9, :9], np.array([1]))
    assert abs(flux[0, 0] - (np.pi * 0.49 - 4 * segment)) < 1e-12


def test_other_footprints_count_as_zero_and_own_pixels_count():
    rng = np.random.default_rng(5)
    ny, nx = 200, 220
    image = rng.normal(size=(ny, nx)).astype(np.float32) + 10
    var = np.ones((ny, nx), np.float32)
    yy, xx = np.mgrid[:ny, :nx]
    labels = np.zeros((ny, nx), np.int32)
    labels[np.hypot(xx - 100.3, yy - 90.7) < 15] = 1
    labels[np.hypot(xx - 130, yy - 95) < 8] = 2
    summer = ApertureSummer(image, var, labels > 0)
    x, y = np.array([100.3, 131.2, 40.0]), np.array([90.7, 94.1, 40.0])
    own = np.array([1, 2, 0])  # the third is a sky position: every footprint is excluded
    flux, err, _ = summer.fluxes(x, y, RADII[:-2], labels, own)
    for i in range(3):
        keep = (labels == 0) | (labels == own[i]) if own[i] else labels == 0
        for k, r in enumerate(RADII[:-2]):
            f, e, _ = sep.sum_circle(np.where(keep, image, 0), x[i:i + 1], y[i:i + 1], r,
                                     var=np.where(keep, var, 0), subpix=0)
            assert abs(flux[i, k] - f[0]) < 1e-6 * r**2 and abs(err[i, k] - e[0]) < 1e-9
