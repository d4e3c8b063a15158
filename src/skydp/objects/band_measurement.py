"""Measurements of every Object on one band's coadd.

Rows are the deblended (or isolated) sources, measured on their own footprint pixels (the
"labels" plane), followed by the blend parents, measured on the whole parent footprint (the
"parents" plane); pixels of any other footprint are excluded from every fit and sum, the
expectation of LSST's noise replacement on a background-subtracted image.

- unforced: PSF-fit centroid and PSF flux from the detection peak (``centroid_*``, ``free_psfFlux``);
- forced at the reference-band position: PSF flux, circular apertures (exact overlap), adaptive
  moments and GaussianFlux, the PSF model's moments, Kron radius and flux (sep, with the
  reference-band ellipse), blendedness, pixel flags, input count;
- aperture correction (LSST MeasureApCorrTask on the coadd): psfFlux, free_psfFlux and gaussianFlux
  are scaled to the 12-px aperture flux divided by the PSF model's encircled energy, with a
  Chebyshev field fitted on bright stars of this coadd whose calibration aperture loses no flux to
  other footprints (no correction when there are too few stars).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sep
from scipy.interpolate import RegularGridInterpolator

from skydp.objects.config import CALIB_APERTURE_RADIUS, OBJECT_APERTURE_RADII, ObjectConfig
from skydp.objects.detection import BandPlanes
from skydp.pipeline.aperture_correction import fit_aperture_correction
from skydp.pipeline.apertures import ApertureSummer
from skydp.pipeline.detection import Footprints
from skydp.pipeline.moments import adaptive_moments
from skydp.pipeline.pixel_flags import footprint_mask_bits
from skydp.pipeline.psf_photometry import fit_psf, measurement_stamps
from skydp.pipeline.stamps import StampCutter, round_half_up

# Object pixelFlags stem -> mask plane, and the stems that also have a 3x3-centre variant
PIXEL_FLAG_PLANES = {"nodata": "NO_DATA", "cr": "CR", "interpolated": "INTRP", "saturated": "SAT",
                     "clipped": "CLIPPED", "sensor_edge": "SENSOR_EDGE"}
CENTER_FLAGS = ("cr", "interpolated", "saturated", "clipped", "sensor_edge")
EE_GRID = 5  # the PSF's encircled energy is evaluated on EE_GRID x EE_GRID points and interpolated


@dataclass
class RowGroups:
    """Which footprint plane and label each catalogue row is measured on.

    Rows [0, n_children) use plane "labels" (deblended sources) with ``labels``; the remaining rows
    use plane "parents" (blend parents) with ``parent_labels``.
    """

    labels: np.ndarray
    parent_labels: np.ndarray

    @property
    def n_children(self) -> int:
        return len(self.labels)

    def split(self, values: np.ndarray) -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
        """(plane, labels, values of those rows) for the two groups."""
        n = self.n_children
        return (("labels", self.labels, values[:n]), ("parents", self.parent_labels, values[n:]))


@dataclass
class Ellipse:
    """Reference-band aperture ellipse per row: covariance (cxx, cyy, cxy) px^2."""

    cxx: np.ndarray
    cyy: np.ndarray
    cxy: np.ndarray

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Semi-axes a >= b (the 1-sigma ellipse) and position angle theta in [-pi/2, pi/2] (sep's convention)."""
        mean = 0.5 * (self.cxx + self.cyy)
        half = np.hypot(0.5 * (self.cxx - self.cyy), self.cxy)
        a = np.sqrt(mean + half)
        b = np.sqrt(np.maximum(mean - half, 0.0))
        theta = 0.5 * np.arctan2(2 * self.cxy, self.cxx - self.cyy)
        return a, b, theta


class BandMeasurer:
    """Measures all rows on one band's coadd; positions are array-frame pixels."""

    def __init__(self, planes: BandPlanes, found: Footprints, groups: RowGroups, config: ObjectConfig) -> None:
        self.planes = planes
        self.found = found
        self.groups = groups
        self.config = config
        exp = planes.exposure
        self.psf = exp.psf
        self.size = self.psf.stamp_size
        self.msize = max(config.moments_stamp_size, self.size)
        self.cutter = StampCutter(self.msize // 2 + 2)
        self.cutter.add("image", planes.image)
        self.cutter.add("variance", planes.variance)
        self.cutter.add("bad", planes.unusable, fill=True)
        self.cutter.add("labels", found.segmap)
        self.cutter.add("parents", found.parent_map)
        self.cutter.add("mask", exp.mask.array, fill=exp.mask.bitmask("NO_DATA") if "NO_DATA" in exp.mask.planes else 0)

    def _psf_at(self, xa: np.ndarray, ya: np.ndarray) -> np.ndarray:
        ox, oy = self.planes.exposure.xy0
        return self.psf.images_at(xa + ox, ya + oy)

    def _fit(self, x: np.ndarray, y: np.ndarray, fit_centroid: bool) -> dict[str, np.ndarray]:
        parts = []
        for (plane, labels, xs), (_, _, ys) in zip(self.groups.split(x), self.groups.split(y)):
            parts.append(fit_psf(self.cutter, self._psf_at, xs, ys, plane, labels, self.size,
                                 np.full(len(xs), fit_centroid)))
        return {name: np.concatenate([getattr(p, name) for p in parts])
                for name in ("x", "y", "x_err", "y_err", "xy_cov", "centroid_flag", "flux", "flux_err",
                             "flux_flag", "psf")}

    def unforced(self, x_peak: np.ndarray, y_peak: np.ndarray) -> dict[str, np.ndarray]:
        """PSF-fit centroid and free PSF flux starting at the detection peaks."""
        fit = self._fit(x_peak, y_peak, True)
        return {"centroid_x": fit["x"], "centroid_y": fit["y"], "centroid_xErr": fit["x_err"],
                "centroid_yErr": fit["y_err"], "_centroid_xy_cov": fit["xy_cov"],
                "centroid_flag": fit["centroid_flag"], "free_psfFlux": fit["flux"],
                "free_psfFluxErr": fit["flux_err"], "free_psfFlux_flag": fit["flux_flag"]}

    def moments(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Adaptive moments and GaussianFlux of the object and moments of the PSF model at (x, y)."""
        out: dict[str, list] = {k: [] for k in ("ixx", "iyy", "ixy", "i_flag", "gaussianFlux",
                                                "gaussianFluxErr", "gaussianFlux_flag")}
        for (plane, labels, xs), (_, _, ys) in zip(self.groups.split(x), self.groups.split(y)):
            data, var, good = measurement_stamps(self.cutter, xs, ys, plane, labels, self.msize)
            dx, dy = xs - round_half_up(xs), ys - round_half_up(ys)
            mom = adaptive_moments(data, var, good, dx, dy, np.full(len(xs), self.planes.sigma))
            for key, value in (("ixx", mom.ixx), ("iyy", mom.iyy), ("ixy", mom.ixy), ("i_flag", mom.flag),
                               ("gaussianFlux", mom.gaussian_flux), ("gaussianFluxErr", mom.gaussian_flux_err),
                               ("gaussianFlux_flag", mom.flag)):
                out[key].append(value)
        cols = {k: np.concatenate(v) for k, v in out.items()}
        psf = self._psf_at(x, y)
        dx, dy = x - round_half_up(x), y - round_half_up(y)
        pmom = adaptive_moments(psf, np.zeros_like(psf), np.ones(psf.shape, bool), dx, dy,
                                np.full(len(x), self.planes.sigma))
        cols.update(ixxPSF=pmom.ixx, iyyPSF=pmom.iyy, ixyPSF=pmom.ixy, iPSF_flag=pmom.flag)
        return cols

    def forced(self, x: np.ndarray, y: np.ndarray, ellipse: Ellipse, kron_scale: np.ndarray
               ) -> dict[str, np.ndarray]:
        """Forced PSF flux, apertures, Kron flux (aperture ``kron_scale`` x the ellipse), blendedness
        and pixel flags at (x, y)."""
        fit = self._fit(x, y, False)
        cols = {"psfFlux": fit["flux"], "psfFluxErr": fit["flux_err"], "psfFlux_flag": fit["flux_flag"]}
        cols.update(self._apertures(x, y))
        cols.update(self._kron_flux(x, y, ellipse, kron_scale))
        cols.update(self._blendedness(x, y, ellipse))
        cols.update(self._pixel_flags(x, y))
        return cols

    def _apertures(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        summer = ApertureSummer(self.planes.image, self.planes.variance, self.found.segmap > 0)
        parts = [summer.fluxes(xs, ys, OBJECT_APERTURE_RADII, self.found.segmap if plane == "labels"
                               else self.found.parent_map, labels)
                 for (plane, labels, xs), (_, _, ys) in zip(self.groups.split(x), self.groups.split(y))]
        flux, err, flag = (np.concatenate([p[i] for p in parts]) for i in range(3))
        cols = {}
        for j, r in enumerate(OBJECT_APERTURE_RADII):
            cols[f"ap{r:02d}Flux"], cols[f"ap{r:02d}FluxErr"], cols[f"ap{r:02d}Flux_flag"] = flux[:, j], err[:, j], flag[:, j]
        calib = f"ap{CALIB_APERTURE_RADIUS:02d}"
        cols["calibFlux"], cols["calibFluxErr"], cols["calibFlux_flag"] = (
            cols[f"{calib}Flux"], cols[f"{calib}FluxErr"], cols[f"{calib}Flux_flag"])
        return cols

    def _sep_groups(self, x: np.ndarray, y: np.ndarray, ellipse: Ellipse, valid: np.ndarray):
        """Per row group: (rows, segmap, seg_id, x, y, a, b, theta) of the rows with a usable ellipse,
        for sep calls that exclude other footprints' pixels (segmap/seg_id: dropped, not rescaled)."""
        a, b, theta = ellipse.axes()
        valid = valid & np.isfinite(a) & np.isfinite(b) & (b > 0)
        n = self.groups.n_children
        for segmap, labels, offset in ((self.found.segmap, self.groups.labels, 0),
                                       (self.found.parent_map, self.groups.parent_labels, n)):
            rows = offset + np.flatnonzero(valid[offset:offset + len(labels)])
            if rows.size:
                yield (rows, segmap, labels[rows - offset].astype(np.int32), x[rows], y[rows], a[rows], b[rows],
                       theta[rows])

    def kron_radius(self, x: np.ndarray, y: np.ndarray, ellipse: Ellipse) -> tuple[np.ndarray, np.ndarray]:
        """sep (SExtractor) first-moment radius within kron_moment_extent ellipse sigmas: in units of the
        ellipse axes, and as sqrt(a b) in pixels (the kronRad column); NaN where it is not positive."""
        units = np.full(len(x), np.nan)
        for rows, segmap, seg_id, xs, ys, a, b, theta in self._sep_groups(x, y, ellipse, np.ones(len(x), bool)):
            kr, flag = sep.kron_radius(self.planes.image, xs, ys, a, b, theta, self.config.kron_moment_extent,
                                       segmap=segmap, seg_id=seg_id)
            units[rows] = np.where((kr > 0) & ((flag & sep.APER_NONPOSITIVE) == 0), kr, np.nan)
        a, b, _ = ellipse.axes()
        return units, units * np.sqrt(a * b)

    def _kron_flux(self, x: np.ndarray, y: np.ndarray, ellipse: Ellipse, scale: np.ndarray) -> dict[str, np.ndarray]:
        """Flux in the ellipse scaled by ``scale`` (exact overlap; other footprints excluded)."""
        n = len(x)
        flux, err = np.full(n, np.nan), np.full(n, np.nan)
        flag = np.ones(n, dtype=bool)
        valid = np.isfinite(scale) & (scale > 0)
        for rows, segmap, seg_id, xs, ys, a, b, theta in self._sep_groups(x, y, ellipse, valid):
            f, e, fflag = sep.sum_ellipse(self.planes.image, xs, ys, a, b, theta, r=scale[rows],
                                          var=self.planes.variance, segmap=segmap, seg_id=seg_id, subpix=0)
            flux[rows], err[rows] = f, e
            flag[rows] = ((fflag & sep.APER_TRUNC) != 0) | ~(e > 0)
        return {"kronFlux": flux, "kronFluxErr": err, "kronFlux_flag": flag}

    def _blendedness(self, x: np.ndarray, y: np.ndarray, ellipse: Ellipse) -> dict[str, np.ndarray]:
        """1 - sum(W |child|) / sum(W |parent|) with W the Gaussian of the reference ellipse (LSST
        base_Blendedness "abs" variant): the child is the object's own footprint, the parent the whole
        parent footprint; 0 for an isolated object and for a blend parent itself."""
        s = self.msize
        cx, cy = round_half_up(x), round_half_up(y)
        grid = np.arange(s, dtype=np.float64) - s // 2
        u = grid[None, None, :] - (x - cx)[:, None, None]
        v = grid[None, :, None] - (y - cy)[:, None, None]
        det = ellipse.cxx * ellipse.cyy - ellipse.cxy**2
        with np.errstate(invalid="ignore", divide="ignore"):
            q = (ellipse.cyy[:, None, None] * u * u + ellipse.cxx[:, None, None] * v * v
                 - 2 * ellipse.cxy[:, None, None] * u * v) / det[:, None, None]
        weight = np.exp(-0.5 * q)
        data = np.abs(self.cutter.cut("image", cx, cy, s)) * ~self.cutter.cut("bad", cx, cy, s)
        parents = self.cutter.cut("parents", cx, cy, s)
        n = self.groups.n_children
        own_parent = np.concatenate([self.found.parent[self.groups.labels - 1], self.groups.parent_labels])
        in_parent = parents == own_parent[:, None, None]
        in_child = in_parent.copy()
        in_child[:n] &= self.cutter.cut("labels", cx[:n], cy[:n], s) == self.groups.labels[:, None, None]
        wd = weight * data
        with np.errstate(invalid="ignore", divide="ignore"):
            value = 1.0 - np.einsum("nij,nij->n", wd, in_child) / np.einsum("nij,nij->n", wd, in_parent)
        ok = np.isfinite(value) & (det > 0)
        return {"blendedness": np.where(ok, value, np.nan), "blendedness_flag": ~ok}

    def _pixel_flags(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Mask planes anywhere in the footprint (or the 3x3 centre box) and in the 3x3 centre box."""
        mask = self.planes.exposure.mask
        present = {stem: plane for stem, plane in PIXEL_FLAG_PLANES.items() if plane in mask.planes}
        bits = mask.bitmask(*present.values()) if present else 0
        fp_bits = np.concatenate([
            np.r_[0, footprint_mask_bits(mask.array, self.found.segmap, len(self.found.x), bits)][self.groups.labels],
            np.r_[0, footprint_mask_bits(mask.array, self.found.parent_map, self.found.n_parents, bits)][
                self.groups.parent_labels],
        ]) if len(x) else np.zeros(0, dtype=np.int64)
        centre = (np.bitwise_or.reduce(self.cutter.cut("mask", round_half_up(x), round_half_up(y), 3)
                                       .reshape(len(x), -1), axis=1) if len(x) else np.zeros(0, dtype=np.int64))
        cols = {}
        for stem in PIXEL_FLAG_PLANES:
            bit = mask.bitmask(present[stem]) if stem in present else 0
            cols[f"pixelFlags_{stem}"] = ((fp_bits & bit) != 0) | ((centre & bit) != 0)
            if stem in CENTER_FLAGS:
                cols[f"pixelFlags_{stem}Center"] = (centre & bit) != 0
        return cols

    def aperture_loss(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per deblended-source row (the first ``n_children`` rows of x, y), the fraction of the PSF
        model's flux in the calibration aperture that falls on pixels the aperture sum leaves out
        (other footprints, unusable pixels): ap12 / EE of such a star is biased low by about that
        fraction, so it cannot calibrate the aperture correction."""
        x, y = x[:self.groups.n_children], y[:self.groups.n_children]
        size = min(2 * CALIB_APERTURE_RADIUS + 1, self.size)
        half, c = size // 2, self.size // 2
        _, _, good = measurement_stamps(self.cutter, x, y, "labels", self.groups.labels, size)
        psf = self._psf_at(x, y)[:, c - half:c + half + 1, c - half:c + half + 1]
        grid = np.arange(size) - half
        dx = grid[None, None, :] - (x - round_half_up(x))[:, None, None]
        dy = grid[None, :, None] - (y - round_half_up(y))[:, None, None]
        inside = dx * dx + dy * dy <= CALIB_APERTURE_RADIUS**2
        return np.einsum("nij,nij->n", psf, inside & ~good) / np.einsum("nij,nij->n", psf, inside)

    def encircled_energy(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fraction of the PSF model inside the calibration aperture, interpolated from a coarse grid
        (it varies slowly over a patch); exact circle overlap by sep."""
        ny, nx = self.planes.image.shape
        ox, oy = self.planes.exposure.xy0
        gx, gy = np.linspace(0, nx - 1, EE_GRID), np.linspace(0, ny - 1, EE_GRID)
        c = float(self.size // 2)
        ee = np.array([[sep.sum_circle(np.ascontiguousarray(self.psf.image(xx + ox, yy + oy)), [c], [c],
                                       float(CALIB_APERTURE_RADIUS), subpix=0)[0][0] for xx in gx] for yy in gy])
        interp = RegularGridInterpolator((gy, gx), ee, bounds_error=False, fill_value=None)
        return interp(np.column_stack([np.clip(y, 0, ny - 1), np.clip(x, 0, nx - 1)]))


def apply_aperture_correction(cols: dict[str, np.ndarray], ee: np.ndarray, stars: np.ndarray,
                              x: np.ndarray, y: np.ndarray, shape: tuple[int, int], order: int,
                              systematic: float) -> None:
    """Scale psfFlux, free_psfFlux and gaussianFlux (and errors) to ap12 / EE with fields fitted on ``stars``.

    ``systematic`` (a fraction of the reference flux) is added in quadrature to each star's
    reference error, so that the few brightest stars, whose photon noise is far below the scatter
    of their apertures' contamination, do not set the correction alone."""
    reference = cols["calibFlux"] / ee
    reference_err = np.hypot(cols["calibFluxErr"] / ee, systematic * reference)
    for model, targets in (("psfFlux", ("psfFlux", "free_psfFlux")), ("gaussianFlux", ("gaussianFlux",))):
        field = fit_aperture_correction(x[stars], y[stars], reference[stars], reference_err[stars],
                                        cols[model][stars], cols[f"{model}Err"][stars], shape, order)
        corr = field(x, y)
        for name in targets:
            cols[name] = cols[name] * corr
            cols[f"{name}Err"] = cols[f"{name}Err"] * corr
