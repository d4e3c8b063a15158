"""Source -> Object association: nearest Object within a radius (Source.objectId)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy.spatial import cKDTree


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def match_sources_to_objects(sources: pa.Table, objects: pa.Table, radius_arcsec: float = 1.0,
                             primary_only: bool = True) -> np.ndarray:
    """objectId of the nearest Object within ``radius_arcsec`` of each Source (0 when none), input order.

    Sources are matched on coord_ra/coord_dec; with ``primary_only`` only Objects with
    detect_isPrimary are candidates, so blend parents and patch-overlap duplicates never match.
    Nearest neighbours by chord distance on unit vectors (scipy cKDTree), valid at the poles and across RA 0.
    """
    if radius_arcsec <= 0:
        raise ValueError(f"match_sources_to_objects: radius_arcsec must be positive, got {radius_arcsec}")
    for name, table, need in (("sources", sources, ("coord_ra", "coord_dec")),
                              ("objects", objects, ("objectId", "coord_ra", "coord_dec"))):
        missing = [c for c in need if c not in table.column_names]
        if missing:
            raise ValueError(f"match_sources_to_objects: {name} table lacks column(s) {missing}")
    out = np.zeros(sources.num_rows, dtype=np.int64)
    keep = np.ones(objects.num_rows, dtype=bool)
    if primary_only and "detect_isPrimary" in objects.column_names:
        keep = objects["detect_isPrimary"].to_numpy(zero_copy_only=False).astype(bool, copy=False)
    obj_ra = objects["coord_ra"].to_numpy(zero_copy_only=False)[keep]
    obj_dec = objects["coord_dec"].to_numpy(zero_copy_only=False)[keep]
    obj_id = objects["objectId"].to_numpy(zero_copy_only=False)[keep]
    if sources.num_rows == 0 or obj_id.size == 0:
        return out
    src_ra = sources["coord_ra"].to_numpy(zero_copy_only=False).astype(float)
    src_dec = sources["coord_dec"].to_numpy(zero_copy_only=False).astype(float)
    finite = np.isfinite(src_ra) & np.isfinite(src_dec)
    chord = 2.0 * np.sin(np.radians(radius_arcsec / 3600.0) / 2.0)
    tree = cKDTree(_unit_vectors(obj_ra, obj_dec))
    dist, index = tree.query(_unit_vectors(src_ra[finite], src_dec[finite]), distance_upper_bound=chord)
    hit = np.isfinite(dist)
    matched = np.zeros(finite.sum(), dtype=np.int64)
    matched[hit] = obj_id[index[hit]]
    out[finite] = matched
    return out
