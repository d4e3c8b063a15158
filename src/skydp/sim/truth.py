"""Parquet writers for the truth tables.

- ``truth_objects.parquet``: one row per true object (``skydp.sim.sky`` documents the models);
  ``flux_<band>`` in nJy is the static flux (stars, galaxies, movers), the mean-magnitude flux
  (variables) or the peak flux (transients); ``size`` is the half-light radius in arcsec (0 for point
  sources); ``ellipticity`` = (a - b)/(a + b) of the disk and ``position_angle`` in degrees east of
  north; columns that do not apply to a type are null.
- ``truth_epochs.parquet``: one row per object whose centre lies on an image (pixel centres
  -0.5 <= x < nx - 0.5), with its true flux at mid-exposure (``mjd``), 0-based pixel x, y, sky
  position at that time, and ``drawn`` (False when it was too faint to be drawn or is a transient
  before explosion). Static objects fainter than ``Preset.epoch_mag_limit`` are left out. Rows
  are kept for objects inside the NO_DATA corner or on a bad column: the mask tells which.
- ``visits.parquet``: observing conditions per visit, detector and snap (seeing = PSF FWHM in arcsec
  at the detector centre; zero_point = AB mag giving 1 e-/s; m5 = 5-sigma point-source depth;
  n_drawn = objects drawn on the image), with the image path relative to OUTDIR.
- ``truth_cosmics.parquet``: every pixel hit by a cosmic ray and the flux (nJy) added to it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from skydp.sim.bands import BANDS
from skydp.sim.sky import KINDS, VARIABLE, SkyCatalog

_FLOAT_COLUMNS = (
    "size", "hlr_disk", "hlr_bulge", "bulge_fraction", "ellipticity", "position_angle", "period", "amplitude",
    "phase", "t_explosion", "rise_time", "decline_time", "ra_rate", "dec_rate", "mjd_ref",
)


def _nullable_float(values: np.ndarray) -> pa.Array:
    values = np.asarray(values, float)
    return pa.array(values, type=pa.float64(), mask=np.isnan(values))


def write_objects(cat: SkyCatalog, path: Path) -> None:
    """truth_objects.parquet from the catalogue."""
    cols: dict[str, pa.Array] = {
        "id": pa.array(cat.id, pa.int64()),
        "type": pa.array(np.array(KINDS)[cat.kind], pa.string()),
        "ra": pa.array(cat.ra, pa.float64()),
        "dec": pa.array(cat.dec, pa.float64()),
    }
    for b, band in enumerate(BANDS):
        cols[f"flux_{band}"] = pa.array(cat.flux[:, b], pa.float64())
    for name in _FLOAT_COLUMNS:
        cols[name] = _nullable_float(getattr(cat, name))
    shape = np.where(cat.sawtooth > 0, "sawtooth", "sine")
    cols["light_curve_shape"] = pa.array(shape, pa.string(), mask=cat.kind != VARIABLE)
    cols["host_id"] = pa.array(cat.host_id, pa.int64(), mask=cat.host_id < 0)
    pq.write_table(pa.table(cols), path)


def write_rows(rows: list[dict[str, np.ndarray]], schema: pa.Schema, path: Path) -> None:
    """Concatenate per-image column dicts (each already holding every schema column) and write them."""
    data = {}
    for field in schema:
        parts = [np.asarray(r[field.name]) for r in rows]
        data[field.name] = np.concatenate(parts) if parts else np.empty(0)
    arrays = []
    for field in schema:
        values = data[field.name]
        if field.name == "snap":
            arrays.append(pa.array(values.astype(np.int64), field.type, mask=values.astype(np.int64) < 0))
        else:
            arrays.append(pa.array(values, field.type))
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)


EPOCH_SCHEMA = pa.schema(
    [
        ("id", pa.int64()), ("visit", pa.int64()), ("detector", pa.int32()), ("snap", pa.int32()),
        ("band", pa.string()), ("mjd", pa.float64()), ("flux", pa.float64()), ("x", pa.float64()),
        ("y", pa.float64()), ("ra", pa.float64()), ("dec", pa.float64()), ("drawn", pa.bool_()),
    ]
)
COSMIC_SCHEMA = pa.schema(
    [
        ("visit", pa.int64()), ("detector", pa.int32()), ("snap", pa.int32()),
        ("x", pa.int32()), ("y", pa.int32()), ("flux", pa.float64()),
    ]
)
VISIT_SCHEMA = pa.schema(
    [
        ("visit", pa.int64()), ("detector", pa.int32()), ("snap", pa.int32()), ("band", pa.string()),
        ("physical_filter", pa.string()), ("day_obs", pa.int32()), ("seq_num", pa.int32()),
        ("mjd", pa.float64()), ("exptime", pa.float64()), ("airmass", pa.float64()),
        ("boresight_ra", pa.float64()), ("boresight_dec", pa.float64()), ("rotpa", pa.float64()),
        ("center_ra", pa.float64()), ("center_dec", pa.float64()), ("seeing", pa.float64()),
        ("sky_mag", pa.float64()), ("sky_electrons", pa.float64()), ("sky_noise", pa.float64()),
        ("zero_point", pa.float64()), ("njy_per_electron", pa.float64()), ("read_noise", pa.float64()),
        ("full_well", pa.float64()), ("m5", pa.float64()), ("n_drawn", pa.int32()), ("image", pa.string()),
    ]
)
