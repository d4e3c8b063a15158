"""The exposure model (pixels in nJy, variance, mask, WCS, PSF, metadata) and its FITS I/O."""

from .errors import ExposureFormatError, ExposureMetadataWarning
from .fits_io import read_exposure, write_exposure
from .info import VisitInfo
from .mask import DEFAULT_MASK_PLANES, Mask
from .model import Exposure
from .psf import PixelPsf, PsfShape

__all__ = [
    "DEFAULT_MASK_PLANES",
    "Exposure",
    "ExposureFormatError",
    "ExposureMetadataWarning",
    "Mask",
    "PixelPsf",
    "PsfShape",
    "VisitInfo",
    "read_exposure",
    "write_exposure",
]
