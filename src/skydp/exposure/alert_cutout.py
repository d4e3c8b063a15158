"""Cut-outs from LSST alert packets (``cutoutScience``, ``cutoutTemplate``, ``cutoutDifference``).

Each is a small FITS file (astropy NDData layout): the image in the PRIMARY HDU (BUNIT nJy, a
celestial WCS, CUTMINX/CUTMINY, ROTPA), ``UNCERT`` with the uncertainty whose kind UTYPE names
(LSST writes ``VarianceUncertainty``, i.e. variance in nJy^2) and ``PSFIMAGE``, the PSF model
image at the alert position. There is no mask: NaN pixels become NO_DATA.

Two conventions of the real files (checked on the 2026-03-05 LSSTCam alerts in
../shared/data/rubin_lsstcam_alerts_20260305):
* the WCS cards carry no CTYPE/CUNIT; CRVAL is the DiaSource position in degrees and the PC
  matrix is in degrees per pixel, so a TAN projection in degrees is assumed when CTYPE is absent;
* the DiaSource's parent pixel x is CRPIX1 - 1 + CUTMINX + 1, i.e. array pixel (0, 0) is parent
  pixel (CUTMINX + 1, CUTMINY + 1). That is the xy0 given here, so parent positions (and forced
  photometry at the packet's x, y) agree with the packet; array x - CUTMINX would be one pixel off.
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy.io import fits

from .errors import ExposureFormatError, ExposureMetadataWarning
from .info import VisitInfo
from .mask import Mask
from .model import Exposure
from .psf import PixelPsf
from .units import pixel_calibration
from .wcs_tools import celestial_wcs_from_header

UNCERTAINTY_HDU = "UNCERT"
PSF_HDU = "PSFIMAGE"


def is_alert_cutout(hdul: fits.HDUList) -> bool:
    """True for an image in the PRIMARY HDU accompanied by an UNCERT or PSFIMAGE extension."""
    names = {str(hdu.name).strip().upper() for hdu in hdul[1:]}
    return hdul[0].header.get("NAXIS", 0) == 2 and bool(names & {UNCERTAINTY_HDU, PSF_HDU})


def _wcs_header(header: fits.Header) -> fits.Header:
    header = header.copy()
    if "CTYPE1" not in header and "CTYPE2" not in header and "CRVAL1" in header and "CRVAL2" in header:
        header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
        header["CUNIT1"], header["CUNIT2"] = "deg", "deg"
    return header


def _variance(path: str, hdul: fits.HDUList, shape: tuple[int, int]) -> np.ndarray | None:
    if UNCERTAINTY_HDU not in hdul:
        return None
    hdu = hdul[UNCERTAINTY_HDU]
    data = hdu.data
    if data is None or data.shape != shape:
        raise ExposureFormatError(f"{path}: {UNCERTAINTY_HDU} shape {None if data is None else data.shape} "
                                  f"differs from the image shape {shape}")
    kind = str(hdu.header.get("UTYPE", "VarianceUncertainty")).strip()
    data = np.asarray(data, dtype=np.float64)
    if kind == "VarianceUncertainty":
        return data
    if kind == "StdDevUncertainty":
        return data**2
    if kind == "InverseVariance":
        with np.errstate(divide="ignore"):
            return np.where(data > 0, 1.0 / data, np.nan)
    raise ExposureFormatError(f"{path}: {UNCERTAINTY_HDU} UTYPE={kind!r} is not a known uncertainty kind")


def _psf(path: str, hdul: fits.HDUList, xy0: tuple[int, int], shape: tuple[int, int]) -> PixelPsf | None:
    if PSF_HDU not in hdul:
        return None
    stamp = hdul[PSF_HDU].data
    if stamp is None or stamp.ndim != 2 or stamp.shape[0] != stamp.shape[1] or stamp.shape[0] % 2 == 0:
        raise ExposureFormatError(f"{path}: {PSF_HDU} must be a square image of odd size, got "
                                  f"{None if stamp is None else stamp.shape}")
    ny, nx = shape
    try:
        return PixelPsf(stamp[None], np.array([xy0[0] + (nx - 1) / 2.0]), np.array([xy0[1] + (ny - 1) / 2.0]))
    except ValueError as exc:
        raise ExposureFormatError(f"{path}: invalid {PSF_HDU} ({exc})") from exc


def read_alert_cutout(path: str, hdul: fits.HDUList) -> Exposure:
    """Exposure of one alert cut-out (``path`` only names the source in messages)."""
    header = hdul[0].header
    image = np.asarray(hdul[0].data, dtype=np.float32)
    shape = image.shape
    wcs = celestial_wcs_from_header(path, _wcs_header(header), shape)
    xy0 = (int(header["CUTMINX"]) + 1, int(header["CUTMINY"]) + 1) if "CUTMINX" in header and "CUTMINY" in header \
        else (0, 0)
    variance = _variance(path, hdul, shape)
    calibration = pixel_calibration([header], wcs, shape)
    image = (image * np.float64(calibration.factor)).astype(np.float32)
    if variance is not None:
        variance = (variance * np.float64(calibration.factor) ** 2).astype(np.float32)
    mask = Mask.empty(shape)
    mask.set("NO_DATA", ~np.isfinite(image))
    rotpa = header.get("ROTPA")
    info = VisitInfo(rotpa=float(rotpa) if rotpa is not None else float("nan"), bunit=calibration.bunit)
    if calibration.warning:
        info.warnings.append(calibration.warning)
        warnings.warn(f"{path}: {calibration.warning}", ExposureMetadataWarning, stacklevel=4)
    return Exposure(image=image, variance=variance, mask=mask, wcs=wcs, psf=_psf(path, hdul, xy0, shape),
                    xy0=xy0, info=info)
