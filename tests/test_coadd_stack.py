"""The stacker's arithmetic on small synthetic warps, against direct numpy formulas: weighted mean and
propagated variance over the usable pixels, mask propagation, clipping of a single-warp spike,
and the binned comparison's helpers (NaN median, block means) on odd-sized blocks."""

from __future__ import annotations

import warnings

import numpy as np
from astropy.wcs import WCS
from scipy import ndimage

from skydp.coadd import ClipConfig, make_coadd
from skydp.coadd.clipping import (
    _blur_weights,
    _blur_where_covered,
    _nanmedian_first_axis,
    bin_warp,
)
from skydp.exposure import Exposure, Mask, PixelPsf, VisitInfo

SHAPE = (61, 75)  # odd: partial 2 x 2 bins at the last row and column


def _wcs() -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [53.1, -28.1]
    wcs.wcs.crpix = [38.0, 31.0]
    wcs.wcs.cd = 0.2 / 3600 * np.array([[-1.0, 0.0], [0.0, 1.0]])
    return wcs


def _warps(n: int, seed: int = 3, sky: float = 10.0) -> list[Exposure]:
    """Noise warps of one Gaussian star, different depths, NaN strips, a few SAT pixels each."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SHAPE[0], :SHAPE[1]]
    star = 5e4 * np.exp(-((x - 40.3) ** 2 + (y - 25.6) ** 2) / 8.0) / (8 * np.pi)
    stamp = np.exp(-(np.mgrid[:15, :15] - 7.0) ** 2 / 8.0).prod(axis=0)
    psf = PixelPsf(stamp[None], np.array([37.0]), np.array([30.0]))
    out = []
    for k in range(n):
        noise = sky * (1 + 0.3 * k)
        image = (star + rng.normal(0, noise, SHAPE)).astype(np.float32)
        variance = np.full(SHAPE, noise**2, np.float32)
        image[:, : 3 * k] = np.nan  # the warp does not cover its first 3k columns
        variance[:, : 3 * k] = np.nan
        mask = Mask.empty(SHAPE)
        mask.set("NO_DATA", ~np.isfinite(image))
        sat = np.zeros(SHAPE, bool)
        sat[rng.integers(0, SHAPE[0], 5), rng.integers(20, SHAPE[1], 5)] = True
        mask.set("SAT", sat)
        out.append(Exposure(image=image, variance=variance, mask=mask, wcs=_wcs(), psf=psf,
                            info=VisitInfo(visit=2026111500010 + k, band="r", mjd=61360.0 + k, exptime=30.0)))
    return out


def test_weighted_mean_variance_and_mask_match_direct_formulas() -> None:
    warps = _warps(4)
    coadd = make_coadd(warps, clip=None, block_rows=16)
    images = np.stack([w.image for w in warps]).astype(np.float64)
    variances = np.stack([w.variance for w in warps]).astype(np.float64)
    sat = np.stack([w.mask.get("SAT") for w in warps])
    usable = np.isfinite(images) & ~sat
    weights = np.array([1.0 / np.median(w.variance[np.isfinite(w.variance)]) for w in warps])
    wk = weights[:, None, None] * usable
    wsum = wk.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (np.where(usable, images, 0) * wk).sum(axis=0) / wsum
        var = (np.where(usable, variances, 0) * wk**2).sum(axis=0) / wsum**2
    has = wsum > 0
    np.testing.assert_allclose(coadd.exposure.image[has], mean[has], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(coadd.exposure.variance[has], var[has], rtol=1e-5)
    assert np.array_equal(coadd.input_count, usable.sum(axis=0))
    np.testing.assert_allclose(coadd.inputs["weight"].to_numpy(), weights, rtol=1e-6)
    # SAT where a left-out SAT input carries > 10 % of the covering weight
    covering = (weights[:, None, None] * np.isfinite(images)).sum(axis=0)
    sat_weight = (weights[:, None, None] * (sat & np.isfinite(images))).sum(axis=0)
    assert np.array_equal(coadd.exposure.mask.get("SAT"), sat_weight > 0.1 * covering)
    # the inputs' covered boxes: warp k starts at column 3k
    assert [b[0] for b in coadd.inputs["bbox"].to_pylist()] == [3 * k for k in range(4)]


def test_a_spike_in_one_warp_is_clipped_and_only_there() -> None:
    warps = _warps(5)
    r, c = 40, 55
    warps[2].image[r, c] += 3000.0  # 100 sigma cosmic ray, one pixel
    coadd = make_coadd(warps, block_rows=16)
    clipped = coadd.exposure.mask.get("CLIPPED")
    assert clipped[r, c]
    rows, cols = np.nonzero(clipped)
    # the blurred spike's bin and its neighbours (2 x 2 px each), grown by one bin
    assert np.abs(rows - r).max() <= 6 and np.abs(cols - c).max() <= 6
    assert coadd.input_count[r, c] == 4
    others = [w.image[r, c] for k, w in enumerate(warps) if k != 2]
    assert abs(coadd.exposure.image[r, c] - np.mean(others)) < 3 * 10.0 * 1.9  # within the other warps' noise
    n_clipped = coadd.inputs["n_clipped"].to_numpy()
    assert n_clipped[2] > 0 and n_clipped.sum() == n_clipped[2]
    # the star, with the same flux in every warp, is not clipped
    assert not clipped[22:30, 36:45].any()


def test_nanmedian_and_bin_means_match_numpy() -> None:
    rng = np.random.default_rng(0)
    stack = rng.normal(size=(5, 30, 40)).astype(np.float32)
    stack[rng.random(stack.shape) < 0.3] = np.nan
    stack[:, 0, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(stack, axis=0)
    np.testing.assert_allclose(_nanmedian_first_axis(stack), expected, equal_nan=True)

    image = rng.normal(size=(7, 9)).astype(np.float32)
    variance = 2 * image**2
    mask = np.zeros(image.shape, np.int32)
    unusable = rng.integers(0, 4, image.shape)  # 0: usable; NaN image, NaN variance or a bad bit
    image[unusable == 1] = np.nan
    variance[unusable == 2] = np.nan
    mask[unusable == 3] = 0b100
    mask[unusable == 0] |= 0b1  # a bit that is not bad
    usable = unusable == 0
    flux, cover, var = bin_warp(image, variance, mask, 0b110, 2)
    padded = np.zeros((8, 10))
    padded[:7, :9] = np.where(usable, image, 0)
    np.testing.assert_allclose(flux, padded.reshape(4, 2, 5, 2).sum(axis=(1, 3)) / 4, rtol=1e-6)
    counts = np.zeros((8, 10))
    counts[:7, :9] = usable
    np.testing.assert_allclose(cover, counts.reshape(4, 2, 5, 2).sum(axis=(1, 3)) / 4)
    var_sums = np.zeros((8, 10))
    var_sums[:7, :9] = np.where(usable, variance.astype(np.float64), 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_var = var_sums.reshape(4, 2, 5, 2).sum(axis=(1, 3)) / counts.reshape(4, 2, 5, 2).sum(axis=(1, 3))
    np.testing.assert_allclose(var, mean_var, rtol=1e-5, equal_nan=True)
    assert ClipConfig(bin_size=3).bin_size == 3


def test_blur_and_coverage_of_the_comparison_match_scipy() -> None:
    """The binned comparison's blur equals scipy's gaussian_filter (zero outside), and the bins it
    keeps are those whose window of +-reach bins lies inside the array and is fully covered."""
    rng = np.random.default_rng(5)
    flux = rng.normal(size=(40, 57)).astype(np.float32)
    cover = np.ones(flux.shape, np.float32)
    cover[rng.random(flux.shape) < 0.005] = 0.5
    cover[:, 50:] = 0.0
    for sigma in (0.0, 0.4, 1.3, 2.5):
        weights, reach = _blur_weights(sigma)
        blurred = _blur_where_covered(flux, cover, weights, reach)
        expected = ndimage.gaussian_filter(flux.astype(np.float64), sigma, mode="constant", truncate=4.0)
        kept = ndimage.minimum_filter((cover >= 1).view(np.uint8), size=2 * reach + 1, mode="constant", cval=0) > 0
        assert np.array_equal(np.isfinite(blurred), kept)
        np.testing.assert_allclose(blurred[kept], expected[kept], rtol=1e-5, atol=1e-6)
        assert kept.sum() > 200  # the comparison is not vacuous


def test_mask_planes_with_other_bit_numbers_are_propagated_by_name() -> None:
    """An input whose mask numbers its planes differently (as HSC files do) contributes its planes
    under the coadd's numbering: INTRP and a new plane on used pixels are ORed in, its left-out SAT
    pixels set SAT, and no bit lands on a plane the inputs did not set."""
    warps = _warps(3)
    other = {"NO_DATA": 0, "SAT": 4, "INTRP": 9, "BAD": 11, "CR": 12, "STREAK": 13}
    moved = Mask.empty(SHAPE, other)
    for name in ("NO_DATA", "SAT"):
        moved.set(name, warps[1].mask.get(name))
    intrp = np.zeros(SHAPE, bool)
    intrp[10, 40] = True
    moved.set("INTRP", intrp)
    streak = np.zeros(SHAPE, bool)
    streak[20, 30] = True
    moved.set("STREAK", streak)
    warps[1].mask = moved
    coadd = make_coadd(warps, clip=None, block_rows=16)
    mask = coadd.exposure.mask
    assert mask.get("INTRP")[10, 40] and mask.get("INTRP").sum() == 1
    assert mask.get("STREAK")[20, 30] and mask.get("STREAK").sum() == 1
    # warp 1 carries ~30 % of the covering weight: its left-out SAT pixels are SAT in the coadd
    sat_1 = moved.get("SAT") & np.isfinite(warps[1].image)
    assert sat_1.sum() >= 3 and np.all(mask.get("SAT")[sat_1])
    assert not np.any(mask.get("SAT") & ~(sat_1 | warps[0].mask.get("SAT") | warps[2].mask.get("SAT")))
    assert mask.array[10, 40] == mask.bitmask("INTRP")
