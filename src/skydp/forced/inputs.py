"""What forced photometry needs from an exposure that may lack a variance plane or a PSF.

* Usable pixels: finite image, finite positive variance, none of BAD, SAT, NO_DATA (LSST's
  ``badMaskPlanes``).
* No variance plane (plain FITS images, ZTF cut-outs): a constant variance, the square of the
  3-sigma-clipped standard deviation of the usable pixels (sky-dominated noise, exact for faint
  sources; it omits the source photon noise, so errors of bright sources are underestimated).
* No PSF: ``skydp.pipeline.psf_estimation.estimate_psf`` with the single-visit defaults; if too
  few stars are usable, a Gaussian of the single-visit initial FWHM, reported as invalid so every
  row gets ``invalidPsfFlag``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.stats import sigma_clipped_stats

from skydp.exposure import Exposure, PixelPsf
from skydp.pipeline.config import SingleVisitConfig
from skydp.pipeline.psf_estimation import PsfEstimationError, estimate_psf, gaussian_psf

UNUSABLE_PLANES = ("BAD", "SAT", "NO_DATA")


@dataclass
class FitPlanes:
    """Per-pixel inputs of the weighted PSF fit (array frame)."""

    weighted_data: np.ndarray  # float32 image / variance, 0 at unusable pixels
    inverse_variance: np.ndarray  # float32 1 / variance, 0 at unusable pixels
    psf: PixelPsf
    psf_valid: bool  # False for the Gaussian fallback
    notes: list[str]  # what was estimated, for the caller's warnings


def unusable_pixels(exposure: Exposure) -> np.ndarray:
    """Bool (ny, nx): pixels excluded from every fit (bad planes, non-finite image or variance)."""
    planes = [p for p in UNUSABLE_PLANES if p in exposure.mask.planes]
    bad = ~np.isfinite(exposure.image)
    if planes:
        bad |= (exposure.mask.array & exposure.mask.bitmask(*planes)) != 0
    if exposure.variance is not None:
        bad |= ~(np.isfinite(exposure.variance) & (exposure.variance > 0))
    return bad


def constant_variance(image: np.ndarray, bad: np.ndarray) -> float:
    """Square of the 3-sigma-clipped standard deviation of the usable pixels."""
    good = image[~bad]
    if good.size < 10:
        raise ValueError(f"cannot estimate a variance: only {good.size} usable pixels")
    _, _, std = sigma_clipped_stats(good, sigma=3.0, maxiters=10)
    if not np.isfinite(std) or std <= 0:
        raise ValueError("cannot estimate a variance: the usable pixels have zero scatter")
    return float(std) ** 2


def resolve_psf(exposure: Exposure, variance: np.ndarray, bad: np.ndarray) -> tuple[PixelPsf, bool, list[str]]:
    """The exposure's PSF, else an estimated one, else the Gaussian fallback (valid = False)."""
    if exposure.psf is not None:
        return exposure.psf, True, []
    config = SingleVisitConfig()
    image = np.where(bad, 0.0, exposure.image).astype(np.float32)
    var = np.where(bad, 0.0, variance).astype(np.float32)
    try:
        estimated = estimate_psf(image, var, bad, exposure.xy0, config.initial_psf_fwhm, config.psf_stamp_size,
                                 config.psf_n_components, config.psf_spatial_order, config.psf_grid,
                                 config.psf_min_snr, config.psf_max_stars)
    except PsfEstimationError as exc:
        psf = gaussian_psf(config.initial_psf_fwhm, config.psf_stamp_size, exposure.xy0)
        return psf, False, [f"{exc}; Gaussian PSF of FWHM {config.initial_psf_fwhm} px used, rows flagged invalidPsfFlag"]
    return estimated.psf, True, [f"PSF estimated from {estimated.n_stars} stars"]


def fit_planes(exposure: Exposure) -> FitPlanes:
    """Weighted-data and inverse-variance planes plus the PSF to fit with (in-place float32 work:
    these planes are the bulk of the set-up cost on a 4k x 4k image)."""
    bad = unusable_pixels(exposure)
    notes: list[str] = []
    if exposure.variance is None:
        value = constant_variance(exposure.image, bad)
        variance = np.full(exposure.shape, value, dtype=np.float32)
        notes.append(f"no variance plane: constant variance {value:.6g} nJy^2 from the clipped pixel scatter")
    else:
        variance = exposure.variance
    psf, valid, psf_notes = resolve_psf(exposure, variance, bad)
    ivar = np.empty(exposure.shape, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(np.float32(1.0), variance, out=ivar)
    ivar[bad] = 0.0
    data = np.multiply(exposure.image, ivar, dtype=np.float32)
    data[bad] = 0.0
    return FitPlanes(weighted_data=data, inverse_variance=ivar, psf=psf, psf_valid=valid, notes=notes + psf_notes)
