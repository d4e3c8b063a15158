"""What a coadd records about its inputs: the coadd PSF (weighted sum of the input PSFs), the
coadd's metadata and the table of input visits and detectors (LSST's coadd ``inputs``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from skydp.exposure import Exposure, PixelPsf, VisitInfo

PSF_GRID = 5  # coadd PSF stamps per side
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def psf_sigma(exposure: Exposure) -> float:
    """PSF determinant radius (px) at the middle of the PSF's stamp positions; NaN without a PSF."""
    if exposure.psf is None:
        return math.nan
    try:
        return float(exposure.psf.shape(float(np.mean(exposure.psf.x)), float(np.mean(exposure.psf.y))).sigma)
    except ValueError:
        return math.nan


def covered_box(rows: np.ndarray, cols: np.ndarray, xy0: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) parent-pixel box, end-exclusive, of the rows and columns (bool per array row
    and column) that hold a finite pixel; None when none does."""
    r, c = np.flatnonzero(rows), np.flatnonzero(cols)
    if r.size == 0 or c.size == 0:
        return None
    return xy0[0] + int(c[0]), xy0[1] + int(r[0]), xy0[0] + int(c[-1]) + 1, xy0[1] + int(r[-1]) + 1


def inputs_table(warps: Sequence[Exposure], weights: np.ndarray, sigmas: np.ndarray, n_used: np.ndarray,
                 n_clipped: np.ndarray, boxes: Sequence[tuple[int, int, int, int] | None]) -> pa.Table:
    """One row per input warp: visit, detector, band, weight, mjd (start, TAI), exptime, seeing
    (PSF FWHM, arcsec), psf_sigma (px), used and clipped pixel counts, and the box the input
    covers on the coadd grid (``boxes``: x0, y0, x1, y1 parent px, see ``covered_box``; ra/dec of
    its 4 corners ll, ul, ur, lr)."""
    rows: dict[str, list] = {k: [] for k in ("visit", "detector", "band", "physical_filter", "weight", "mjd",
                                             "exptime", "seeing", "psf_sigma", "n_pixels", "n_clipped",
                                             "bbox", "corner_ra", "corner_dec")}
    for warp, weight, sigma, used, clipped, box in zip(warps, weights, sigmas, n_used, n_clipped, boxes):
        rows["visit"].append(int(warp.info.visit))
        rows["detector"].append(int(warp.info.detector))
        rows["band"].append(warp.info.band)
        rows["physical_filter"].append(warp.info.physical_filter)
        rows["weight"].append(float(weight))
        rows["mjd"].append(float(warp.info.mjd))
        rows["exptime"].append(float(warp.info.exptime))
        scale = warp.pixel_scale()
        rows["seeing"].append(float(sigma) * _FWHM_PER_SIGMA * scale)
        rows["psf_sigma"].append(float(sigma))
        rows["n_pixels"].append(int(used))
        rows["n_clipped"].append(int(clipped))
        if box is None:
            rows["bbox"].append(None)
            rows["corner_ra"].append(None)
            rows["corner_dec"].append(None)
        else:
            x0, y0, x1, y1 = box
            ra, dec = warp.pixel_to_sky(np.array([x0, x0, x1, x1]) - 0.5, np.array([y0, y1, y1, y0]) - 0.5)
            rows["bbox"].append(list(box))
            rows["corner_ra"].append([float(v) for v in ra])
            rows["corner_dec"].append([float(v) for v in dec])
    schema = pa.schema([
        ("visit", pa.int64()), ("detector", pa.int32()), ("band", pa.string()), ("physical_filter", pa.string()),
        ("weight", pa.float64()), ("mjd", pa.float64()), ("exptime", pa.float64()), ("seeing", pa.float64()),
        ("psf_sigma", pa.float64()), ("n_pixels", pa.int64()), ("n_clipped", pa.int64()),
        ("bbox", pa.list_(pa.int64(), 4)), ("corner_ra", pa.list_(pa.float64(), 4)),
        ("corner_dec", pa.list_(pa.float64(), 4)),
    ])
    return pa.table(rows, schema=schema)


def coadd_info(warps: Sequence[Exposure]) -> VisitInfo:
    """Coadd metadata: band, filter and instrument when shared; mjd = mean input start; exptime = sum."""
    def shared(values: list[str]) -> str:
        return values[0] if len(set(values)) == 1 else ""

    return VisitInfo(instrument=shared([w.info.instrument for w in warps]), band=warps[0].info.band,
                     physical_filter=shared([w.info.physical_filter for w in warps]),
                     mjd=float(np.mean([w.info.mjd for w in warps])),
                     exptime=float(np.sum([w.info.exptime for w in warps])),
                     bunit=warps[0].info.bunit)


def _pad_stamp(stamp: np.ndarray, size: int) -> np.ndarray:
    p = (size - stamp.shape[0]) // 2
    return np.pad(stamp, p) if p else stamp


def coadd_psf(warps: Sequence[Exposure], weights: np.ndarray, covered: np.ndarray) -> PixelPsf | None:
    """Weighted sum of the warps' PSFs at a PSF_GRID^2 grid over the covered area, each position
    using only the warps that have data there (as LSST's CoaddPsf); None when no input has a PSF."""
    if not covered.any():
        return None
    rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
    sizes = [w.psf.stamp_size for w in warps if w.psf is not None]
    if not sizes:
        return None
    size = max(sizes)
    x0, y0 = warps[0].xy0
    stamps, xs, ys = [], [], []
    for r in np.linspace(rows[0], rows[-1], PSF_GRID).round().astype(int):
        for c in np.linspace(cols[0], cols[-1], PSF_GRID).round().astype(int):
            total = np.zeros((size, size))
            for warp, weight in zip(warps, weights):
                if warp.psf is None or weight <= 0 or not np.isfinite(warp.image[r, c]):
                    continue
                total += weight * _pad_stamp(warp.psf.image(c + x0, r + y0), size)
            if total.sum() > 0:
                stamps.append(total)
                xs.append(c + x0)
                ys.append(r + y0)
    if not stamps:
        return None
    return PixelPsf(np.array(stamps), np.array(xs, float), np.array(ys, float))
