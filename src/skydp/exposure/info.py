"""Per-visit metadata of an exposure (what the PRIMARY header of a visit image holds)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

BANDS = "ugrizy"


@dataclass
class VisitInfo:
    """Visit metadata. Unknown values keep their defaults (0, "", NaN) and are listed in ``warnings``.

    ``mjd`` is the exposure START in MJD (TAI); ``band`` is one of ugrizy or "" when unknown;
    ``bunit`` is "nJy" once the pixels are calibrated, otherwise the file's own unit label
    (the pixels were then loaded unscaled).
    """

    instrument: str = ""
    visit: int = 0
    detector: int = 0
    band: str = ""
    physical_filter: str = ""
    day_obs: int = 0
    mjd: float = math.nan
    exptime: float = math.nan
    airmass: float = math.nan
    boresight_ra: float = math.nan
    boresight_dec: float = math.nan
    rotpa: float = math.nan
    snap: int | None = None
    bunit: str = "nJy"
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.band not in ("",) + tuple(BANDS):
            raise ValueError(f"VisitInfo.band must be one of {BANDS!r} or '', got {self.band!r}")
        if self.snap is not None and self.snap not in (0, 1):
            raise ValueError(f"VisitInfo.snap must be 0, 1 or None, got {self.snap!r}")

    @property
    def mjd_mid(self) -> float:
        """Mid-exposure time, MJD (TAI)."""
        return self.mjd + self.exptime / 2.0 / 86400.0
