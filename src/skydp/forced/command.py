"""``skydp forced IMAGE.fits --radec FILE.csv -o OUT.parquet``: forced photometry on any image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from skydp.exposure import read_exposure
from skydp.forced.photometry import forced_photometry


def read_positions(path: Path) -> pa.Table:
    """The CSV's ``id`` (optional, kept as read), ``ra`` and ``dec`` (degrees) columns."""
    try:
        table = pacsv.read_csv(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such position file") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from exc
    missing = [name for name in ("ra", "dec") if name not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (columns: {', '.join(table.column_names)})")
    columns = {}
    for name in ("ra", "dec"):
        try:
            values = table.column(name).cast(pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"{path}: column {name!r} is not numeric ({exc})") from exc
        array = values.to_numpy(zero_copy_only=False)  # nulls become NaN
        invalid = ~np.isfinite(array) | ((np.abs(array) > 90) if name == "dec" else False)
        if invalid.any():
            rows = np.flatnonzero(invalid)[:5].tolist()
            raise ValueError(f"{path}: column {name!r} has missing or invalid values (data rows {rows})")
        columns[name] = values
    if "id" in table.column_names:
        columns = {"id": table.column("id"), **columns}
    return pa.table(columns)


def run_forced_cli(image: Path, radec_csv: Path, out: Path) -> int:
    """Measure forced PSF photometry of ``image`` at the CSV positions and write ``out`` (Parquet).

    Output rows follow the CSV order: id (when given), ra, dec, then the columns of
    ``forced_photometry`` (x, y, on_image, psfFlux, psfFluxErr, psfFlux_flag, pixel flags,
    invalidPsfFlag). Returns 0 (the exit status); bad input raises ValueError naming the file.
    """
    image, radec_csv, out = Path(image), Path(radec_csv), Path(out)
    positions = read_positions(radec_csv)
    if not image.exists():
        raise ValueError(f"{image}: no such image file")
    exposure = read_exposure(image)
    result = forced_photometry(exposure, positions.column("ra").to_numpy(), positions.column("dec").to_numpy())
    table = pa.table({**{name: positions.column(name) for name in positions.column_names},
                      **{name: result.column(name) for name in result.column_names}})
    if not out.parent.is_dir():
        raise ValueError(f"{out}: output directory {out.parent} does not exist")
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(out)
    return 0
