"""Forced PSF photometry: the PSF amplitude at fixed positions on any exposure, vectorised.

psfFlux = sum(P D / V) / sum(P^2 / V) over the usable pixels of a (F, F) region around each
position (the weighted linear least-squares amplitude of the PSF P realised at the sub-pixel
position), psfFluxErr = 1 / sqrt(sum(P^2 / V)). The image must be background-subtracted (calibrated
visit images, difference images and alert cut-outs are). The fit region spans FIT_RADIUS_FWHM
FWHM each side of the centre (or the whole PSF stamp if smaller): beyond it the PSF carries no
signal-to-noise, and since P keeps its full normalisation the amplitude is still the total flux.

psfFlux_flag: the position is off the image, or usable pixels carry less than MIN_PSF_WEIGHT of
sum(P^2) (mostly NO_DATA / BAD / SAT / off the edge, or invalid variance). pixelFlags_X (as LSST
base_PixelFlags): mask plane X on any pixel of the PSF core (pixels where the PSF at the image
centre exceeds FOOTPRINT_LEVEL of its peak) or of the 3x3 centre box; pixelFlags_XCenter: on the
3x3 centre box (for every plane, as DiaSource has them; ForcedSource keeps the DP1 subset).
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa

from skydp.exposure import Exposure
from skydp.exposure.errors import ExposureMetadataWarning
from skydp.forced.inputs import fit_planes
from skydp.forced.psf_table import DEFAULT_PHASES, PhasedPsf
from skydp.forced.windows import cut, gather
from skydp.pipeline.apertures import ApertureSummer
from skydp.pipeline.pixel_flags import FLAG_PLANES
from skydp.pipeline.stamps import round_half_up

FIT_RADIUS_FWHM = 3.0
MIN_PSF_WEIGHT = 0.5
FOOTPRINT_LEVEL = 0.01
_CHUNK = 2048  # positions per block: keeps the (chunk, F, F) temporaries in cache-friendly sizes

FLAG_COLUMNS = [f"pixelFlags_{stem}{suffix}" for stem in FLAG_PLANES for suffix in ("", "Center")]
RESULT_COLUMNS = ["x", "y", "on_image", "psfFlux", "psfFluxErr", "psfFlux_flag", *sorted(FLAG_COLUMNS),
                  "invalidPsfFlag"]


class ForcedPhotometer:
    """An exposure prepared once (fit planes, PSF table, flag offsets) for any number of positions."""

    def __init__(self, exposure: Exposure, phases: int = DEFAULT_PHASES, fit_size: int | None = None) -> None:
        self.exposure = exposure
        planes = fit_planes(exposure)
        self.notes = planes.notes
        self.psf_valid = planes.psf_valid
        if planes.notes:
            exposure.info.warnings.extend(planes.notes)
        ny, nx = exposure.shape
        cx, cy = exposure.xy0[0] + (nx - 1) / 2.0, exposure.xy0[1] + (ny - 1) / 2.0
        kernel = planes.psf.image(cx, cy)
        if fit_size is None:
            # FWHM from the area above half maximum: robust for any PSF (no moments to converge)
            fwhm = 2.0 * np.sqrt(np.count_nonzero(kernel >= 0.5 * kernel.max()) / np.pi)
            fit_size = min(planes.psf.stamp_size, 2 * int(np.ceil(FIT_RADIUS_FWHM * fwhm)) + 1)
        self.table = PhasedPsf(planes.psf, exposure.bbox, fit_size, phases)
        size = self.table.size
        self._data, self._ivar = planes.weighted_data, planes.inverse_variance
        mask = exposure.mask
        self._nodata = mask.bitmask("NO_DATA") if "NO_DATA" in mask.planes else 0
        half = kernel.shape[0] // 2
        dy, dx = np.nonzero(kernel >= FOOTPRINT_LEVEL * kernel.max())
        dx, dy = dx - half, dy - half
        core = (np.abs(dx) <= size // 2) & (np.abs(dy) <= size // 2)
        box_y, box_x = np.mgrid[-1:2, -1:2]
        self._centre_offsets = (box_x.ravel(), box_y.ravel())
        pairs = np.unique(np.column_stack([np.r_[dx[core], box_x.ravel()], np.r_[dy[core], box_y.ravel()]]), axis=0)
        self._core_offsets = (pairs[:, 0], pairs[:, 1])
        self._flag_bits = {stem: mask.bitmask(plane) if plane in mask.planes else 0
                           for stem, plane in FLAG_PLANES.items()}

    def measure(self, x: np.ndarray, y: np.ndarray, aperture_radius: float | None = None) -> dict[str, np.ndarray]:
        """Result columns (see RESULT_COLUMNS) for parent positions (x, y), in input order; with
        ``aperture_radius`` (px) also apFlux, apFluxErr, apFlux_flag (exact circular aperture sum,
        flagged when it extends off the image or holds no usable pixel)."""
        x = np.asarray(x, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        if x.shape != y.shape:
            raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
        n = x.size
        ny, nx = self.exposure.shape
        ax, ay = x - self.exposure.xy0[0], y - self.exposure.xy0[1]
        on_image = (ax >= -0.5) & (ax < nx - 0.5) & (ay >= -0.5) & (ay < ny - 0.5)  # False for NaN too
        flux = np.full(n, np.nan)
        err = np.full(n, np.nan)
        weight_fraction = np.zeros(n)
        core_bits = np.zeros(n, dtype=np.int64)
        centre_bits = np.zeros(n, dtype=np.int64)
        sel = np.flatnonzero(on_image)
        for start in range(0, sel.size, _CHUNK):
            idx = sel[start:start + _CHUNK]
            f, e, w, core, centre = self._fit(x[idx], y[idx], ax[idx], ay[idx])
            flux[idx], err[idx], weight_fraction[idx], core_bits[idx], centre_bits[idx] = f, e, w, core, centre
        out: dict[str, np.ndarray] = {"x": x, "y": y, "on_image": on_image, "psfFlux": flux, "psfFluxErr": err}
        out["psfFlux_flag"] = ~on_image | ~(weight_fraction >= MIN_PSF_WEIGHT) | ~np.isfinite(flux)
        for stem, bit in self._flag_bits.items():
            out[f"pixelFlags_{stem}"] = (core_bits & bit) != 0
            out[f"pixelFlags_{stem}Center"] = (centre_bits & bit) != 0
        out["invalidPsfFlag"] = np.full(n, not self.psf_valid)
        result = {name: out[name] for name in RESULT_COLUMNS}
        if aperture_radius is not None:
            result.update(self._aperture(ax, ay, on_image, aperture_radius))
        return result

    def _aperture(self, ax: np.ndarray, ay: np.ndarray, on_image: np.ndarray, radius: float) -> dict[str, np.ndarray]:
        if not radius > 0:
            raise ValueError(f"aperture_radius must be positive, got {radius}")
        usable = self._ivar > 0
        with np.errstate(divide="ignore"):
            variance = np.where(usable, 1.0 / self._ivar, 0.0).astype(np.float32)
        image = np.where(usable, self.exposure.image, 0.0).astype(np.float32)
        summer = ApertureSummer(image, variance, np.zeros(image.shape, dtype=bool))
        flux = np.full(ax.size, np.nan)
        err = np.full(ax.size, np.nan)
        flag = np.ones(ax.size, dtype=bool)
        sel = np.flatnonzero(on_image)
        f, e, bad = summer.fluxes(ax[sel], ay[sel], (float(radius),))
        flux[sel], err[sel], flag[sel] = f[:, 0], e[:, 0], bad[:, 0]
        return {"apFlux": flux, "apFluxErr": err, "apFlux_flag": flag}

    def _fit(self, x, y, ax, ay):
        cx, cy = round_half_up(ax), round_half_up(ay)
        size = self.table.size
        psf = self.table.images(x, y)
        n = len(x)
        p = psf.reshape(n, -1)
        data = cut(self._data, cx, cy, size).reshape(n, -1)
        ivar = cut(self._ivar, cx, cy, size).reshape(n, -1)
        pp = p * p
        # float32 sums of <= a few thousand terms: relative rounding ~1e-6, far below the noise
        num = np.einsum("np,np->n", p, data).astype(np.float64)
        den = np.einsum("np,np->n", pp, ivar).astype(np.float64)
        total = pp.sum(axis=1, dtype=np.float64)
        pp[ivar == 0] = 0.0
        used = pp.sum(axis=1, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            flux = np.where(den > 0, num / den, np.nan)
            err = np.where(den > 0, 1.0 / np.sqrt(den), np.nan)
            fraction = used / total
        mask = self.exposure.mask.array
        core = np.bitwise_or.reduce(gather(mask, cx, cy, *self._core_offsets, self._nodata), axis=1)
        centre = np.bitwise_or.reduce(gather(mask, cx, cy, *self._centre_offsets, self._nodata), axis=1)
        return flux, err, fraction, core, centre


def forced_photometry_xy(exposure: Exposure, x: np.ndarray, y: np.ndarray, aperture_radius: float | None = None,
                         phases: int = DEFAULT_PHASES, fit_size: int | None = None) -> pa.Table:
    """Forced PSF photometry at parent pixel positions; one row per position, input order
    (columns RESULT_COLUMNS, plus apFlux/apFluxErr/apFlux_flag when ``aperture_radius`` is given)."""
    photometer = ForcedPhotometer(exposure, phases, fit_size)
    if photometer.notes:
        warnings.warn("forced photometry: " + "; ".join(photometer.notes), ExposureMetadataWarning, stacklevel=2)
    return pa.table(photometer.measure(x, y, aperture_radius))


def forced_photometry(exposure: Exposure, ra: np.ndarray, dec: np.ndarray, aperture_radius: float | None = None,
                      phases: int = DEFAULT_PHASES, fit_size: int | None = None) -> pa.Table:
    """Forced PSF photometry at sky positions (degrees); one row per position, input order.

    Positions are mapped with the exposure's full WCS; where the inversion fails (NaN) or lands off
    the image the row has on_image False, psfFlux NaN and psfFlux_flag set.
    """
    ra = np.asarray(ra, dtype=np.float64).ravel()
    dec = np.asarray(dec, dtype=np.float64).ravel()
    if ra.shape != dec.shape:
        raise ValueError(f"ra and dec must have the same length, got {ra.size} and {dec.size}")
    if np.any(np.abs(dec[np.isfinite(dec)]) > 90):
        raise ValueError("dec must be within [-90, 90] degrees")
    x, y = exposure.sky_to_pixel(ra, dec) if ra.size else (ra.copy(), dec.copy())
    return forced_photometry_xy(exposure, x, y, aperture_radius, phases, fit_size)
