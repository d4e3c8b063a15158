"""ImageMetadata rows (ObsCore-like): one per stored image, with its footprint and time span."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from skydp import tables
from skydp.etl.registry import Dataset
from skydp.exposure import Exposure
from skydp.ids import N_PATCHES

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


def footprint(exposure: Exposure) -> dict[str, Any]:
    """Where an image lies and how it is sampled, as ImageMetadata columns (kept in its registry row)."""
    ra, dec = exposure.corners()
    ny, nx = exposure.shape
    centre_ra, centre_dec = exposure.pixel_to_sky(np.array([exposure.xy0[0] + (nx - 1) / 2]),
                                                  np.array([exposure.xy0[1] + (ny - 1) / 2]))
    row = {"s_ra": float(centre_ra[0]), "s_dec": float(centre_dec[0]), "s_pixel_scale": float(exposure.pixel_scale()),
           "s_xel1": nx, "s_xel2": ny}
    for k, corner in enumerate(CORNERS):
        row[f"{corner}ra"], row[f"{corner}dec"] = float(ra[k]), float(dec[k])
    return row


BAND_INDEX = {b: i for i, b in enumerate("ugrizy")}


def derived_image_row(image: Dataset, meta: dict[str, Any]) -> dict[str, Any]:
    """The row of a coadd or difference image from the footprint and times its stage recorded."""
    dataset_type, data_id = image.dataset_type, image.data_id
    if "tract" in data_id:  # a coadd: one per tract, patch and band
        packed = (data_id["tract"] * N_PATCHES + data_id["patch"]) * 8 + BAND_INDEX[data_id["band"]]
    else:
        packed = meta["ccdVisitId"]
    row = {
        "imageId": image_id(dataset_type, packed),
        "dataset_type": dataset_type,
        "dataproduct_type": "image",
        "calib_level": CALIB_LEVEL[dataset_type],
        "path": image.path,
        "sha256": image.sha256,
        "created_by_run": None if image.run_id is None else str(image.run_id),
        **{k: data_id.get(k, meta.get(k)) for k in ("visit", "detector", "tract", "patch")},
        **{k: meta.get(k) for k in ("band", "instrument_name", "physical_filter", "t_min", "t_max", "t_exptime")},
        **meta["footprint"],
    }
    row["s_region"] = s_region(row)
    return row


def image_metadata_table(rows: list[dict[str, Any]]) -> pa.Table:
    return tables.from_rows("ImageMetadata", sorted(rows, key=lambda r: r["imageId"]))
