"""Empty-aperture noise (the extra term of calibFluxErr) against scenes whose extra variance is known."""

from __future__ import annotations

import numpy as np
from scipy import signal

from skydp.pipeline.empty_apertures import MIN_APERTURES, empty_aperture_noise

SHAPE = (1024, 1024)
BIG = (2048, 2048)  # room for 4000 apertures: the extra variance to ~6%
SIGMA = 10.0  # pixel noise
RADIUS = 12.0


def _faint_sources(rng: np.random.Generator, n: int, flux: float, shape: tuple[int, int]) -> np.ndarray:
    """Noiseless image of ``n`` Gaussian blobs (sigma 2 px) of ``flux`` each at random positions:
    many sources, each well below detection, as the faint galaxies that confuse an aperture."""
    img = np.zeros(shape)
    ix, iy = rng.integers(0, shape[1], n), rng.integers(0, shape[0], n)
    np.add.at(img, (iy, ix), flux)
    k = np.arange(-8, 9)
    g = np.exp(-0.5 * (k / 2.0) ** 2)
    g /= g.sum()
    return signal.fftconvolve(signal.fftconvolve(img, g[None, :], mode="same"), g[:, None], mode="same")


def _aperture_sum_variance(light: np.ndarray) -> float:
    """Variance of the light summed in discs of RADIUS (pixel centres inside) over all interior
    positions: a direct convolution, independent of the code under test."""
    k = np.arange(-int(RADIUS), int(RADIUS) + 1)
    disc = (k[None, :] ** 2 + k[:, None] ** 2 <= RADIUS**2).astype(float)
    sums = signal.fftconvolve(light, disc, mode="valid")
    return float(np.var(sums))


def test_pure_noise_has_no_extra_variance():
    rng = np.random.default_rng(3)
    image = rng.normal(0, SIGMA, SHAPE)
    noise = empty_aperture_noise(image, np.full(SHAPE, SIGMA**2), np.zeros(SHAPE, bool), RADIUS, 1000, rng)
    print(f"pure noise: n={noise.n_apertures} ratio {noise.ratio:.3f} extra variance {noise.variance:.1f} "
          f"(pixel variance of the sum {np.pi * RADIUS**2 * SIGMA**2:.0f})")
    assert noise.n_apertures == 1000
    assert 0.95 <= noise.ratio <= 1.05
    assert noise.variance <= 0.1 * np.pi * RADIUS**2 * SIGMA**2


def test_extra_variance_is_that_of_the_faint_sources_light():
    rng = np.random.default_rng(4)
    light = _faint_sources(rng, 80000, 80.0, BIG)  # each ~1 sigma of a PSF-matched filter's noise
    light -= light.mean()  # the background model removes their mean light
    expected = _aperture_sum_variance(light)
    image = light + rng.normal(0, SIGMA, BIG)
    noise = empty_aperture_noise(image, np.full(BIG, SIGMA**2), np.zeros(BIG, bool), RADIUS, 4000, rng)
    print(f"faint sources: n={noise.n_apertures} extra variance {noise.variance:.0f}, expected {expected:.0f} "
          f"(pixel noise {np.pi * RADIUS**2 * SIGMA**2:.0f}); ratio {noise.ratio:.3f}")
    assert expected > 0.5 * np.pi * RADIUS**2 * SIGMA**2  # the scene does confuse
    assert abs(noise.variance / expected - 1) <= 0.15


def test_avoided_pixels_are_never_in_an_aperture():
    rng = np.random.default_rng(5)
    image = rng.normal(0, SIGMA, SHAPE)
    avoid = np.zeros(SHAPE, bool)
    avoid[:, : SHAPE[1] // 2] = True
    image[avoid] = 1e6  # a bright region marked detected: any aperture touching it would show
    noise = empty_aperture_noise(image, np.full(SHAPE, SIGMA**2), avoid, RADIUS, 500, rng)
    assert noise.n_apertures == 500
    assert 0.9 <= noise.ratio <= 1.1


def test_too_few_blank_apertures_give_no_term():
    rng = np.random.default_rng(6)
    image = rng.normal(0, SIGMA, SHAPE)
    avoid = np.ones(SHAPE, bool)
    avoid[500:540, 500:540] = False  # room for a few apertures only
    noise = empty_aperture_noise(image, np.full(SHAPE, SIGMA**2), avoid, RADIUS, 1000, rng)
    assert noise.n_apertures < MIN_APERTURES
    assert noise.variance == 0.0 and np.isnan(noise.ratio)
