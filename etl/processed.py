"""What the single-visit stage has produced, as the later stages need it: one record per processed
(visit, detector) with its image, its CcdVisit summary and its sky footprint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from skydp.etl.registry import Dataset
from skydp.etl.repository import Repository
from skydp.etl.single_visit import SOURCE_TYPE, VISIT_IMAGE_TYPE
from skydp.ids import split_visit_id

CORNERS = ("llc", "ulc", "urc", "lrc")


@dataclass(frozen=True)
class ProcessedImage:
    """A processed visit image and what its summary says about it."""

    visit: int
    detector: int
    band: str
    day_obs: int
    image: Dataset
    summary: dict[str, Any]

    @property
    def corners(self) -> tuple[np.ndarray, np.ndarray]:
        """RA and Dec (deg) of the four outer corners, ll, ul, ur, lr."""
        return (np.array([self.summary[f"{c}ra"] for c in CORNERS]),
                np.array([self.summary[f"{c}dec"] for c in CORNERS]))

    @property
    def seeing(self) -> float:
        return float(self.summary["seeing"])

    @property
    def mjd_mid(self) -> float:
        return float(self.summary["expMidptMJD"])


def processed_images(repo: Repository) -> list[ProcessedImage]:
    """Every successfully processed (visit, detector), ordered by visit then detector."""
    summaries = {(d.data_id["visit"], d.data_id["detector"]): d.meta["ccd_visit"]
                 for d in repo.registry.find(SOURCE_TYPE, status="ok")}
    out = []
    for image in repo.registry.find(VISIT_IMAGE_TYPE, status="ok"):
        key = (image.data_id["visit"], image.data_id["detector"])
        if key in summaries:
            summary = summaries[key]
            out.append(ProcessedImage(key[0], key[1], summary["band"], split_visit_id(key[0])[0], image, summary))
    return sorted(out, key=lambda p: (p.visit, p.detector))


def inside_corners(corners: tuple[np.ndarray, np.ndarray], ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Which positions lie inside the convex quadrilateral of an image's corners (gnomonic test)."""
    corner_ra, corner_dec = (np.radians(c) for c in corners)
    centre = _unit(corner_ra, corner_dec).sum(axis=1)
    centre /= np.linalg.norm(centre)
    points = _unit(np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float)))
    inside = points.T @ centre > 0
    vertices = _unit(corner_ra, corner_dec)
    sign = None
    for k in range(4):  # the same side of every great-circle edge
        normal = np.cross(vertices[:, k], vertices[:, (k + 1) % 4])
        side = np.sign(points.T @ normal)
        sign = side if sign is None else sign
        inside &= side == sign
    return inside


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    return np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
