"""Reading only the rows of per-visit Parquet fragments that fall in a small patch of sky.

The time-domain stages (association, forced photometry on DiaObjects, alerts) need the history of
the sky one visit or detector covers, not of the whole survey. Each per-visit fragment covers one
visit's footprint, so the Parquet min/max statistics of its ra/dec columns let the reader skip the
fragments of other pointings after reading their footers only: the work per visit grows with the
depth of coverage at that place, not with the number of visits in the repository.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

_POLAR_DEC = 89.0  # above this |dec| the box keeps every RA


@dataclass(frozen=True)
class SkyBox:
    """An ra/dec box in degrees; ``ra_min``/``ra_max`` None means every RA (a box around a pole or
    one whose RA span crosses 0/360)."""

    dec_min: float
    dec_max: float
    ra_min: float | None = None
    ra_max: float | None = None

    @classmethod
    def around(cls, ra: np.ndarray, dec: np.ndarray, margin_arcsec: float) -> SkyBox | None:
        """The smallest box holding every (ra, dec) grown by ``margin_arcsec``; None for no points."""
        ra, dec = np.asarray(ra, float), np.asarray(dec, float)
        ok = np.isfinite(ra) & np.isfinite(dec)
        if not ok.any():
            return None
        ra, dec = np.mod(ra[ok], 360.0), dec[ok]
        margin = margin_arcsec / 3600.0
        dec_min, dec_max = max(dec.min() - margin, -90.0), min(dec.max() + margin, 90.0)
        widest = max(abs(dec_min), abs(dec_max))
        if widest > _POLAR_DEC:
            return cls(dec_min, dec_max)
        ra_margin = margin / np.cos(np.radians(widest))
        ra_min, ra_max = ra.min() - ra_margin, ra.max() + ra_margin
        if ra_min < 0 or ra_max >= 360 or ra.max() - ra.min() > 180:
            return cls(dec_min, dec_max)  # wraps: rare (pointings on RA 0); dec alone still prunes
        return cls(dec_min, dec_max, ra_min, ra_max)

    def expression(self, ra: str = "ra", dec: str = "dec") -> ds.Expression:
        """A pyarrow filter keeping the rows in the box (Parquet statistics prune with it)."""
        keep = (ds.field(dec) >= self.dec_min) & (ds.field(dec) <= self.dec_max)
        if self.ra_min is not None:
            keep &= (ds.field(ra) >= self.ra_min) & (ds.field(ra) <= self.ra_max)
        return keep


def read_in_box(paths: Sequence[Path], box: SkyBox | None, columns: list[str] | None = None,
                ra: str = "ra", dec: str = "dec") -> pa.Table | None:
    """Rows of the Parquet files ``paths`` (in that order) inside ``box``; every row when ``box`` is
    None; None when there is no file. The ``ra``/``dec`` columns must exist in every file."""
    if not paths:
        return None
    dataset = ds.dataset([str(p) for p in paths], format="parquet")
    return dataset.to_table(columns=columns, filter=None if box is None else box.expression(ra, dec))
