"""Read and write the visit-image FITS contract (DESIGN.md); also reads LSST afw Exposure files
(IMAGE/MASK/VARIANCE found by EXTTYPE, xy0 from LTV1/2) and plain single-HDU images with a WCS."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits

from .alert_cutout import is_alert_cutout, read_alert_cutout
from .errors import ExposureFormatError, ExposureMetadataWarning
from .mask import DEFAULT_MASK_PLANES, Mask
from .metadata import visit_info_to_header, visit_info_from_headers
from .model import Exposure
from .psf import PixelPsf
from .units import pixel_calibration
from .wcs_tools import celestial_wcs_from_header, wcs_to_header

_ROLES = ("IMAGE", "MASK", "VARIANCE", "PSF", "PSF_GRID")
_DATA_ERRORS = (OSError, ValueError, TypeError, IndexError)  # what astropy raises on truncated data


def _role(hdu: fits.hdu.base.ExtensionHDU) -> str:
    """Contract role of an HDU from EXTNAME (ours) or EXTTYPE (afw); "" for unknown HDUs."""
    for key in ("EXTNAME", "EXTTYPE"):
        value = str(hdu.header.get(key, "")).strip().upper()
        if value in _ROLES:
            return value
    return ""


def _data(path: str, hdu: fits.hdu.base._BaseHDU, what: str) -> np.ndarray:
    try:
        data = hdu.data
    except _DATA_ERRORS as exc:
        raise ExposureFormatError(f"{path}: {what} HDU cannot be read, file truncated or corrupt ({exc})") from exc
    if data is None:
        raise ExposureFormatError(f"{path}: {what} HDU has no data")
    return data


def _plane(path: str, hdu: fits.hdu.base._BaseHDU, what: str, shape: tuple[int, int] | None) -> np.ndarray:
    data = _data(path, hdu, what)
    if data.ndim != 2:
        raise ExposureFormatError(f"{path}: {what} must be a 2-D image, got shape {data.shape}")
    if shape is not None and data.shape != shape:
        raise ExposureFormatError(f"{path}: {what} shape {data.shape} differs from IMAGE shape {shape}")
    return data


def _xy0(path: str, header: fits.Header) -> tuple[int, int]:
    """Parent origin: -LTV1/2 (IRAF/afw), else afw's LINEAR 'A' WCS (CRVAL1A/2A at CRPIX 1), else 0."""
    if "LTV1" in header or "LTV2" in header:
        ltv = (-float(header.get("LTV1", 0.0)), -float(header.get("LTV2", 0.0)))
    elif str(header.get("CTYPE1A", "")).strip() == "LINEAR" and header.get("CRPIX1A") == 1 and header.get("CRPIX2A") == 1:
        ltv = (float(header.get("CRVAL1A", 0.0)), float(header.get("CRVAL2A", 0.0)))
    else:
        return 0, 0
    if not all(v.is_integer() for v in ltv):
        raise ExposureFormatError(f"{path}: non-integer pixel origin (LTV1/2) {ltv}")
    return int(ltv[0]), int(ltv[1])


def _mask_planes(header: fits.Header, warnings_out: list[str]) -> dict[str, int]:
    planes = {key[3:]: int(value) for key, value in header.items() if key.upper().startswith("MP_")}
    if not planes:
        warnings_out.append("MASK HDU has no MP_* plane keys; default plane map assumed")
        return dict(DEFAULT_MASK_PLANES)
    return planes


def _psf(path: str, hdus: dict[str, fits.hdu.base._BaseHDU]) -> PixelPsf | None:
    if "PSF" not in hdus:
        return None
    if "PSF_GRID" not in hdus:
        raise ExposureFormatError(f"{path}: PSF HDU without its PSF_GRID table")
    stamps = _data(path, hdus["PSF"], "PSF")
    grid = _data(path, hdus["PSF_GRID"], "PSF_GRID")
    try:
        return PixelPsf(stamps, np.asarray(grid["x"]), np.asarray(grid["y"]))
    except (KeyError, ValueError) as exc:
        raise ExposureFormatError(f"{path}: invalid PSF ({exc})") from exc


def _open(source: str | os.PathLike | bytes | io.IOBase) -> tuple[str, fits.HDUList]:
    """Open a path, FITS bytes (plain or gzip, e.g. an alert packet's cut-out) or a binary file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, data = "<FITS bytes>", bytes(source)
    elif isinstance(source, io.IOBase):
        name, data = getattr(source, "name", "<FITS stream>"), source.read()
    else:
        name, data = os.fspath(source), None
    try:
        if data is not None:
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            hdul = fits.open(io.BytesIO(data), memmap=False)
        else:
            hdul = fits.open(name, memmap=False)
        hdul.readall()
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise ExposureFormatError(f"{name}: not a readable FITS file ({exc})") from exc
    return name, hdul


def read_exposure(path: str | os.PathLike | bytes | io.IOBase) -> Exposure:
    """Read a visit image (our contract or LSST afw), an LSST alert cut-out, or a plain single-HDU
    image with a WCS, from a path, FITS bytes (gzip too) or a binary file object.

    Pixels are brought to nJy from BUNIT/zero-point keys when possible; everything that could not
    be read or derived is listed in ``info.warnings`` and reported by one ExposureMetadataWarning.
    """
    name, hdul = _open(path)
    with hdul:
        if is_alert_cutout(hdul):
            return read_alert_cutout(name, hdul)
        return _read(name, hdul)


def _read(path: str, hdul: fits.HDUList) -> Exposure:
    primary = hdul[0]
    hdus: dict[str, fits.hdu.base._BaseHDU] = {}
    for hdu in hdul[1:]:
        hdus.setdefault(_role(hdu), hdu)
    notes: list[str] = []
    if "IMAGE" in hdus:
        image_hdu = hdus["IMAGE"]
        image = _plane(path, image_hdu, "IMAGE", None)
        if "VARIANCE" not in hdus:
            raise ExposureFormatError(f"{path}: multi-HDU visit image has no VARIANCE HDU")
        variance = np.asarray(_plane(path, hdus["VARIANCE"], "VARIANCE", image.shape), dtype=np.float32)
        if "MASK" in hdus:
            mask_data = _plane(path, hdus["MASK"], "MASK", image.shape)
            mask = Mask(np.asarray(mask_data), _mask_planes(hdus["MASK"].header, notes))
        else:
            notes.append("no MASK HDU; empty mask")
            mask = Mask.empty(image.shape)
        psf = _psf(path, hdus)
        headers = [primary.header, image_hdu.header]
    elif primary.header.get("NAXIS", 0) >= 2:
        image_hdu = primary
        image = _plane(path, primary, "primary image", None)
        variance, mask, psf = None, Mask.empty(image.shape), None
        headers = [primary.header]
    else:
        raise ExposureFormatError(f"{path}: no IMAGE HDU and no image in the primary HDU")
    image = np.asarray(image, dtype=np.float32)
    if not np.isfinite(image).any():
        raise ExposureFormatError(f"{path}: the image has no finite pixel (all NaN/inf)")
    wcs = celestial_wcs_from_header(path, image_hdu.header, image.shape)
    xy0 = _xy0(path, image_hdu.header)
    info = visit_info_from_headers(path, headers)
    calibration = pixel_calibration(headers[::-1], wcs, image.shape)
    if calibration.factor != 1.0:
        image = (image * np.float64(calibration.factor)).astype(np.float32)
        if variance is not None:
            variance = (variance * np.float64(calibration.factor) ** 2).astype(np.float32)
    info.bunit = calibration.bunit
    info.warnings.extend(notes + ([calibration.warning] if calibration.warning else []))
    if info.warnings:
        warnings.warn(f"{path}: " + "; ".join(info.warnings), ExposureMetadataWarning, stacklevel=3)
    return Exposure(image=image, variance=variance, mask=mask, wcs=wcs, psf=psf, xy0=xy0, info=info)


def _pixel_header(exposure: Exposure, exttype: str) -> fits.Header:
    """WCS (array frame) + parent origin both as LTV1/2 and afw's LINEAR 'A' WCS, + afw EXTTYPE."""
    header = wcs_to_header(exposure.wcs)
    x0, y0 = exposure.xy0
    header["LTV1"] = (-x0, "minus parent x of array pixel 0")
    header["LTV2"] = (-y0, "minus parent y of array pixel 0")
    for axis, origin in ((1, x0), (2, y0)):
        header[f"CTYPE{axis}A"] = ("LINEAR", "parent pixel frame (afw xy0)")
        header[f"CRPIX{axis}A"] = 1
        header[f"CRVAL{axis}A"] = origin
        header[f"CUNIT{axis}A"] = "pixel"
    header["INHERIT"] = True
    header["EXTTYPE"] = exttype
    return header


def _mask_header(exposure: Exposure) -> fits.Header:
    header = _pixel_header(exposure, "MASK")
    for name, bit in sorted(exposure.mask.planes.items(), key=lambda item: item[1]):
        key = f"MP_{name}"
        header[key if len(key) <= 8 else f"HIERARCH {key}"] = bit
    return header


def _hdulist(exposure: Exposure) -> fits.HDUList:
    if exposure.variance is None:
        raise ValueError("exposure has no variance plane: estimate it before writing a visit image")
    image_header = _pixel_header(exposure, "IMAGE")
    if exposure.info.bunit:
        image_header["BUNIT"] = exposure.info.bunit
    hdus = [
        fits.PrimaryHDU(header=visit_info_to_header(exposure.info)),
        fits.ImageHDU(exposure.image.astype(np.float32, copy=False), image_header, name="IMAGE"),
        fits.ImageHDU(exposure.mask.array.astype(np.int32, copy=False), _mask_header(exposure), name="MASK"),
        fits.ImageHDU(exposure.variance.astype(np.float32, copy=False), _pixel_header(exposure, "VARIANCE"),
                      name="VARIANCE"),
    ]
    psf = exposure.psf
    if psf is not None:
        hdus.append(fits.ImageHDU(psf.stamps.astype(np.float32), name="PSF"))
        grid = [fits.Column(name=axis, format="D", array=values) for axis, values in (("x", psf.x), ("y", psf.y))]
        hdus.append(fits.BinTableHDU.from_columns(grid, name="PSF_GRID"))
    return fits.HDUList(hdus)


def write_exposure(exposure: Exposure, path: str | os.PathLike, extra_hdus: Sequence[fits.ImageHDU] = ()) -> None:
    """Write the visit-image contract atomically: a temporary file in the target directory is
    fsync'ed and renamed over ``path``, so a crash never leaves a partial file there.

    ``extra_hdus`` (named) follow the contract's HDUs; readers of the contract ignore them.
    Output is deterministic (no dates or checksums): the same exposure gives identical bytes.
    """
    target = Path(path)
    hdul = _hdulist(exposure)
    hdul.extend(extra_hdus)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            hdul.writeto(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
