"""The Exposure: calibrated pixels (nJy), variance, mask, WCS, PSF, parent origin and visit metadata."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS

from .info import VisitInfo
from .mask import Mask
from .psf import PixelPsf
from .wcs_tools import local_pixel_scale, sky_to_array


@dataclass(eq=False)  # arrays inside: compare fields explicitly
class Exposure:
    """One detector image of one visit.

    ``wcs`` maps ARRAY pixels (origin 0); every method here takes and returns PARENT pixel
    coordinates x = column + xy0[0], y = row + xy0[1] (0-based), as catalogs store them.
    """

    image: np.ndarray
    variance: np.ndarray | None
    mask: Mask
    wcs: WCS
    psf: PixelPsf | None = None
    xy0: tuple[int, int] = (0, 0)
    info: VisitInfo = field(default_factory=VisitInfo)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        if self.image.ndim != 2:
            raise ValueError(f"Exposure.image must be 2-D, got shape {self.image.shape}")
        if self.variance is not None:
            self.variance = np.asarray(self.variance, dtype=np.float32)
            if self.variance.shape != self.image.shape:
                raise ValueError(f"Exposure.variance shape {self.variance.shape} != image shape {self.image.shape}")
        if self.mask.array.shape != self.image.shape:
            raise ValueError(f"Exposure.mask shape {self.mask.array.shape} != image shape {self.image.shape}")
        if not isinstance(self.wcs, WCS) or self.wcs.naxis != 2 or not self.wcs.is_celestial:
            raise ValueError("Exposure.wcs must be a 2-axis celestial astropy WCS")
        self.xy0 = (int(self.xy0[0]), int(self.xy0[1]))

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of the pixel arrays."""
        return self.image.shape

    @property
    def width(self) -> int:
        return self.image.shape[1]

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in parent pixels, inclusive-exclusive."""
        x0, y0 = self.xy0
        return x0, y0, x0 + self.width, y0 + self.height

    def pixel_to_sky(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) in degrees of parent pixel positions, through the full WCS (SIP included)."""
        ax, ay = np.broadcast_arrays(np.asarray(x, dtype=float) - self.xy0[0], np.asarray(y, dtype=float) - self.xy0[1])
        ra, dec = self.wcs.all_pix2world(ax, ay, 0)
        return np.asarray(ra), np.asarray(dec)

    def pixel_to_sky_with_errors(self, x: np.ndarray, y: np.ndarray, vxx: np.ndarray, vyy: np.ndarray,
                                 vxy: np.ndarray) -> tuple[np.ndarray, ...]:
        """(ra, dec, raErr, decErr, ra_dec_Cov) of parent positions with pixel covariance (vxx, vyy, vxy),
        through the local WCS Jacobian (finite differences of half a pixel).

        raErr is the error of the RA coordinate itself (degrees of RA, as DP1's "Error in right
        ascension"): the on-sky error is raErr * cos(dec); ra_dec_Cov uses the same convention.
        """
        ra, dec = self.pixel_to_sky(x, y)
        h = 0.5
        ra_x, dec_x = self.pixel_to_sky(x + h, y)
        ra_y, dec_y = self.pixel_to_sky(x, y + h)
        a, b = ((ra_x - ra + 180) % 360 - 180) / h, ((ra_y - ra + 180) % 360 - 180) / h
        c, d = (dec_x - dec) / h, (dec_y - dec) / h
        return (ra, dec, np.sqrt(a * a * vxx + b * b * vyy + 2 * a * b * vxy),
                np.sqrt(c * c * vxx + d * d * vyy + 2 * c * d * vxy), a * c * vxx + b * d * vyy + (a * d + b * c) * vxy)

    def sky_to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Parent pixel (x, y) of sky positions (degrees); NaN where the SIP inversion diverges."""
        ax, ay = sky_to_array(self.wcs, ra, dec)
        return ax + self.xy0[0], ay + self.xy0[1]

    def pixel_scale(self, x: float | np.ndarray | None = None, y: float | np.ndarray | None = None) -> float | np.ndarray:
        """Local pixel scale (arcsec/pixel, sqrt of the Jacobian determinant) at parent (x, y);
        default: the image centre."""
        if x is None:
            x = self.xy0[0] + (self.width - 1) / 2.0
        if y is None:
            y = self.xy0[1] + (self.height - 1) / 2.0
        scale = local_pixel_scale(self.wcs, np.asarray(x, dtype=float) - self.xy0[0], np.asarray(y, dtype=float) - self.xy0[1])
        return float(scale) if scale.ndim == 0 else scale

    def corners(self) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) arrays of the 4 outer pixel corners, in the order ll, ul, ur, lr."""
        x0, y0, x1, y1 = self.bbox
        xs = np.array([x0, x0, x1, x1], dtype=float) - 0.5
        ys = np.array([y0, y1, y1, y0], dtype=float) - 0.5
        return self.pixel_to_sky(xs, ys)

    def copy(self) -> "Exposure":
        """Deep copy of pixels, mask, WCS and metadata (the immutable PSF is shared)."""
        return Exposure(
            image=self.image.copy(),
            variance=None if self.variance is None else self.variance.copy(),
            mask=self.mask.copy(),
            wcs=self.wcs.deepcopy(),
            psf=self.psf,
            xy0=self.xy0,
            info=dataclasses.replace(self.info, warnings=copy.copy(self.info.warnings)),
        )
