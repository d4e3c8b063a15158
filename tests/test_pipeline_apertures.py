"""Exact circular apertures (ApertureSummer): fluxes against sep's exact overlap and closed-form
areas, errors against the variance of the estimator (sum of overlap^2 x variance, with photutils'
exact overlap masks) and against the scatter of aperture sums on pure noise."""

from __future__ import annotations

import numpy as np
import pytest
import sep
from photutils.aperture import CircularAperture
from scipy import integrate

from skydp.pipeline.apertures import ApertureSummer

RADII = (3, 6, 9, 12, 17, 25, 35, 50, 70)


def _estimator_errors(var: np.ndarray, x: np.ndarray, y: np.ndarray, radii, labels: np.ndarray | None = None,
                      own: np.ndarray | None = None) -> np.ndarray:
    """sqrt(sum f^2 v) over the pixels each aperture may use (no label, or its own ``own[n]``), with
    f photutils' exact overlap: the standard deviation of sum f * pixel for independent pixels.
    (sep and photutils report sqrt(sum f v), which overstates it where f < 1.)"""
    err = np.zeros((len(x), len(radii)))
    for k, r in enumerate(radii):
        for n, m in enumerate(CircularAperture(np.column_stack([x, y]), r).to_mask(method="exact")):
            v = m.cutout(var, fill_value=0.0)
            if v is None:  # wholly off the image
                continue
            if labels is not None:
                lab = m.cutout(labels, fill_value=0)
                v = np.where((lab == 0) | (lab == own[n]), v, 0.0)
            err[n, k] = np.sqrt(np.sum(m.data**2 * v))
    return err


def test_matches_sep_exact_overlap_without_footprints():
    rng = np.random.default_rng(3)
    ny, nx = 300, 400
    image = rng.normal(size=(ny, nx)).astype(np.float32)
    var = (1 + rng.random((ny, nx))).astype(np.float32)
    x, y = rng.uniform(75, nx - 75, 200), rng.uniform(75, ny - 75, 200)
    flux, err, flag = ApertureSummer(image, var, np.zeros((ny, nx), bool)).fluxes(x, y, RADII)
    for i, r in enumerate(RADII[:-1]):  # r = 70 does not fit in the image without truncation
        f, _, _ = sep.sum_circle(image, x, y, r, var=var, subpix=0)
        np.testing.assert_allclose(flux[:, i], f, rtol=0, atol=1e-6 * r**2)
        assert not flag[:, i].any()
    np.testing.assert_allclose(err[:, :-1], _estimator_errors(var, x, y, RADII[:-1]), rtol=1e-6)


def test_errors_match_the_scatter_of_aperture_sums_on_noise():
    """On pure Gaussian noise of known variance, flux / error over many apertures at random
    sub-pixel positions has unit standard deviation: small apertures, where partial pixels weigh
    most, are where an overlap-weighted (not squared) variance would read ~0.94 for r = 3."""
    rng = np.random.default_rng(8)
    ny, nx = 1000, 1000
    var = (0.5 + rng.random((ny, nx))).astype(np.float32)
    image = (rng.normal(size=(ny, nx)) * np.sqrt(var)).astype(np.float32)
    # apertures 10 px apart on a jittered grid: independent sums for r = 3
    gx, gy = np.meshgrid(np.arange(10, nx - 10, 10.0), np.arange(10, ny - 10, 10.0))
    x, y = gx.ravel() + rng.uniform(-0.5, 0.5, gx.size), gy.ravel() + rng.uniform(-0.5, 0.5, gx.size)
    flux, err, _ = ApertureSummer(image, var, np.zeros((ny, nx), bool)).fluxes(x, y, (3.0, 1.5))
    pulls = flux / err
    print(f"aperture pulls on noise: n={len(x)}, std r=3 {pulls[:, 0].std():.3f}, r=1.5 {pulls[:, 1].std():.3f}")
    assert np.all(np.abs(pulls.std(axis=0) - 1) < 0.03)  # standard error ~0.008


def _disc_rectangle_area(cx, cy, r, x0, x1, y0, y1):
    """Area of the disc inside the rectangle by 1-D quadrature of the clipped chord (independent of sep)."""
    def chord(x):
        h = np.sqrt(max(r * r - (x - cx) ** 2, 0.0))
        return max(0.0, min(y1, cy + h) - max(y0, cy - h))
    lo, hi = max(x0, cx - r), min(x1, cx + r)
    return integrate.quad(chord, lo, hi, epsabs=1e-13, epsrel=1e-13, limit=200)[0] if hi > lo else 0.0


def test_own_footprint_overlap_is_exact():
    """Own-footprint pixels are weighted by the exact circle-pixel overlap."""
    ones = np.ones((200, 200), np.float32)
    labels = np.ones(ones.shape, np.int32)  # one footprint covering the image
    summer = ApertureSummer(ones, ones, labels > 0)
    radii = RADII[:-1] + (1.0,)
    flux, _, flag = summer.fluxes(np.array([100.3]), np.array([99.8]), radii, labels, np.array([1]))
    np.testing.assert_allclose(flux[0], np.pi * np.array(radii) ** 2, rtol=1e-12)
    assert not flag.any()
    # centred on the corner pixel, r = 3: only the part of the disc on the image counts
    flux, _, flag = summer.fluxes(np.array([0.0]), np.array([0.0]), (3.0,), labels, np.array([1]))
    assert abs(flux[0, 0] - _disc_rectangle_area(0, 0, 3, -0.5, 200, -0.5, 200)) < 1e-9
    assert flag[0, 0]
    # a single lit pixel under an off-centre r = 1 disc
    delta = np.zeros((9, 9), np.float32)
    delta[4, 4] = 1
    flux, _, _ = ApertureSummer(delta, ones[:9, :9], labels[:9, :9] > 0).fluxes(
        np.array([4.6]), np.array([3.7]), (1.0,), labels[:9, :9], np.array([1]))
    assert abs(flux[0, 0] - _disc_rectangle_area(4.6, 3.7, 1, 3.5, 4.5, 3.5, 4.5)) < 1e-9


def test_sub_pixel_radius_is_refused():
    summer = ApertureSummer(np.ones((9, 9), np.float32), np.ones((9, 9), np.float32), np.zeros((9, 9), bool))
    with pytest.raises(ValueError, match="radii"):
        summer.fluxes(np.array([4.0]), np.array([4.0]), (0.7,))


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
            f, _, _ = sep.sum_circle(np.where(keep, image, 0), x[i:i + 1], y[i:i + 1], r, subpix=0)
            assert abs(flux[i, k] - f[0]) < 1e-6 * r**2
    np.testing.assert_allclose(err, _estimator_errors(var, x, y, RADII[:-2], labels, own), rtol=1e-6)


def _disc_scene(seed: int, ny: int, nx: int, n: int, low, high, radii: tuple[float, float]):
    """A noise image with variance and a label map of n discs (centres uniform in [low, high), radii
    uniform in ``radii``; a later disc does not take pixels of an earlier one); the generator is
    returned for further draws."""
    rng = np.random.default_rng(seed)
    image = (rng.normal(size=(ny, nx)) * 30 + 5).astype(np.float32)
    var = (900 + 100 * rng.random((ny, nx))).astype(np.float32)
    yy, xx = np.mgrid[:ny, :nx]
    labels = np.zeros((ny, nx), np.int32)
    centres = rng.uniform(low, high, size=(n, 2))
    for lab, (cx, cy) in enumerate(centres, start=1):
        labels[(np.hypot(xx - cx, yy - cy) < rng.uniform(*radii)) & (labels == 0)] = lab
    return rng, image, var, labels, centres


def test_matches_sep_with_footprints_everywhere():
    """Many footprints, own labels (and 0 = none), positions across the edges and all nine radii:
    the one-pass kernel against sep.sum_circle (segmap + seg_id) to 1e-6 relative."""
    ny, nx = 420, 380
    rng, image, var, labels, centres = _disc_scene(11, ny, nx, 150, -10, [nx + 10, ny + 10], (2, 12))
    x, y = centres[:, 0] + rng.normal(0, 1, 150), centres[:, 1] + rng.normal(0, 1, 150)
    own = np.where(rng.random(150) < 0.2, 0, np.arange(1, 151))
    flux, err, flag = ApertureSummer(image, var, labels > 0).fluxes(x, y, RADII, labels, own)
    f, _, _ = sep.sum_circle(image, x[:, None], y[:, None], np.array(RADII, float)[None, :],
                             segmap=labels, seg_id=own[:, None].astype(np.int32), subpix=0)
    np.testing.assert_allclose(flux, f, rtol=1e-6, atol=1e-9 * np.abs(f).max())
    np.testing.assert_allclose(err, _estimator_errors(var, x, y, RADII, labels, own), rtol=1e-6)
    off = (x[:, None] < np.array(RADII) - 0.5) | (x[:, None] > nx - 0.5 - np.array(RADII))
    assert np.all(flag[off])


def test_blend_parents_own_all_their_childrens_pixels():
    """A source with owns_parent sums the pixels of every label of its parent footprint, in the same
    pass as children and sky positions: against sep.sum_circle on the parent label map."""
    from scipy import ndimage

    ny, nx = 300, 320
    # overlapping discs: children of shared parents
    rng, image, var, labels, centres = _disc_scene(12, ny, nx, 60, 20, [nx - 20, ny - 20], (4, 14))
    parent_map, n_parents = ndimage.label(labels > 0, structure=np.ones((3, 3), bool))
    present = np.unique(labels[labels > 0])
    parent = np.zeros(60, np.int64)
    parent[present - 1] = ndimage.maximum(parent_map, labels, present)
    assert np.bincount(parent[present - 1]).max() > 2  # real blends
    kids = np.flatnonzero(parent) + 1
    parents = np.unique(parent[kids - 1])
    x = np.concatenate([centres[kids - 1, 0], rng.uniform(30, nx - 30, parents.size), [15.0]])
    y = np.concatenate([centres[kids - 1, 1], rng.uniform(30, ny - 30, parents.size), [280.0]])
    own = np.concatenate([kids, parents, [0]])
    owns_parent = np.r_[np.zeros(kids.size, bool), np.ones(parents.size, bool), False]
    flux, err, _ = ApertureSummer(image, var, labels > 0).fluxes(x, y, RADII[:6], labels, own, parent, owns_parent)
    maps = np.where(owns_parent, 1, 0)
    for m, seg in enumerate((labels, parent_map.astype(np.int32))):
        rows = np.flatnonzero(maps == m)
        f, _, _ = sep.sum_circle(image, x[rows, None], y[rows, None], np.array(RADII[:6], float)[None, :],
                                 segmap=seg, seg_id=own[rows, None].astype(np.int32), subpix=0)
        np.testing.assert_allclose(flux[rows], f, rtol=1e-6, atol=1e-9 * np.abs(f).max())
        np.testing.assert_allclose(err[rows], _estimator_errors(var, x[rows], y[rows], RADII[:6], seg, own[rows]),
                                   rtol=1e-6)
    with pytest.raises(ValueError, match="parent"):
        ApertureSummer(image, var, labels > 0).fluxes(x, y, RADII[:1], labels, own, None, owns_parent)
