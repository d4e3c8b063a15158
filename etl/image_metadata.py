"""ImageMetadata rows (ObsCore-like): one per stored image, with its footprint and time span."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from skydp import tables
from skydp.etl.registry import Dataset

# The low 3 bits of imageId say which kind of image it is; the rest is the packed data id
# (ccdVisitId for per-detector images), so ids never collide across dataset types.
DATASET_TYPE_CODES = {"visit_image": 0, "difference_image": 1, "deep_coadd": 2, "template_coadd": 3}
CALIB_LEVEL = {"visit_image": 2, "difference_image": 2, "deep_coadd": 3, "template_coadd": 3}
CORNERS = ("llc", "ulc", "urc", "lrc")


def image_id(dataset_type: str, packed_id: int) -> int:
    return (int(packed_id) << 3) | DATASET_TYPE_CODES[dataset_type]


def s_region(row: dict[str, Any]) -> str:
    """ObsCore/STC-S polygon through the four corners (ll, ul, ur, lr)."""
    coords = " ".join(f"{row[f'{c}ra']:.9f} {row[f'{c}dec']:.9f}" for c in CORNERS)
    return f"POLYGON ICRS {coords}"


def visit_image_row(image: Dataset, ccd_visit: dict[str, Any], instrument: str) -> dict[str, Any]:
    """The row of one processed visit image, from its CcdVisit summary."""
    row = {
        "imageId": image_id("visit_image", ccd_visit["ccdVisitId"]),
        "dataset_type": "visit_image",
        "dataproduct_type": "image",
        "calib_level": CALIB_LEVEL["visit_image"],
        "instrument_name": instrument or None,
        "visit": ccd_visit["visitId"],
        "detector": ccd_visit["detector"],
        "band": ccd_visit["band"],
        "physical_filter": ccd_visit.get("physical_filter"),
        "path": image.path,
        "sha256": image.sha256,
        "created_by_run": None if image.run_id is None else str(image.run_id),
        "s_ra": ccd_visit["ra"],
        "s_dec": ccd_visit["dec"],
        "t_min": ccd_visit.get("obsStartMJD"),
        "t_exptime": ccd_visit.get("expTime"),
        "s_pixel_scale": ccd_visit.get("pixelScale"),
        "s_xel1": ccd_visit["xSize"],
        "s_xel2": ccd_visit["ySize"],
        **{f"{c}{a}": ccd_visit[f"{c}{a}"] for c in CORNERS for a in ("ra", "dec")},
    }
    if row["t_min"] is not None and row["t_exptime"] is not None:
        row["t_max"] = row["t_min"] + row["t_exptime"] / 86400.0
    row["s_region"] = s_region(row)
    return row


def image_metadata_table(rows: list[dict[str, Any]]) -> pa.Table:
    return tables.from_rows("ImageMetadata", sorted(rows, key=lambda r: r["imageId"]))
