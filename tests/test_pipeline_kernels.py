"""Fast single-visit building blocks against straightforward reference implementations (or truth):
S/N smoothing, disk growth of footprints and masks, the masked mesh background, PSF derivatives,
adaptive moments, stamp cutting, the local background, footprint areas and mask bits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from skydp.pipeline.apertures import local_background
from skydp.pipeline.background import masked_mesh_mean
from skydp.pipeline.detection import disk_dilate, gaussian_kernel_1d, snr_image
from skydp.pipeline.moments import adaptive_moments
from skydp.pipeline.pixel_flags import footprint_area_and_bits
from skydp.pipeline.process import _grown_mask
from skydp.pipeline.psf_photometry import _derivative_matrix
from skydp.pipeline.stamps import StampCutter


def test_snr_image_matches_direct_2d_correlation():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(70, 90)).astype(np.float32) * 5
    variance = rng.uniform(1, 4, image.shape).astype(np.float32)
    variance[10:14, 20:30] = 0  # masked pixels: no signal, no noise
    sigma = 1.8
    k = gaussian_kernel_1d(sigma)
    num = ndimage.correlate(image.astype(np.float64), np.outer(k, k), mode="constant")
    den = np.sqrt(ndimage.correlate(variance.astype(np.float64), np.outer(k * k, k * k), mode="constant"))
    snr = snr_image(image, variance, sigma)
    assert snr.dtype == np.float32 and snr.flags.c_contiguous and snr.shape == image.shape
    np.testing.assert_allclose(snr, num / den, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("big_labels", [False, True])
def test_disk_dilate_matches_grey_dilation_with_a_disk(big_labels):
    rng = np.random.default_rng(2)
    labels = np.zeros((80, 100), np.int32)
    ys, xs = rng.integers(0, 80, 40), rng.integers(0, 100, 40)
    labels[ys, xs] = rng.permutation(40) + 1 + (70000 if big_labels else 0)  # >= 2**16: the int32 path
    # touching blobs of different labels, one at the image corner: boundary pixels between labels
    labels[30:45, 20:35] = 7
    labels[38:50, 33:60] = 3
    labels[0:6, 90:100] = 12
    radius = 4.3
    r = int(radius)
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = dy**2 + dx**2 <= radius**2
    expected = ndimage.grey_dilation(labels, footprint=disk, mode="constant", cval=0)
    expected = np.where(labels > 0, labels, expected)
    grown = disk_dilate(labels, radius)
    assert grown.dtype == labels.dtype
    np.testing.assert_array_equal(grown, expected)


def test_grown_mask_covers_the_disk_growth_and_little_more():
    rng = np.random.default_rng(3)
    mask = np.zeros((101, 131), bool)  # odd sizes: the 2x2 binning pads
    mask[rng.integers(0, 101, 25), rng.integers(0, 131, 25)] = True
    mask[40:48, 60:75] = True
    radius = 7.5
    distance = ndimage.distance_transform_edt(~mask)
    grown = _grown_mask(mask, radius)
    assert grown.shape == mask.shape
    assert np.all(grown[distance <= radius])  # contains the exact disk growth
    assert distance[grown].max() <= radius + 3.0  # and exceeds it by at most ~3 px
    also = rng.random(mask.shape) < 0.01
    np.testing.assert_array_equal(_grown_mask(mask, radius, also), grown | also)


def test_masked_mesh_mean_matches_a_per_cell_reference():
    rng = np.random.default_rng(4)
    ny, nx, mesh = 300, 260, 64  # partial cells on both axes
    yy, xx = np.mgrid[:ny, :nx]
    image = (0.01 * xx + 0.02 * yy + rng.normal(size=(ny, nx))).astype(np.float32)
    image[rng.random((ny, nx)) < 0.01] += 50  # outliers for the clipping
    masked = np.zeros((ny, nx), bool)
    masked[100:200, 0:140] = True  # two cells entirely masked
    bkg = masked_mesh_mean(image, masked, mesh, filter_size=1)
    for i, y0 in enumerate(range(0, ny, mesh)):
        for j, x0 in enumerate(range(0, nx, mesh)):
            cell = image[y0:y0 + mesh, x0:x0 + mesh][~masked[y0:y0 + mesh, x0:x0 + mesh]].astype(np.float64)
            if cell.size < 0.05 * mesh * mesh:
                continue  # empty cells take the median of the others
            use = np.ones(cell.size, bool)
            for _ in range(3):
                mean, std = cell[use].mean(), cell[use].std()
                use = np.abs(cell - mean) <= 3 * std
            assert bkg.values[i, j] == pytest.approx(mean, abs=1e-4)
            assert bkg.rms[i, j] == pytest.approx(std, rel=1e-4)


@pytest.mark.parametrize("size", [9, 10, 25])
def test_derivative_matrix_differentiates_band_limited_rows(size):
    t = np.arange(size)
    d = _derivative_matrix(size)
    for k in range(1, (size - 1) // 2 + 1):  # every frequency below Nyquist
        w = 2 * np.pi * k / size
        np.testing.assert_allclose(d @ np.cos(w * t + 0.3), -w * np.sin(w * t + 0.3), atol=1e-12)
    np.testing.assert_allclose(d @ np.ones(size), 0, atol=1e-12)


def test_adaptive_moments_recover_elliptical_gaussians():
    """Sampled elliptical Gaussians at sub-pixel offsets: the converged weight is their covariance
    and GaussianFlux their flux; a stamp without usable pixels is flagged."""
    rng = np.random.default_rng(4)
    n, s = 200, 31
    dx, dy = rng.uniform(-0.5, 0.5, n), rng.uniform(-0.5, 0.5, n)
    sx, sy, rho = rng.uniform(1.2, 3.0, n), rng.uniform(1.2, 3.0, n), rng.uniform(-0.6, 0.6, n)
    cxx, cyy, cxy = sx**2, sy**2, rho * sx * sy
    det = cxx * cyy - cxy**2
    g = np.arange(s) - s // 2
    u, v = g[None, None, :] - dx[:, None, None], g[None, :, None] - dy[:, None, None]
    q = (cyy[:, None, None] * u * u + cxx[:, None, None] * v * v - 2 * cxy[:, None, None] * u * v) / det[:, None, None]
    stamps = 500.0 * np.exp(-q / 2) / (2 * np.pi * np.sqrt(det))[:, None, None]
    good = np.ones(stamps.shape, bool)
    good[0] = False
    m = adaptive_moments(stamps, np.ones_like(stamps), good, dx, dy, np.full(n, 1.7))
    assert m.flag[0] and np.isnan(m.ixx[0]) and not m.flag[1:].any()
    np.testing.assert_allclose(m.ixx[1:], cxx[1:], rtol=2e-4)
    np.testing.assert_allclose(m.iyy[1:], cyy[1:], rtol=2e-4)
    assert np.all(np.abs(m.ixy[1:] - cxy[1:]) < 2e-4 * np.sqrt(cxx * cyy)[1:])
    np.testing.assert_allclose(m.gaussian_flux[1:], 500.0, rtol=1e-4)


def test_stamp_cutter_matches_a_padded_plane():
    """Stamps and gathers anywhere (inside, across every border, wholly off the image) equal those of
    an explicitly padded copy, with the fill value beyond the edges."""
    rng = np.random.default_rng(6)
    plane = rng.normal(size=(40, 55)).astype(np.float32)
    cutter = StampCutter(12)
    cutter.add("p", plane, fill=-7)
    padded = np.pad(plane, 40, constant_values=-7)
    cx, cy = rng.integers(-15, 70, 300), rng.integers(-15, 55, 300)
    stamps = cutter.cut("p", cx, cy, 11)
    for s, x, y in zip(stamps, cx, cy):
        np.testing.assert_array_equal(s, padded[y + 35:y + 46, x + 35:x + 46])
    dx, dy = rng.integers(-12, 13, 20), rng.integers(-12, 13, 20)
    np.testing.assert_array_equal(cutter.gather("p", cx, cy, dx, dy),
                                  padded[cy[:, None] + dy + 40, cx[:, None] + dx + 40])
    with pytest.raises(ValueError, match="padding"):
        cutter.cut("p", cx, cy, 27)


def test_local_background_is_the_clipped_annulus_mean():
    """Against a direct reference of LSST's 3 x 3-sigma clipping (mean, std with ddof 1) of the
    annulus pixels that are on the image and not bad; bright neighbours in the annulus are clipped."""
    rng = np.random.default_rng(7)
    image = rng.normal(10.0, 2.0, size=(120, 140))
    image[rng.integers(0, 120, 60), rng.integers(0, 140, 60)] += 500  # neighbours' cores
    bad = rng.random(image.shape) < 0.05
    x, y = rng.uniform(-3, 143, 40), rng.uniform(-3, 123, 40)
    inner, outer = 7.3, 15.1
    mean, std = local_background(image.astype(np.float32), bad, x, y, inner, outer)
    yy, xx = np.mgrid[:120, :140]
    for i in range(len(x)):
        cx, cy = np.floor(x[i] + 0.5), np.floor(y[i] + 0.5)
        r = np.hypot(xx - cx, yy - cy)
        v = image.astype(np.float32)[(r >= inner) & (r <= outer) & ~bad].astype(np.float64)
        for _ in range(3):
            m, s = v.mean(), v.std(ddof=1)
            v = v[np.abs(v - m) <= 3 * s]
        np.testing.assert_allclose([mean[i], std[i]], [v.mean(), v.std(ddof=1)], rtol=1e-9)


def test_footprint_area_and_bits_per_label():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 30, size=(50, 60)).astype(np.int32)
    mask = rng.integers(0, 2**6, size=labels.shape).astype(np.int32) * (rng.random(labels.shape) < 0.1)
    area, bits = footprint_area_and_bits(mask, labels, 25, 0b101100)  # labels 26-29 are ignored
    np.testing.assert_array_equal(area, np.r_[0, np.bincount(labels.ravel(), minlength=30)[1:26]])
    expected = [np.bitwise_or.reduce(mask[labels == lab] & 0b101100) for lab in range(1, 26)]
    np.testing.assert_array_equal(bits, np.r_[0, expected])


def test_detect_retries_when_a_footprint_overflows_seps_pixel_stack(monkeypatch):
    from skydp.pipeline import detection

    monkeypatch.setattr(detection, "PIXSTACK", 1000)
    snr = np.random.default_rng(0).normal(size=(300, 300)).astype(np.float32)
    snr[50:150, 50:150] += 20  # 10^4 pixels above threshold: more than the first stack holds
    found = detection.detect(snr, 5.0, 1, 2.0, True, 32, 0.005)
    assert len(found.x) == 1 and abs(found.x[0] - 99.5) < 0.5 and abs(found.y[0] - 99.5) < 0.5
    assert (found.segmap[50:150, 50:150] == 1).all()


@pytest.mark.parametrize("shape, mesh", [((700, 1000), 128), ((300, 200), 128), ((100, 50), 64)])
def test_background_image_is_the_interpolating_spline_through_the_nodes(shape, mesh):
    """Background.image() against scipy's interpolating spline evaluated directly, first along y
    then along x (cubic; lower order with fewer than four nodes; one node is a constant)."""
    from scipy.interpolate import make_interp_spline

    from skydp.pipeline.background import Background, mesh_centres

    nodes_x, nodes_y = mesh_centres(shape[1], mesh), mesh_centres(shape[0], mesh)
    values = np.random.default_rng(4).normal(100.0, 5.0, size=(nodes_y.size, nodes_x.size))
    image = Background(nodes_x, nodes_y, values, values, shape).image()

    def along(nodes, data, n):
        if nodes.size == 1:
            return np.repeat(data, n, axis=0)
        return make_interp_spline(nodes, data, k=min(3, nodes.size - 1))(np.arange(n))

    expected = along(nodes_x, along(nodes_y, values, shape[0]).T, shape[1]).T
    assert image.dtype == np.float32 and image.shape == shape
    np.testing.assert_allclose(image, expected, rtol=1e-5)  # float32 surface; extrapolated corners lose most
