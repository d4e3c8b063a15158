"""Visit-image FITS files written with astropy alone, following DESIGN.md's contract.

Tests use them as input that does not depend on skydp's own writer, and spoil them on purpose
to check that every kind of bad input is caught.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

MASK_PLANES = {"BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5,
               "DETECTED_NEGATIVE": 6, "SUSPECT": 7, "NO_DATA": 8}


def wcs_header(ra: float = 150.0, dec: float = 2.0, size: int = 64, scale_arcsec: float = 0.2,
               rot_deg: float = 30.0) -> fits.Header:
    """A TAN WCS centred on the image, rotated by ``rot_deg``."""
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    scale = scale_arcsec / 3600.0
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = ra, dec
    h["CRPIX1"] = h["CRPIX2"] = (size + 1) / 2.0
    h["CD1_1"], h["CD1_2"] = -scale * c, scale * s
    h["CD2_1"], h["CD2_2"] = scale * s, scale * c
    return h


def write_visit_file(path: Path, *, visit: int = 2026032400001, detector: int = 0, band: str = "r",
                     snap: int | None = None, size: int = 64, seed: int = 0,
                     drop: tuple[str, ...] = (), image: np.ndarray | None = None,
                     wcs: fits.Header | None = None) -> Path:
    """Write a small contract-conforming visit image; ``drop`` leaves out HDUs by name."""
    rng = np.random.default_rng(seed)
    primary = fits.PrimaryHDU()
    h = primary.header
    h["INSTRUME"], h["VISIT"], h["DETECTOR"] = "SKYDPSIM", visit, detector
    h["BAND"], h["FILTER"] = band, f"{band}_sim"
    h["DAY_OBS"] = int(str(visit)[:8])
    h["TIMESYS"], h["MJD-OBS"], h["EXPTIME"], h["AIRMASS"] = "TAI", 61123.1, 30.0, 1.2
    h["BORE-RA"], h["BORE-DEC"], h["ROTPA"] = 150.0, 2.0, 30.0
    h["BUNIT"] = "nJy"
    if snap is not None:
        h["SNAP"] = snap
    if image is None:
        image = rng.normal(0.0, 10.0, (size, size)).astype(np.float32)
    header = wcs if wcs is not None else wcs_header(size=image.shape[0])
    hdus = [primary]
    img = fits.ImageHDU(image.astype(np.float32), header=header.copy(), name="IMAGE")
    img.header["BUNIT"] = "nJy"
    hdus.append(img)
    mask = fits.ImageHDU(np.zeros(image.shape, np.int32), header=header.copy(), name="MASK")
    for name, bit in MASK_PLANES.items():
        mask.header[f"HIERARCH MP_{name}"] = bit
    hdus.append(mask)
    hdus.append(fits.ImageHDU(np.full(image.shape, 100.0, np.float32), header=header.copy(), name="VARIANCE"))
    fits.HDUList([hdu for hdu in hdus if hdu.name not in drop]).writeto(path, overwrite=True)
    return Path(path)
