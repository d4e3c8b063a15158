"""Template selection: the best-seeing third of the visits (at least 3), as Rubin builds template_coadd."""

from __future__ import annotations

import math
from collections.abc import Mapping


def select_template_visits(seeing: Mapping[int, float], fraction: float = 1 / 3, min_visits: int = 3) -> list[int]:
    """Visits with the best (smallest) seeing: ceil(fraction * N), at least ``min_visits``, all if fewer.

    Returned best first (ties broken by visit id). Visits with non-finite seeing come last.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"select_template_visits: fraction must be in (0, 1], got {fraction}")
    if min_visits < 1:
        raise ValueError(f"select_template_visits: min_visits must be >= 1, got {min_visits}")
    order = sorted(seeing, key=lambda v: (not math.isfinite(seeing[v]), seeing[v] if math.isfinite(seeing[v]) else 0.0, v))
    n = min(len(order), max(min_visits, math.ceil(fraction * len(order) - 1e-9)))
    return [int(v) for v in order[:n]]
