"""``subtract_images``: template warped onto the science grid, PSF-matched (Alard-Lupton), subtracted,
noise-decorrelated. The result is deterministic: the same inputs give the same pixels.

Which image is convolved: the one with the sharper PSF (``mode="auto"``), usually the template, so
the difference keeps the science PSF. When the science is sharper it is convolved to match the
template instead and the difference is divided by the kernel sum, so fluxes stay in science units.
Differences are science minus template in both cases.

Pixel planes: NaN image pixels count as NO_DATA. The difference mask is the OR of the science
mask and the template mask (the mask of the convolved image grown by the kernel half-size), without
DETECTED / DETECTED_NEGATIVE (detection on the difference sets those); NO_DATA also covers the
border where the kernel runs off the convolved image. NO_DATA pixels are NaN in image and variance,
as in input visit images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from skydp.diffim.config import DiffimConfig
from skydp.diffim.decorrelation import convolve_psf, convolve_same, decorrelation_kernel
from skydp.diffim.kernel_basis import FWHM_PER_SIGMA, basis_for_psfs
from skydp.diffim.psf_matching import (
    KernelSolution,
    fit_matching_kernel,
    select_kernel_stars,
)
from skydp.exposure import Exposure, Mask, PixelPsf
from skydp.pipeline.background import estimate_background

UNUSABLE_PLANES = ("BAD", "SAT", "NO_DATA")  # never used in the kernel fit
FIT_EXCLUDED_PLANES = UNUSABLE_PLANES + ("EDGE", "CR", "INTRP", "SUSPECT", "CLIPPED")
NOT_CARRIED = ("DETECTED", "DETECTED_NEGATIVE")
GRID_TOLERANCE = 1e-3  # px: a template closer than this to the science grid is used without warping


@dataclass
class Difference:
    """Result of ``subtract_images``; every exposure is on the science pixel grid."""

    difference: Exposure  # science - matched template, decorrelated; psf = the difference PSF
    matched_template: Exposure  # the template, warped and PSF-matched (or scaled, if the science was convolved)
    kernel: KernelSolution
    convolved: str  # "template" or "science"
    decorrelation: np.ndarray | None  # real-space decorrelation kernel applied (None when off)
    template_warped: bool = False  # resampled onto the science grid: its noise is correlated (warp.covariance_factor)


def subtract_images(science: Exposure, template: Exposure, config: DiffimConfig | None = None,
                    exclude: tuple[np.ndarray, np.ndarray] | None = None) -> Difference:
    """Difference image science - template on the science grid (see the module docstring).

    ``exclude``: parent pixel positions (x, y) of sources known or suspected to have changed (an
    alert's candidate, known variables); discs of ``config.exclude_radius`` reference-PSF FWHM around
    them are left out of the kernel fit, so that the kernel cannot absorb part of their flux change
    (on a cut-out the candidate's host galaxy dominates the fit, and the kernel shifts and reshapes the
    galaxy to cancel a few per cent of the candidate). Kernel stars whose stamp touches a disc are dropped.
    """
    config = config or DiffimConfig()
    _check(science, "science")
    _check(template, "template")
    warped = not same_grid(science, template)
    if warped:
        template = _warp(template, science)
    sci = _Planes.of(science, "science")
    tmp = _Planes.of(template, "template")
    centre = (science.xy0[0] + (science.width - 1) / 2.0, science.xy0[1] + (science.height - 1) / 2.0)
    psf_sci, psf_tmp = _psf(science, sci, "science"), _psf(template, tmp, "template")
    sigma_sci, sigma_tmp = psf_sci.shape(*centre).sigma, psf_tmp.shape(*centre).sigma
    if config.mode == "auto":
        convolve_template = sigma_tmp <= sigma_sci
    else:
        convolve_template = config.mode == "template"
    conv, ref = (tmp, sci) if convolve_template else (sci, tmp)
    sigma_conv, sigma_ref = (sigma_tmp, sigma_sci) if convolve_template else (sigma_sci, sigma_tmp)

    basis = basis_for_psfs(sigma_conv, sigma_ref, config.basis_sigmas, config.basis_degrees, config.basis_beta,
                           config.basis_min_sigma, config.kernel_min_size, config.kernel_max_size)
    h = basis.half
    ny, nx = science.shape
    # unusable for the convolved image: its own bad pixels grown by the kernel, and the kernel border
    conv_invalid = _grow(conv.unusable, h)
    conv_invalid[:h, :] = conv_invalid[-h:, :] = conv_invalid[:, :h] = conv_invalid[:, -h:] = True
    fit_bad = conv_invalid | _grow(conv.excluded, h) | ref.excluded
    if exclude is not None:
        fit_bad |= _discs(exclude, science.xy0, science.shape, config.exclude_radius * FWHM_PER_SIGMA * sigma_ref)
    fit_half = max(h, int(np.ceil(2.0 * FWHM_PER_SIGMA * sigma_ref)))
    star_x, star_y = select_kernel_stars(ref.image, ref.variance, fit_bad, sigma_ref, 2 * fit_half + 1,
                                         config.star_min_snr, config.star_max_snr, config.cell_size,
                                         config.stars_per_cell, config.max_stars)
    solution = fit_matching_kernel(conv.image, ref.image, conv.variance, ref.variance, fit_bad, basis, star_x,
                                   star_y, fit_half, config.spatial_kernel_order, config.spatial_background_order,
                                   config.min_stars, config.clip_sigma, config.clip_iterations,
                                   _fixed_kernel_sum(config.flux_ratio, convolve_template))
    kappa = solution.kernel_sum
    if not kappa > 0:
        raise ValueError(f"matching kernel has a non-positive sum ({kappa}): science and template do not match")
    gain = 1.0 if convolve_template else kappa  # difference divided by this: science flux units
    matched = solution.convolve(conv.image)
    matched += solution.background_image()
    nodata = conv_invalid | ref.unusable
    residual = ref.image - matched  # reference - convolved (x) K - background
    if not convolve_template:
        residual = -residual
    residual[nodata] = 0.0
    if config.difference_background_mesh:
        # local differential background (bright-star halos, mesh-background differences between the
        # inputs) on scales the polynomial cannot follow, as LSST re-fits it before DiaSource detection
        residual -= estimate_background(residual, nodata, config.difference_background_mesh, 3).image()
        residual[nodata] = 0.0

    kernel_c = solution.kernel_image((nx - 1) / 2.0, (ny - 1) / 2.0)
    ok = ~nodata
    if config.decorrelate and ok.any():
        phi = decorrelation_kernel(kernel_c, float(np.mean(ref.variance[ok])), float(np.mean(conv.variance[ok])))
        residual = convolve_same(residual, phi)
        conv_var_factor = kappa**2
    else:
        phi = None
        conv_var_factor = float(np.sum(kernel_c**2))
    diff_image = residual / np.float32(gain)
    diff_var = ((ref.variance + np.float32(conv_var_factor) * conv.variance) / np.float32(gain**2)).astype(np.float32)
    diff_image[nodata] = np.nan
    diff_var[nodata] = np.nan

    mask = _difference_mask(science.mask, template.mask, convolve_template, h)
    mask.set("NO_DATA", mask.get("NO_DATA") | nodata)

    x0, y0 = science.xy0
    if convolve_template:
        diff_psf = psf_sci
        matched_image, matched_var, matched_psf = matched, conv.variance * np.float32(np.sum(kernel_c**2)), psf_sci
    else:
        diff_psf = convolve_psf(psf_sci, lambda x, y: solution.kernel_image(x - x0, y - y0) / kappa)
        matched_image = (tmp.image - solution.background_image()) / np.float32(kappa)
        matched_var, matched_psf = tmp.variance / np.float32(kappa**2), psf_tmp
    if phi is not None:
        diff_psf = convolve_psf(diff_psf, lambda x, y: phi)
    matched_image = matched_image.astype(np.float32)
    matched_image[nodata] = np.nan
    matched_var = np.where(nodata, np.nan, matched_var).astype(np.float32)

    info = dataclasses.replace(science.info, warnings=list(science.info.warnings))
    difference = Exposure(image=diff_image, variance=diff_var, mask=mask, wcs=science.wcs.deepcopy(),
                          psf=diff_psf, xy0=science.xy0, info=info)
    template_planes = dict(template.mask.planes)
    template_mask = Mask(array=_carried(template.mask, convolve_template, h, template_planes), planes=template_planes)
    template_mask.set("NO_DATA", template_mask.get("NO_DATA") | nodata)
    matched_template = Exposure(image=matched_image, variance=matched_var, mask=template_mask,
                                wcs=science.wcs.deepcopy(), psf=matched_psf, xy0=science.xy0,
                                info=dataclasses.replace(template.info, warnings=list(template.info.warnings)))
    return Difference(difference=difference, matched_template=matched_template, kernel=solution,
                      convolved="template" if convolve_template else "science", decorrelation=phi,
                      template_warped=warped)


def _fixed_kernel_sum(flux_ratio: float | None, convolve_template: bool) -> float | None:
    """Kernel sum implied by a known science / template flux ratio (the convolved image is scaled to the other)."""
    if flux_ratio is None:
        return None
    return flux_ratio if convolve_template else 1.0 / flux_ratio


@dataclass
class _Planes:
    """float32 image and variance with unusable pixels zeroed, and the masks the fit needs."""

    image: np.ndarray
    variance: np.ndarray
    unusable: np.ndarray  # BAD, SAT, NO_DATA, non-finite: no data at all
    excluded: np.ndarray  # unusable or otherwise unfit for the kernel fit (CR, EDGE, ...)

    @classmethod
    def of(cls, exposure: Exposure, name: str) -> _Planes:
        image = exposure.image.astype(np.float32, copy=True)
        if exposure.variance is None:
            raise ValueError(f"{name} image (visit {exposure.info.visit}) has no variance plane")
        variance = exposure.variance.astype(np.float32, copy=True)
        mask = exposure.mask
        unusable = (mask.array & mask.bitmask(*[p for p in UNUSABLE_PLANES if p in mask.planes])) != 0
        unusable |= ~np.isfinite(image) | ~np.isfinite(variance) | (variance <= 0)
        excluded = unusable | ((mask.array & mask.bitmask(*[p for p in FIT_EXCLUDED_PLANES if p in mask.planes])) != 0)
        if unusable.all():
            raise ValueError(f"{name} image (visit {exposure.info.visit}) has no usable pixel")
        image[unusable] = 0.0
        variance[unusable] = 0.0
        return cls(image, variance, unusable, excluded)


def _discs(centres: tuple[np.ndarray, np.ndarray], xy0: tuple[int, int], shape: tuple[int, int],
           radius: float) -> np.ndarray:
    """Bool image (array frame) true within ``radius`` px of any parent position in ``centres``
    (positions off the image mark nothing)."""
    try:
        x, y = (np.atleast_1d(np.asarray(c, dtype=np.float64)) - o for c, o in zip(centres, xy0))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"subtract_images: exclude must be a pair of x, y coordinate arrays ({exc})") from exc
    if x.shape != y.shape or x.ndim != 1 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"subtract_images: exclude x {x.shape} and y {y.shape} must be finite 1-D arrays of one length")
    ny, nx = shape
    cx, cy = np.floor(x + 0.5).astype(np.int64), np.floor(y + 0.5).astype(np.int64)
    inside = (cx >= 0) & (cx < nx) & (cy >= 0) & (cy < ny)
    seeds = np.zeros(shape, dtype=bool)
    seeds[cy[inside], cx[inside]] = True
    r = int(np.ceil(radius))
    disc = np.hypot(*np.mgrid[-r:r + 1, -r:r + 1]) <= radius
    return ndimage.binary_dilation(seeds, structure=disc)


def _check(exposure: Exposure, name: str) -> None:
    if not isinstance(exposure, Exposure):
        raise TypeError(f"{name} must be an Exposure, got {type(exposure).__name__}")
    if min(exposure.shape) < 32:
        raise ValueError(f"{name} image {exposure.shape} is too small to difference (< 32 px)")


def same_grid(science: Exposure, template: Exposure) -> bool:
    """True when the template pixels already coincide with the science pixels (within 1e-3 px)."""
    if science.shape != template.shape or science.xy0 != template.xy0:
        return False
    x0, y0, x1, y1 = science.bbox
    gx, gy = np.meshgrid(np.linspace(x0, x1 - 1, 5), np.linspace(y0, y1 - 1, 5))
    ra, dec = science.pixel_to_sky(gx.ravel(), gy.ravel())
    tx, ty = template.sky_to_pixel(ra, dec)
    return bool(np.all(np.hypot(tx - gx.ravel(), ty - gy.ravel()) < GRID_TOLERANCE))


def _warp(template: Exposure, science: Exposure) -> Exposure:
    try:
        from skydp.warp import warp_exposure
    except ImportError as exc:  # the warp module is built concurrently
        raise ValueError("the template is not on the science pixel grid and skydp.warp is not available") from exc
    return warp_exposure(template, science.wcs, science.shape, science.xy0)


def _psf(exposure: Exposure, planes: _Planes, name: str) -> PixelPsf:
    """The exposure's PSF, or one estimated from its stars (plain images without a PSF HDU)."""
    if exposure.psf is not None:
        return exposure.psf
    import sep

    from skydp.pipeline.config import SingleVisitConfig
    from skydp.pipeline.psf_estimation import PsfEstimationError, estimate_psf

    cfg = SingleVisitConfig()
    mesh = int(min(cfg.background_mesh, *exposure.shape))
    image = planes.image - sep.Background(planes.image, mask=planes.unusable, bw=mesh, bh=mesh).back()
    try:
        return estimate_psf(np.where(planes.unusable, 0, image), planes.variance, planes.unusable, exposure.xy0,
                            cfg.initial_psf_fwhm, cfg.psf_stamp_size, cfg.psf_n_components, cfg.psf_spatial_order,
                            cfg.psf_grid, cfg.psf_min_snr, cfg.psf_max_stars).psf
    except PsfEstimationError as exc:
        raise ValueError(f"{name} image (visit {exposure.info.visit}) has no PSF and none could be estimated: {exc}") from exc


def _grow(values: np.ndarray, radius: int) -> np.ndarray:
    """Bitwise-OR dilation by a (2 radius + 1) square: every pixel gets the OR of its window.

    Works on bool and integer (bit-plane) arrays. Separable, and along each axis the window OR is
    built by doubling (windows of 1, 2, 4, ... px, then two overlapping power-of-two windows), so it
    costs ~2 log2(radius) whole-array ORs instead of one maximum filter per bit plane.
    """
    if radius < 1:
        return values.copy()
    width = 2 * radius + 1
    out = values
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        acc = np.pad(out, pad)  # acc[i] = OR of padded[i : i + span] along the axis
        span = 1
        while 2 * span <= width:
            n = acc.shape[axis]
            acc = _slice(acc, axis, 0, n - span) | _slice(acc, axis, span, n)
            span *= 2
        n_out = out.shape[axis]
        out = _slice(acc, axis, 0, n_out) | _slice(acc, axis, width - span, width - span + n_out)
    return out


def _slice(a: np.ndarray, axis: int, lo: int, hi: int) -> np.ndarray:
    return a[lo:hi] if axis == 0 else a[:, lo:hi]


def _carried(mask: Mask, grow: bool, radius: int, planes: dict[str, int]) -> np.ndarray:
    """``mask`` without the DETECTED planes, in the bit layout ``planes`` (extended with its other
    plane names), every plane grown by ``radius`` when ``grow``."""
    carried = {name: bit for name, bit in mask.planes.items() if name not in NOT_CARRIED}
    if all(planes.get(name) == bit for name, bit in carried.items()):  # same layout: one masking op
        out = mask.array & np.int32(sum(1 << bit for bit in carried.values()))
        return _grow(out, radius) if grow else out
    out = np.zeros(mask.array.shape, dtype=np.int32)
    for name, bit in mask.planes.items():
        if name in NOT_CARRIED:
            continue
        if name not in planes:
            planes[name] = max(planes.values(), default=-1) + 1
        target = planes[name]
        if target == bit:
            out |= mask.array & np.int32(1 << bit)
        else:
            out |= ((mask.array >> bit) & 1).astype(np.int32) << target
    return _grow(out, radius) if grow else out


def _difference_mask(science: Mask, template: Mask, convolve_template: bool, radius: int) -> Mask:
    planes = dict(science.planes)
    array = _carried(science, not convolve_template, radius, planes)
    array |= _carried(template, convolve_template, radius, planes)
    return Mask(array=array, planes=planes)
