"""PixelPsf: interpolation between stamps, sub-pixel centring, adaptive moments, bad input."""

from __future__ import annotations

import galsim
import numpy as np
import pytest

from skydp.exposure import PixelPsf

S = 25


def _gauss(sigma: float, dx: float = 0.0, dy: float = 0.0, size: int = S) -> np.ndarray:
    """GalSim Gaussian sampled at pixel centres (no pixel convolution), centred at (size//2 + dx, + dy)."""
    return galsim.Gaussian(sigma=sigma).drawImage(nx=size, ny=size, scale=1.0, method="no_pixel",
                                                  offset=(dx, dy)).array.astype(float)


def _grid_psf() -> PixelPsf:
    """3 x 2 grid; sigma grows with x and y so every interpolation direction matters."""
    xs, ys = np.meshgrid([0.0, 1000.0, 2000.0], [0.0, 4000.0])
    sigmas = 1.5 + xs.ravel() / 2000.0 + ys.ravel() / 4000.0
    return PixelPsf(np.array([_gauss(s) for s in sigmas]), xs.ravel(), ys.ravel())


def _centroid(img: np.ndarray) -> tuple[float, float]:
    yy, xx = np.indices(img.shape)
    return float((img * xx).sum() / img.sum()), float((img * yy).sum() / img.sum())


def test_gaussian_adaptive_moments_match_truth():
    for sigma in (1.2, 2.0, 3.5):
        shape = PixelPsf(_gauss(sigma)[None], [0.0], [0.0]).shape(10.0, 10.0)
        assert shape.ixx == pytest.approx(sigma**2, rel=0.01) and shape.iyy == pytest.approx(sigma**2, rel=0.01)
        assert abs(shape.ixy) < 1e-3 * sigma**2
        assert shape.sigma == pytest.approx(sigma, rel=0.005)
        assert shape.fwhm == pytest.approx(2.3548 * sigma, rel=0.005)


def test_elliptical_gaussian_moments_match_its_covariance():
    cov = np.array([[5.0, 1.2], [1.2, 3.0]])  # (x, y) covariance in px^2
    yy, xx = np.indices((41, 41)) - 20
    inv = np.linalg.inv(cov)
    img = np.exp(-0.5 * (inv[0, 0] * xx**2 + 2 * inv[0, 1] * xx * yy + inv[1, 1] * yy**2))
    shape = PixelPsf(img[None], [0.0], [0.0]).shape(0.0, 0.0)
    assert (shape.ixx, shape.iyy, shape.ixy) == pytest.approx((5.0, 3.0, 1.2), rel=0.01)
    assert shape.sigma == pytest.approx(np.linalg.det(cov) ** 0.25, rel=0.005)


def test_grid_bilinear_interpolation():
    psf = _grid_psf()
    stamps = psf.stamps  # normalised copies, in input order: row y=0 then y=4000
    # At a stamp position the stamp itself; midway between two the mean; at a cell centre the mean of 4.
    np.testing.assert_allclose(psf.image(1000.0, 0.0), stamps[1], atol=1e-15)
    np.testing.assert_allclose(psf.image(500.0, 0.0), 0.5 * (stamps[0] + stamps[1]), atol=1e-15)
    np.testing.assert_allclose(psf.image(1500.0, 2000.0), 0.25 * (stamps[1] + stamps[2] + stamps[4] + stamps[5]),
                               atol=1e-15)
    # Outside the grid: clamped to the edge.
    np.testing.assert_allclose(psf.image(-500.0, -500.0), stamps[0], atol=1e-15)
    s0, s1, mid = (psf.shape(x, 0.0).sigma for x in (0.0, 1000.0, 500.0))
    assert s0 < mid < s1


def test_scattered_barycentric_and_nearest_outside_hull():
    pts = np.array([[0.0, 0.0], [1000.0, 0.0], [0.0, 1000.0], [900.0, 1100.0]])
    stamps = np.array([_gauss(s) for s in (1.5, 2.0, 2.5, 3.0)])
    psf = PixelPsf(stamps, pts[:, 0], pts[:, 1])
    ref = psf.stamps
    np.testing.assert_allclose(psf.image(0.0, 1000.0), ref[2], atol=1e-12)
    # Inside triangle (0, 1, 2): barycentric weights of (250, 250) are 0.5, 0.25, 0.25.
    np.testing.assert_allclose(psf.image(250.0, 250.0), 0.5 * ref[0] + 0.25 * ref[1] + 0.25 * ref[2], atol=1e-12)
    np.testing.assert_allclose(psf.image(5000.0, 5000.0), ref[3], atol=1e-15)  # nearest stamp outside
    sig = psf.shape(250.0, 250.0).sigma
    assert 1.5 < sig < 2.5


def test_image_at_centres_psf_at_fractional_offset_against_galsim():
    psf = _grid_psf()
    for x, y in [(100.3, 199.7), (1234.5, 10.0), (1999.49, 3000.01), (7.0, 8.76)]:
        img = psf.image_at(x, y)
        fx, fy = x - np.floor(x + 0.5), y - np.floor(y + 0.5)
        cx, cy = _centroid(img)
        assert abs(cx - (S // 2 + fx)) < 0.01 and abs(cy - (S // 2 + fy)) < 0.01
        assert img.sum() == pytest.approx(1.0, abs=1e-12)
    # A single Gaussian stamp shifted by (0.3, -0.45) equals GalSim's drawing at that offset.
    single = PixelPsf(_gauss(2.0)[None], [0.0], [0.0])
    truth = _gauss(2.0, 0.3, -0.45)
    np.testing.assert_allclose(single.image_at(50.3, 60.55), truth / truth.sum(), atol=1e-7)


def test_images_at_is_vectorised_image_at_across_chunks():
    psf = _grid_psf()
    rng = np.random.default_rng(0)
    n = 5000  # more than one internal block
    xs, ys = rng.uniform(-100, 2100, n), rng.uniform(-100, 4100, n)
    many = psf.images_at(xs, ys)
    assert many.shape == (n, S, S)
    for i in (0, 4095, 4096, n - 1):
        np.testing.assert_allclose(many[i], psf.image_at(xs[i], ys[i]), atol=1e-14)
    np.testing.assert_allclose(many.sum(axis=(1, 2)), 1.0, atol=1e-12)


@pytest.mark.parametrize("stamps, x, y, match", [
    (np.ones((2, 4, 4)), [0, 1], [0, 1], "S odd"),
    (np.ones((2, 5, 5)), [0, 1, 2], [0, 1], "length K"),
    (np.ones((1, 5, 5)) * np.nan, [0], [0], "finite"),
    (np.zeros((1, 5, 5)), [0], [0], "non-positive sum"),
    (np.ones((5, 5)), [0], [0], "S, S"),
])
def test_bad_psf_input(stamps, x, y, match):
    with pytest.raises(ValueError, match=match):
        PixelPsf(stamps, x, y)


def test_non_finite_position_rejected():
    with pytest.raises(ValueError, match="finite"):
        _grid_psf().images_at([1.0, np.nan], [1.0, 2.0])


def test_moffat_adaptive_sigma_solves_the_fixed_point_equation():
    """Independent truth for a circular profile: the adaptive Gaussian weight exp(-r^2/2s^2) satisfies
    s^2 = int I W r^3 dr / int I W r dr (weighted <x^2> = s^2/2), solved here by 1-D quadrature."""
    from scipy.integrate import quad
    from scipy.optimize import brentq

    beta, fwhm = 3.0, 4.0
    rd = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))

    def mismatch(s: float) -> float:
        profile = lambda r, p: (1 + (r / rd) ** 2) ** -beta * np.exp(-(r**2) / (2 * s**2)) * r**p
        return quad(profile, 0, np.inf, args=(3,))[0] / quad(profile, 0, np.inf, args=(1,))[0] - s**2

    sigma_true = brentq(mismatch, 0.5, 10.0)
    img = galsim.Moffat(beta=beta, fwhm=fwhm).drawImage(nx=41, ny=41, scale=1.0, method="no_pixel").array
    shape = PixelPsf(img[None], [0.0], [0.0]).shape(0.0, 0.0)
    assert shape.sigma == pytest.approx(sigma_true, rel=0.005)
    assert shape.ixx == pytest.approx(sigma_true**2, rel=0.01) and shape.iyy == pytest.approx(sigma_true**2, rel=0.01)


@pytest.mark.parametrize("sigma", [1.2, 2.0])
def test_tabulated_psf_matches_the_exact_shift_within_the_interpolation_bound(sigma):
    """cores_at and images_at(tabulated=True) against images_at (exact Fourier shift), the
    derivatives taken analytically in Fourier space. Quadratic interpolation between phases h =
    1/16 px apart errs by at most c h^3 max|d3f| per axis, c = 1/(9 sqrt 3); for a Gaussian
    max|d3P/dx3| = 1.381 / sigma^3 and, for the derivative planes, max|d4P/dx4| + max|d3(dP/dx)/dy3|
    = (3 + 0.838) / sigma^4 of the peak. The bounds are derived, not tuned (+1e-6: float32 tables)."""
    c = (1 / 16) ** 3 / (9 * np.sqrt(3))
    bound_p = c * 2 * 1.381 / sigma**3 + 1e-6
    bound_d = c * (3 + 0.838) / sigma**4 + 1e-6
    xs, ys = np.meshgrid([0.0, 1000.0], [0.0, 2000.0])
    psf = PixelPsf(np.array([_gauss(sigma * f) for f in (1.0, 1.1, 1.2, 1.3)]), xs.ravel(), ys.ravel())
    rng = np.random.default_rng(2)
    x, y = rng.uniform(-50, 1050, 300), rng.uniform(-50, 2050, 300)
    core = 11
    p, dpx, dpy = psf.cores_at(x, y, core)
    full = psf.images_at(x, y)
    k = 2j * np.pi * np.fft.fftfreq(S)
    exact_dx = np.fft.ifft(np.fft.fft(full, axis=2) * k, axis=2).real
    exact_dy = np.fft.ifft(np.fft.fft(full, axis=1) * k[:, None], axis=1).real
    box = slice(S // 2 - core // 2, S // 2 + core // 2 + 1)
    peak = full.max(axis=(1, 2))[:, None, None]
    for got, want, bound in ((p, full, bound_p), (dpx, exact_dx, bound_d), (dpy, exact_dy, bound_d)):
        assert (np.abs(got - want[:, box, box]) / peak).max() < bound
    tabulated = psf.images_at(x, y, tabulated=True)
    assert tabulated.shape == full.shape
    assert (np.abs(tabulated - full) / peak).max() < bound_p
    np.testing.assert_allclose(tabulated.sum(axis=(1, 2)), 1.0, atol=1e-6)
    # on the phase nodes the tables are the exact realisation
    on_node = psf.cores_at(x.round() + 0.25, y.round() - 0.375, core)[0]
    np.testing.assert_allclose(on_node, psf.images_at(x.round() + 0.25, y.round() - 0.375)[:, box, box], atol=1e-7)


def test_cores_at_rejects_bad_size():
    with pytest.raises(ValueError, match="odd"):
        _grid_psf().cores_at([1.0], [1.0], 4)
    with pytest.raises(ValueError, match="odd"):
        _grid_psf().cores_at([1.0], [1.0], S + 2)
