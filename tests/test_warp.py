"""Lanczos-3 warping on synthetic images with exactly known content: star positions and fluxes,
PSF, noise and its covariance, mask bits and NO_DATA, the interpolated pixel map."""

from __future__ import annotations

import galsim
import numpy as np
import pytest
from astropy.wcs import WCS, Sip

from skydp.exposure import Exposure, Mask, PixelPsf, VisitInfo
from skydp.warp import PixelMapping, covariance_factor, warp_exposure

RA0, DEC0 = 53.1, -28.1
SIGMA = 2.0  # source PSF sigma, px


def _wcs(ra: float, dec: float, scale: float, rot_deg: float, crpix: tuple[float, float], sip: bool = False) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = list(crpix)
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    wcs.wcs.cd = scale / 3600.0 * np.array([[-c, s], [s, c]])
    if sip:
        a = np.zeros((4, 4))
        b = np.zeros((4, 4))
        a[2, 0], a[0, 2], b[1, 1], a[3, 0] = 2e-6, -1e-6, 1.5e-6, 1e-9  # ~1 px distortion at the corners
        wcs.sip = Sip(a, b, None, None, wcs.wcs.crpix)
    wcs.wcs.set()
    return wcs


def _gaussian_psf(sigma: float, size: int = 41) -> PixelPsf:
    y, x = np.mgrid[:size, :size] - size // 2
    stamp = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return PixelPsf(np.array([stamp] * 4), np.array([0.0, 400, 0, 400]), np.array([0.0, 0, 400, 400]))


def _source(n: int = 400, stars: bool = True, noise: float = 0.0, seed: int = 1) -> tuple[Exposure, np.ndarray, np.ndarray, np.ndarray]:
    """A TAN-SIP exposure with Gaussian stars on a grid (no noise unless asked)."""
    wcs = _wcs(RA0, DEC0, 0.2, 10.0, (n / 2 + 0.5, n / 2 + 0.5), sip=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n].astype(float)
    image = np.zeros((n, n))
    xs, ys = np.meshgrid(np.linspace(40, n - 40, 6), np.linspace(40, n - 40, 6))
    xs, ys = xs.ravel() + rng.uniform(-0.5, 0.5, xs.size), ys.ravel() + rng.uniform(-0.5, 0.5, xs.size)
    fluxes = rng.uniform(1e4, 1e5, xs.size)
    if stars:
        for x, y, f in zip(xs, ys, fluxes):
            image += f * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * SIGMA**2)) / (2 * np.pi * SIGMA**2)
    image += noise * rng.normal(size=image.shape)
    ra, dec = wcs.all_pix2world(xs, ys, 0)
    exposure = Exposure(image=image, variance=np.full((n, n), max(noise, 1e-3) ** 2), mask=Mask.empty((n, n)), wcs=wcs,
                        psf=_gaussian_psf(SIGMA), info=VisitInfo(visit=2026111500010, band="r", mjd=61360.0, exptime=30.0))
    return exposure, ra, dec, fluxes


def _target(rot_deg: float, scale: float = 0.2, n: int = 420) -> WCS:
    return _wcs(RA0 + 0.001, DEC0 - 0.0015, scale, rot_deg, (n / 2 + 0.5, n / 2 + 0.5))


def test_pixel_mapping_interpolation_error_below_001_px() -> None:
    exposure, *_ = _source(stars=False)
    target = _target(33.0)
    mapping = PixelMapping(exposure.wcs, target, (420, 420))
    u, v, _ = mapping.block(0, 420, 0, 420)
    rng = np.random.default_rng(0)
    r, c = rng.integers(0, 420, 3000), rng.integers(0, 420, 3000)
    eu, ev = mapping.exact(c.astype(float), r.astype(float))
    err = np.hypot(u[r, c] - eu, v[r, c] - ev)
    assert err.max() < 0.01


@pytest.mark.parametrize("rot_deg, scale", [(33.0, 0.2), (70.0, 0.2), (-20.0, 0.25)])
def test_star_positions_fluxes_and_psf(rot_deg: float, scale: float) -> None:
    """Noise-free stars land at their WCS positions (< 0.02 px), keep their flux (0.1 %), and the
    warped PSF model has the warped stars' size (1 %)."""
    exposure, ra, dec, fluxes = _source()
    target = _target(rot_deg, scale)
    warp = warp_exposure(exposure, target, (420, 420), xy0=(1000, 2000))
    x, y = warp.sky_to_pixel(ra, dec)
    ax, ay = x - 1000, y - 2000
    inside = (ax > 25) & (ax < 395) & (ay > 25) & (ay < 395)
    assert inside.sum() >= 10
    img = np.nan_to_num(warp.image.astype(np.float64))
    ratio, offsets, sizes = [], [], []
    yy, xx = np.mgrid[:420, :420]
    for px, py, f in zip(ax[inside], ay[inside], fluxes[inside]):
        r2 = (xx - px) ** 2 + (yy - py) ** 2
        ratio.append(img[r2 < 15**2].sum() / f)
        i, j = round(py), round(px)
        stamp = galsim.Image(img[i - 15:i + 16, j - 15:j + 16])
        mom = galsim.hsm.FindAdaptiveMom(stamp)
        # galsim centroid is 1-based in the stamp's bounds
        offsets.append((mom.moments_centroid.x - 1 - 15 + j - px, mom.moments_centroid.y - 1 - 15 + i - py))
        sizes.append(mom.moments_sigma)
    assert np.all(np.abs(np.array(ratio) - 1) < 1e-3)
    assert np.abs(np.array(offsets)).max() < 0.02
    psf_sigma = warp.psf.shape(1210.0, 2210.0).sigma
    assert abs(np.median(sizes) / psf_sigma - 1) < 0.01
    assert abs(psf_sigma - SIGMA * 0.2 / scale) / (SIGMA * 0.2 / scale) < 0.02


def test_noise_pull_and_covariance_factor() -> None:
    """Per-pixel variance is exact (pull std 1); block sums carry the stated covariance factor."""
    exposure, *_ = _source(n=600, stars=False, noise=10.0, seed=4)
    warp = warp_exposure(exposure, _target(27.0, n=400), (400, 400))
    assert np.isfinite(warp.image).all()
    pull = warp.image / np.sqrt(warp.variance)
    assert abs(pull.std() - 1) < 0.02
    b = 16
    sums = warp.image.reshape(400 // b, b, 400 // b, b).sum(axis=(1, 3))
    var_sums = warp.variance.reshape(400 // b, b, 400 // b, b).sum(axis=(1, 3))
    measured = sums.var() / var_sums.mean()
    # edges of a 16 px block see less of the correlation: allow 10 %
    assert abs(measured / covariance_factor() - 1) < 0.1
    assert 1.1 < covariance_factor() < 1.5


def test_mask_bits_nodata_and_flat_field() -> None:
    n = 300
    wcs = _wcs(RA0, DEC0, 0.2, 0.0, (n / 2 + 0.5, n / 2 + 0.5))
    image = np.ones((n, n), np.float32)
    image[100, 100] = np.nan
    mask = Mask.empty((n, n))
    sat = np.zeros((n, n), bool)
    sat[200, 150] = True
    mask.set("SAT", sat)
    exposure = Exposure(image=image, variance=np.ones((n, n)), mask=mask, wcs=wcs)
    target = _wcs(RA0, DEC0, 0.25, 15.0, (200.5, 200.5))  # larger than the input: edges fall outside
    warp = warp_exposure(exposure, target, (400, 400))
    no_data = warp.mask.get("NO_DATA")
    assert np.array_equal(no_data, ~np.isfinite(warp.image))
    assert no_data[0, 0] and no_data[-1, -1]  # outside the input
    x, y = warp.sky_to_pixel(*exposure.pixel_to_sky(np.array([100.0, 150.0]), np.array([100.0, 200.0])))
    assert no_data[round(y[0]), round(x[0])]  # NaN input pixel
    assert warp.mask.get("SAT")[round(y[1]), round(x[1])]
    assert warp.mask.get("SAT").sum() <= 6
    # a flat field stays flat, scaled by the pixel-area ratio (nJy per pixel)
    good = np.isfinite(warp.image)
    np.testing.assert_allclose(warp.image[good], (0.25 / 0.2) ** 2, rtol=2e-4)
    # every target pixel whose 6 x 6 taps are inside the input and away from the NaN has data
    ax, ay = PixelMapping(wcs, target, (400, 400)).block(0, 400, 0, 400)[:2]
    safe = (ax > 3) & (ax < n - 4) & (ay > 3) & (ay < n - 4) & (np.hypot(ax - 100, ay - 100) > 5)
    assert good[safe].all()


def test_bad_arguments() -> None:
    exposure, *_ = _source(stars=False)
    with pytest.raises(ValueError, match="kernel"):
        warp_exposure(exposure, _target(0.0), (10, 10), kernel="bilinear")
    with pytest.raises(ValueError, match="shape"):
        warp_exposure(exposure, _target(0.0), (0, 10))
