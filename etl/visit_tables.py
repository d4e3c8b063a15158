"""Visit and CcdVisit tables from the single-visit summaries and the metadata recorded at ingest.

A CcdVisit row is the single-visit summary of one processed detector (skydp.pipeline computes it).
A Visit row takes the per-visit columns of its CcdVisit rows (all detectors of a visit share
filter, times and rotation) and the boresight pointing and airmass from the ingest headers;
altitude follows from the zenith distance, and azimuth is not derivable from the contract headers
and stays null.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from skydp import tables

SHARED_COLUMNS = ("band", "physical_filter", "skyRotation", "zenithDistance", "expTime",
                  "expMidpt", "expMidptMJD", "obsStart", "obsStartMJD")


def ccd_visit_table(summaries: list[dict[str, Any]]) -> pa.Table:
    """CcdVisit rows ordered by (visitId, detector)."""
    rows = sorted(summaries, key=lambda r: (r["visitId"], r["detector"]))
    return tables.from_rows("CcdVisit", rows)


def visit_table(summaries: list[dict[str, Any]], pointing: dict[int, dict[str, Any]]) -> pa.Table:
    """Visit rows ordered by visit; ``pointing`` maps visit -> ingest metadata of one of its images."""
    rows: dict[int, dict[str, Any]] = {}
    for summary in sorted(summaries, key=lambda r: (r["visitId"], r["detector"])):
        visit = summary["visitId"]
        if visit in rows:
            continue
        meta = pointing[visit]
        row = {"visit": visit, **{c: summary.get(c) for c in SHARED_COLUMNS}}
        zenith = row["zenithDistance"]
        row.update(ra=meta["boresight_ra"], dec=meta["boresight_dec"], airmass=meta["airmass"],
                   azimuth=None, altitude=None if zenith is None else 90.0 - zenith)
        rows[visit] = row
    return tables.from_rows("Visit", list(rows.values()))
