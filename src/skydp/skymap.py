"""LSST-style "rings" sky map: tracts (TAN projections) in declination rings, split into patches.

Geometry follows ``lsst.skymap.RingsSkyMap``: ``num_rings`` declination rings of height
``ring = 180 deg / (num_rings + 1)`` between two polar-cap tracts of radius ``ring / 2``; ring ``r``
holds ``int(2 pi cos(dec_eq) / ring) + 1`` tracts (``dec_eq`` the ring edge nearer the equator),
centred at ``ra_start + i * 360 / n``. Tract 0 is the south cap, then ring by ring from the south,
the last tract is the north cap. With the defaults (120 rings) there are 18938 tracts, as in LSST's
``lsst_cells_v1`` and ``skydp.ids.N_TRACTS``.

A position's tract is the one whose *inner region* (its ring cell, or cap) holds it. Every tract has
the same pixel grid: a TAN projection at the tract centre (north up, east left) and
``patches_per_side``^2 patches of ``patch_inner`` px plus ``patch_border`` px on each side. The
inner patches tile tract pixels [0, patches_per_side * patch_inner)^2, centred on the tract centre,
which is larger than the tract's inner region (checked at construction), so tracts overlap and every
position is patch-inner in exactly one patch of its own tract. Patch index = px + py * patches_per_side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from skydp.ids import N_PATCHES, N_TRACTS

_TRACT_MARGIN = 1.02  # the patch grid must exceed the tract inner region by at least 2 %


@dataclass(frozen=True)
class PatchInfo:
    """One patch: its WCS in the patch ARRAY frame, its place in the tract frame and its inner box."""

    tract: int
    patch: int
    wcs: WCS  # tract TAN projection; array pixel (0, 0) = tract pixel xy0
    xy0: tuple[int, int]  # tract pixel of the outer array pixel (0, 0)
    shape: tuple[int, int]  # (ny, nx) of the outer region (inner + border)
    inner_bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1) tract pixels, end-exclusive

    @property
    def outer_bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) tract pixels of the whole patch array, end-exclusive."""
        x0, y0 = self.xy0
        return x0, y0, x0 + self.shape[1], y0 + self.shape[0]

    @property
    def index(self) -> tuple[int, int]:
        """(px, py) position of the patch in its tract's patch grid."""
        side = self.inner_bbox[2] - self.inner_bbox[0]
        return self.inner_bbox[0] // side, self.inner_bbox[1] // side


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


class SkyMap:
    """Rings sky map (see module docstring); all lookups are vectorised over positions."""

    def __init__(self, num_rings: int = 120, pixel_scale: float = 0.2, patch_inner: int = 4000,
                 patch_border: int = 100, patches_per_side: int = 10, ra_start: float = 0.0) -> None:
        if num_rings < 1:
            raise ValueError(f"SkyMap num_rings must be >= 1, got {num_rings}")
        if pixel_scale <= 0 or patch_inner < 1 or patch_border < 0 or patches_per_side < 1:
            raise ValueError(f"SkyMap: pixel_scale={pixel_scale}, patch_inner={patch_inner}, "
                             f"patch_border={patch_border}, patches_per_side={patches_per_side} must be positive")
        if patches_per_side**2 > N_PATCHES:
            raise ValueError(f"SkyMap patches_per_side={patches_per_side}: more than skydp.ids.N_PATCHES={N_PATCHES} patches")
        self.num_rings = int(num_rings)
        self.pixel_scale = float(pixel_scale)
        self.patch_inner = int(patch_inner)
        self.patch_border = int(patch_border)
        self.patches_per_side = int(patches_per_side)
        self.ra_start = float(ra_start)
        self.ring_size = 180.0 / (num_rings + 1)  # degrees
        starts = self.ring_size * (np.arange(num_rings) + 0.5) - 90.0
        dec_eq = np.minimum(np.abs(starts), np.abs(starts + self.ring_size))
        self.ring_starts = starts
        self.ring_counts = (2 * np.pi * np.cos(np.radians(dec_eq)) / np.radians(self.ring_size)).astype(int) + 1
        self.ring_first = 1 + np.concatenate([[0], np.cumsum(self.ring_counts)[:-1]])  # tract id of each ring's tract 0
        self.num_tracts = int(self.ring_counts.sum()) + 2
        if self.num_tracts > N_TRACTS:
            raise ValueError(f"SkyMap with {num_rings} rings has {self.num_tracts} tracts, more than "
                             f"skydp.ids.N_TRACTS={N_TRACTS} (objectId packing)")
        self.tract_size = self.patches_per_side * self.patch_inner  # tract pixels per side (inner patches)
        half_grid = np.degrees(np.arctan(np.radians(self.tract_size / 2 * self.pixel_scale / 3600.0)))
        if half_grid < _TRACT_MARGIN * self._inner_half_extent():
            raise ValueError(f"SkyMap: {patches_per_side} x {patch_inner} px patches at {pixel_scale}\"/px "
                             f"({2 * half_grid:.3f} deg) do not cover a tract inner region of ring size "
                             f"{self.ring_size:.3f} deg; use more rings or larger patches")
        ra_c, dec_c = self._all_centres()
        self._centre_ra, self._centre_dec = ra_c, dec_c
        self._centre_vectors = _unit_vectors(ra_c, dec_c)

    def _inner_half_extent(self) -> float:
        """Largest tangent-plane half-extent (deg) of any tract inner region, with curvature slack."""
        return 0.5 * self.ring_size * 1.05

    def _all_centres(self) -> tuple[np.ndarray, np.ndarray]:
        ra = [0.0]
        dec = [-90.0]
        for start, count in zip(self.ring_starts, self.ring_counts):
            ra.extend((self.ra_start + np.arange(count) * 360.0 / count) % 360.0)
            dec.extend([start + 0.5 * self.ring_size] * count)
        ra.append(0.0)
        dec.append(90.0)
        return np.array(ra), np.array(dec)

    def __repr__(self) -> str:
        return (f"SkyMap(num_rings={self.num_rings}, pixel_scale={self.pixel_scale}, patch_inner={self.patch_inner}, "
                f"patch_border={self.patch_border}, patches_per_side={self.patches_per_side}, tracts={self.num_tracts})")

    # --- tracts -------------------------------------------------------------------------------

    def _check_tract(self, tract: int) -> int:
        tract = int(tract)
        if not 0 <= tract < self.num_tracts:
            raise ValueError(f"tract {tract} outside [0, {self.num_tracts})")
        return tract

    def tract_center(self, tract: int) -> tuple[float, float]:
        """(ra, dec) of the tract centre (its TAN projection point), degrees."""
        tract = self._check_tract(tract)
        return float(self._centre_ra[tract]), float(self._centre_dec[tract])

    def tract_wcs(self, tract: int) -> WCS:
        """TAN WCS of the tract pixel frame (0-based tract pixel (t-1)/2 at the centre, north up, east left)."""
        ra, dec = self.tract_center(tract)
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.crval = [ra, dec]
        wcs.wcs.crpix = [self.tract_size / 2 + 0.5, self.tract_size / 2 + 0.5]  # 1-based: 0-based (t-1)/2
        scale = self.pixel_scale / 3600.0
        wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
        wcs.wcs.lonpole = 180.0  # north up also for the polar caps (wcslib would pick 0 at dec0 = +90)
        wcs.wcs.radesys = "ICRS"
        return wcs

    def find_tract(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Tract whose inner region holds each position (vectorised)."""
        ra = np.mod(np.asarray(ra, dtype=float), 360.0)
        dec = np.asarray(dec, dtype=float)
        if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))) or np.any(np.abs(dec) > 90):
            raise ValueError("find_tract: ra/dec must be finite with |dec| <= 90")
        ring = np.floor((dec - self.ring_starts[0]) / self.ring_size).astype(int)
        in_ring = (ring >= 0) & (ring < self.num_rings)
        r = np.clip(ring, 0, self.num_rings - 1)
        count = self.ring_counts[r]
        index = np.floor(0.5 + np.mod(ra - self.ra_start, 360.0) * count / 360.0).astype(int) % count
        tract = np.where(in_ring, self.ring_first[r] + index, np.where(ring < 0, 0, self.num_tracts - 1))
        return tract

    def is_tract_inner(self, tract: int, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """True where ``tract`` is the tract whose inner region holds the position."""
        return self.find_tract(ra, dec) == self._check_tract(tract)

    def tract_pixels(self, tract: int | np.ndarray, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based tract pixel (x, y) of sky positions (``tract`` scalar or per position); NaN when
        the position is 90 deg or more from the tract centre. Same mapping as ``tract_wcs``."""
        tract = np.asarray(tract)
        if np.any((tract < 0) | (tract >= self.num_tracts)):
            raise ValueError(f"tract ids must be in [0, {self.num_tracts})")
        ra, dec, tract = np.broadcast_arrays(np.asarray(ra, dtype=float), np.asarray(dec, dtype=float), tract)
        r, d = np.radians(ra), np.radians(dec)
        r0, d0 = np.radians(self._centre_ra[tract]), np.radians(self._centre_dec[tract])
        cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(r - r0)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = np.cos(d) * np.sin(r - r0) / cos_c
            eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(r - r0)) / cos_c
        scale = np.radians(self.pixel_scale / 3600.0)
        centre = (self.tract_size - 1) / 2.0
        x = np.where(cos_c > 0, centre - xi / scale, np.nan)
        y = np.where(cos_c > 0, centre + eta / scale, np.nan)
        return x, y

    # --- patches ------------------------------------------------------------------------------

    def _check_patch(self, patch: int) -> tuple[int, int]:
        patch = int(patch)
        if not 0 <= patch < self.patches_per_side**2:
            raise ValueError(f"patch {patch} outside [0, {self.patches_per_side**2})")
        return patch % self.patches_per_side, patch // self.patches_per_side

    def patch_index(self, tract: int | np.ndarray, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """Patch of ``tract`` (scalar or per position) whose inner box holds each position (clipped to the grid)."""
        x, y = self.tract_pixels(tract, ra, dec)
        side = self.patches_per_side
        # pixel i spans [i - 0.5, i + 0.5): the inner box of pixels x0..x1-1 spans [x0 - 0.5, x1 - 0.5)
        px = np.clip(np.floor((np.nan_to_num(x, nan=-1.0) + 0.5) / self.patch_inner), 0, side - 1).astype(int)
        py = np.clip(np.floor((np.nan_to_num(y, nan=-1.0) + 0.5) / self.patch_inner), 0, side - 1).astype(int)
        return px + py * side

    def find_tract_patch(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(tract, patch) whose INNER regions hold each position."""
        tract = self.find_tract(ra, dec)
        return tract, self.patch_index(tract, ra, dec)

    def patch_info(self, tract: int, patch: int) -> PatchInfo:
        """Geometry of one patch; its WCS is in the patch ARRAY frame (outer pixel (0, 0))."""
        tract = self._check_tract(tract)
        px, py = self._check_patch(patch)
        inner = (px * self.patch_inner, py * self.patch_inner,
                 (px + 1) * self.patch_inner, (py + 1) * self.patch_inner)
        xy0 = (inner[0] - self.patch_border, inner[1] - self.patch_border)
        n = self.patch_inner + 2 * self.patch_border
        wcs = self.tract_wcs(tract)
        wcs.wcs.crpix = wcs.wcs.crpix - np.array(xy0, dtype=float)
        return PatchInfo(tract=tract, patch=int(patch), wcs=wcs, xy0=xy0, shape=(n, n), inner_bbox=inner)

    def is_patch_inner(self, tract: int, patch: int, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """True where the position is inside the patch's inner box (in that tract's pixel frame)."""
        x0, y0, x1, y1 = self.patch_info(tract, patch).inner_bbox
        x, y = self.tract_pixels(tract, ra, dec)
        with np.errstate(invalid="ignore"):
            return (x >= x0 - 0.5) & (x < x1 - 0.5) & (y >= y0 - 0.5) & (y < y1 - 0.5)

    def patches_overlapping(self, ra: np.ndarray, dec: np.ndarray) -> list[tuple[int, int]]:
        """(tract, patch) pairs whose OUTER region overlaps the convex polygon with these corners.

        Candidate tracts are those whose centre lies within the tract radius plus the polygon radius;
        the polygon is projected into each candidate's pixel frame and tested against every patch's
        outer box with the separating-axis theorem (exact for a convex polygon with straight edges in
        the tangent plane, which a detector footprint is to far below a pixel).
        """
        ra = np.atleast_1d(np.asarray(ra, dtype=float))
        dec = np.atleast_1d(np.asarray(dec, dtype=float))
        if ra.shape != dec.shape or ra.size < 3:
            raise ValueError(f"patches_overlapping needs >= 3 polygon corners, got ra{ra.shape} dec{dec.shape}")
        corners = _unit_vectors(ra, dec)
        centre = corners.mean(axis=0)
        centre /= np.linalg.norm(centre)
        poly_radius = np.degrees(np.arccos(np.clip(corners @ centre, -1, 1)).max())
        tract_radius = np.degrees(np.arctan(np.radians(self.tract_size * np.sqrt(0.5) * self.pixel_scale / 3600.0)))
        sep = np.degrees(np.arccos(np.clip(self._centre_vectors @ centre, -1, 1)))
        candidates = np.flatnonzero(sep <= tract_radius + poly_radius + 0.01)
        found = []
        side, b = self.patches_per_side, self.patch_border
        grid = np.arange(side) * self.patch_inner
        lo_x, lo_y = np.meshgrid(grid - b, grid - b)
        boxes = np.stack([lo_x.ravel(), lo_y.ravel()], axis=1) - 0.5  # pixel edges
        size = self.patch_inner + 2 * b
        for tract in candidates:
            x, y = self.tract_pixels(int(tract), ra, dec)
            if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
                continue
            hit = _convex_polygon_hits_boxes(np.column_stack([x, y]), boxes, size)
            found.extend((int(tract), int(p)) for p in np.flatnonzero(hit))
        return found

    def coverage(self, tract: int, patches: Sequence[int], ra: np.ndarray, dec: np.ndarray,
                 samples: int = 32) -> float:
        """Fraction of the quadrilateral with corners (ra, dec) (in order around it, e.g. an
        image's ll, ul, ur, lr) that the outer regions of ``patches`` of ``tract`` cover: the share of
        a samples x samples grid of points, bilinear between the corners in the tract's pixel frame
        (a detector is a quadrilateral there to far below a pixel)."""
        ra = np.asarray(ra, dtype=float)
        dec = np.asarray(dec, dtype=float)
        if ra.shape != (4,) or dec.shape != (4,):
            raise ValueError(f"coverage needs the 4 corners of a quadrilateral, got ra{ra.shape} dec{dec.shape}")
        x, y = self.tract_pixels(self._check_tract(tract), ra, dec)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))) or not len(patches):
            return 0.0
        t = (np.arange(samples) + 0.5) / samples
        u, v = np.meshgrid(t, t)  # u: from edge ll-ul to edge lr-ur, v: from ll to ul
        px = (1 - u) * ((1 - v) * x[0] + v * x[1]) + u * ((1 - v) * x[3] + v * x[2])
        py = (1 - u) * ((1 - v) * y[0] + v * y[1]) + u * ((1 - v) * y[3] + v * y[2])
        inside = np.zeros(px.shape, dtype=bool)
        for patch in patches:
            x0, y0, x1, y1 = self.patch_info(tract, patch).outer_bbox
            inside |= (px >= x0 - 0.5) & (px < x1 - 0.5) & (py >= y0 - 0.5) & (py < y1 - 0.5)
        return float(inside.mean())


def _convex_polygon_hits_boxes(poly: np.ndarray, lows: np.ndarray, size: float) -> np.ndarray:
    """Separating-axis test of one convex polygon (M, 2) against axis-aligned squares [low, low + size)."""
    hit = ((poly[:, 0].max() >= lows[:, 0]) & (poly[:, 0].min() < lows[:, 0] + size)
           & (poly[:, 1].max() >= lows[:, 1]) & (poly[:, 1].min() < lows[:, 1] + size))
    offsets = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=float)
    box_corners = lows[:, None, :] + offsets[None]  # (B, 4, 2)
    edges = np.roll(poly, -1, axis=0) - poly
    for edge in edges:
        normal = np.array([-edge[1], edge[0]])
        p = poly @ normal
        q = box_corners @ normal
        hit &= (q.max(axis=1) >= p.min()) & (q.min(axis=1) <= p.max())
    return hit


DEFAULT_SKYMAP = SkyMap()
