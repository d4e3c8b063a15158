"""ForcedSource and ForcedSourceOnDiaObject rows of one visit image (and its difference image).

One row per object whose position falls on the visit image. psfFlux and the pixel flags come from
the calibrated visit image, psfDiff* from the difference image at the same sky position (null when
there is none). Rows are in the order of the input table; forcedSourceOnDiaObjectId is the
LSST-style packed id (visit+detector << 19 | n) with n = 1, 2, ... over the measured DiaObjects
in ascending diaObjectId order, so it is unique per table and the same on every rerun of that
visit and DiaObject set.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa

from skydp import ids, tables
from skydp.exposure import Exposure
from skydp.exposure.errors import ExposureMetadataWarning
from skydp.forced.photometry import ForcedPhotometer
from skydp.pipeline.config import AB_ZERO_POINT_NJY
from skydp.skymap import DEFAULT_SKYMAP

_DIFF_COLUMNS = {"psfFlux": "psfDiffFlux", "psfFluxErr": "psfDiffFluxErr", "psfFlux_flag": "psfDiffFlux_flag",
                 "pixelFlags_nodataCenter": "diff_PixelFlags_nodataCenter"}


def _column(objects: pa.Table, name: str, what: str) -> np.ndarray:
    if name not in objects.column_names:
        raise ValueError(f"{what} table has no column {name!r} (columns: {', '.join(objects.column_names)})")
    column = objects.column(name)
    if column.null_count:
        raise ValueError(f"{what} column {name!r} has {column.null_count} null value(s)")
    return column.to_numpy()


def _measure(exposure: Exposure, ra: np.ndarray, dec: np.ndarray, what: str) -> dict[str, np.ndarray]:
    photometer = ForcedPhotometer(exposure)
    if photometer.notes:
        warnings.warn(f"forced photometry on the {what}: " + "; ".join(photometer.notes),
                      ExposureMetadataWarning, stacklevel=3)
    x, y = exposure.sky_to_pixel(ra, dec) if ra.size else (ra, dec)
    return photometer.measure(x, y)


def _forced_columns(table: str, visit_image: Exposure, ra: np.ndarray, dec: np.ndarray,
                    difference: Exposure | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rows on the image (index into the input) and the measured columns of ``table`` for them."""
    info = visit_image.info
    if not info.band:
        raise ValueError(f"visit {info.visit} detector {info.detector}: the visit image has no band")
    visit_rows = _measure(visit_image, ra, dec, "visit image")
    keep = np.flatnonzero(visit_rows["on_image"])
    wanted = set(tables.column_names(table))
    cols = {name: values[keep] for name, values in visit_rows.items() if name in wanted}
    n = keep.size
    if difference is not None:
        diff_rows = _measure(difference, ra[keep], dec[keep], "difference image")
        cols.update({target: diff_rows[source] for source, target in _DIFF_COLUMNS.items()})
    cols["coord_ra"], cols["coord_dec"] = ra[keep], dec[keep]
    cols["visit"] = np.full(n, info.visit, dtype=np.int64)
    cols["detector"] = np.full(n, info.detector, dtype=np.int64)
    cols["band"] = np.full(n, info.band, dtype=object)
    cols["midpointMjdTai"] = np.full(n, info.mjd_mid)
    return keep, cols


def _magnitudes(flux: np.ndarray, err: np.ndarray) -> tuple[np.ma.MaskedArray, np.ma.MaskedArray]:
    """AB magnitude and its error; masked (null) where the flux is not positive and finite."""
    good = np.isfinite(flux) & (flux > 0)
    safe = np.where(good, flux, 1.0)
    mag = AB_ZERO_POINT_NJY - 2.5 * np.log10(safe)
    mag_err = 2.5 / np.log(10.0) * err / safe
    return np.ma.masked_array(mag, ~good), np.ma.masked_array(mag_err, ~(good & np.isfinite(err)))


def forced_source_table(visit_image: Exposure, objects: pa.Table, difference: Exposure | None = None) -> pa.Table:
    """ForcedSource rows (exact schema) for the Objects on ``visit_image``.

    ``objects`` needs objectId, coord_ra, coord_dec; parentObjectId, tract and patch are carried
    when present (parentObjectId 0, tract/patch null otherwise).
    """
    ra = _column(objects, "coord_ra", "objects").astype(np.float64)
    dec = _column(objects, "coord_dec", "objects").astype(np.float64)
    keep, cols = _forced_columns("ForcedSource", visit_image, ra, dec, difference)
    cols["objectId"] = _column(objects, "objectId", "objects")[keep]
    cols["parentObjectId"] = (objects.column("parentObjectId").to_numpy(zero_copy_only=False)[keep]
                              if "parentObjectId" in objects.column_names else np.zeros(keep.size, dtype=np.int64))
    for name in ("tract", "patch"):
        if name in objects.column_names:
            cols[name] = objects.column(name).take(pa.array(keep))
    cols["psfMag"], cols["psfMagErr"] = _magnitudes(cols["psfFlux"], cols["psfFluxErr"])
    return tables.to_arrow("ForcedSource", cols)


def forced_dia_table(visit_image: Exposure, dia_objects: pa.Table, difference: Exposure | None) -> pa.Table:
    """ForcedSourceOnDiaObject rows (exact schema) for the DiaObjects on ``visit_image``.

    ``dia_objects`` needs diaObjectId, ra, dec; tract/patch are taken from it when present, else
    from the default sky map; parentObjectId is carried when present, else 0.
    """
    ra = _column(dia_objects, "ra", "dia_objects").astype(np.float64)
    dec = _column(dia_objects, "dec", "dia_objects").astype(np.float64)
    keep, cols = _forced_columns("ForcedSourceOnDiaObject", visit_image, ra, dec, difference)
    dia_object_id = _column(dia_objects, "diaObjectId", "dia_objects")[keep]
    cols["diaObjectId"] = dia_object_id
    cols["parentObjectId"] = (dia_objects.column("parentObjectId").to_numpy(zero_copy_only=False)[keep]
                              if "parentObjectId" in dia_objects.column_names
                              else np.zeros(keep.size, dtype=np.int64))
    if "tract" in dia_objects.column_names and "patch" in dia_objects.column_names:
        cols["tract"] = dia_objects.column("tract").take(pa.array(keep))
        cols["patch"] = dia_objects.column("patch").take(pa.array(keep))
    elif keep.size:
        cols["tract"], cols["patch"] = DEFAULT_SKYMAP.find_tract_patch(ra[keep], dec[keep])
    counter = np.empty(keep.size, dtype=np.int64)
    counter[np.argsort(dia_object_id, kind="stable")] = np.arange(1, keep.size + 1)
    info = visit_image.info
    try:
        cols["forcedSourceOnDiaObjectId"] = ids.source_id(info.visit, info.detector, counter)
    except ValueError as exc:
        raise ValueError(f"visit {info.visit} detector {info.detector}: cannot make forcedSourceOnDiaObjectId "
                         f"({exc})") from exc
    return tables.to_arrow("ForcedSourceOnDiaObject", cols)
