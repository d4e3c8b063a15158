"""The forced-photometry stages: per (visit, detector), PSF fluxes on the visit image and its
difference image at every Object position (ForcedSource) and every DiaObject position
(ForcedSourceOnDiaObject) the detector covers. A difference image dropped by the repository's policy
is recreated from its recipe (new DiaObjects need the old visits' difference images)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from skydp.diffim.recreate import load_difference
from skydp.etl.association import DIA_OBJECT_UPDATE_TYPE, HISTORY_MARGIN_ARCSEC, current_dia_objects
from skydp.etl.differencing import DIFFERENCE_TYPE
from skydp.etl.objects import OBJECT_TYPE
from skydp.etl.processed import inside_corners, processed_images
from skydp.etl.repository import Repository
from skydp.etl.sky_box import SkyBox
from skydp.etl.stage import Output, Stage, TaskResult, Unit
from skydp.exposure import read_exposure
from skydp.forced import forced_dia_table, forced_source_table
from skydp.skymap import DEFAULT_SKYMAP

FORCED_TYPE = "forced_source_catalog"
FORCED_DIA_TYPE = "forced_dia_catalog"
OBJECT_COLUMNS = ["objectId", "parentObjectId", "coord_ra", "coord_dec", "tract", "patch"]
DIA_OBJECT_COLUMNS = ["diaObjectId", "ra", "dec"]


def plan_forced(repo: Repository) -> list[Unit]:
    """One unit per processed image with Object catalogs of the patches it overlaps."""
    objects = {(d.data_id["tract"], d.data_id["patch"]): d for d in repo.registry.find(OBJECT_TYPE, status="ok")}
    differences = _differences(repo)
    units = []
    for image in processed_images(repo):
        found = [objects[key] for key in sorted({(int(t), int(p)) for t, p in
                                                  DEFAULT_SKYMAP.patches_overlapping(*image.corners)}) if key in objects]
        if not found:
            continue
        difference = differences.get((image.visit, image.detector))
        images = [image.image] + ([difference] if difference else [])
        units.append(Unit({"visit": image.visit, "detector": image.detector},
                          tuple(d.path for d in images + found), tuple(d.sha256 for d in images + found),
                          day_obs=image.day_obs,
                          params={"difference": difference is not None, "corners": [c.tolist() for c in image.corners]}))
    return units


def plan_forced_dia(repo: Repository) -> list[Unit]:
    """One unit per processed image that holds DiaObjects of the current DiaObject table.

    The fingerprint covers the DiaObjects on the detector, not the whole table, so a new night
    re-measures only the images its new or moved DiaObjects fall on.
    """
    updates = tuple(d.path for d in repo.registry.find(DIA_OBJECT_UPDATE_TYPE, status="ok"))
    dia_objects = current_dia_objects([repo.path(p) for p in updates], columns=DIA_OBJECT_COLUMNS)
    if dia_objects is None:
        return []
    differences = _differences(repo)
    units = []
    for image in processed_images(repo):
        on_image = _on_image(dia_objects, image.corners)
        if on_image.num_rows == 0:
            continue
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(c.to_numpy()).tobytes()
                                         for c in on_image.columns)).hexdigest()
        difference = differences.get((image.visit, image.detector))
        images = [image.image] + ([difference] if difference else [])
        units.append(Unit({"visit": image.visit, "detector": image.detector},
                          # inputs: the images, then every DiaObject update (read near the image); the
                          # checksums: the images and the DiaObjects on it, not the whole table
                          tuple(d.path for d in images) + updates, tuple(d.sha256 for d in images) + (digest,),
                          day_obs=image.day_obs,
                          params={"difference": difference is not None, "corners": [c.tolist() for c in image.corners]}))
    return units


def _differences(repo: Repository) -> dict:
    return {(d.data_id["visit"], d.data_id["detector"]): d for d in repo.registry.find(DIFFERENCE_TYPE, status="ok")}


def _on_image(table: pa.Table, corners: list | tuple) -> pa.Table:
    ra_name, dec_name = ("coord_ra", "coord_dec") if "coord_ra" in table.column_names else ("ra", "dec")
    corners = (np.asarray(corners[0]), np.asarray(corners[1]))
    keep = inside_corners(corners, table[ra_name].to_numpy(), table[dec_name].to_numpy())
    return table.filter(pa.array(keep))


def _images(root: Path, unit: Unit):
    visit_image = read_exposure(root / unit.inputs[0])
    difference = load_difference(root, unit.inputs[1]) if unit.params["difference"] else None
    return visit_image, difference, 2 if unit.params["difference"] else 1


def _stage_table(root: Path, unit: Unit, table: pa.Table, dataset_type: str, folder: str, table_name: str,
                 start: float) -> TaskResult:
    repo = Repository(root)
    visit, detector = unit.data_id["visit"], unit.data_id["detector"]
    staged = repo.staging_path(".parquet")
    pq.write_table(table, staged)
    relative = f"catalogs/{folder}/{unit.day_obs}/{visit}/{folder}_{visit}_det{detector:03d}.parquet"
    return TaskResult(outputs=[Output(dataset_type, unit.data_id, staged, relative, meta={"rows": table.num_rows})],
                      rows={table_name: table.num_rows}, seconds=time.perf_counter() - start)


def task_forced(root: Path, unit: Unit) -> TaskResult:
    start = time.perf_counter()
    visit_image, difference, first = _images(root, unit)
    parts = [pq.read_table(root / p, columns=OBJECT_COLUMNS + ["detect_isPrimary"]) for p in unit.inputs[first:]]
    objects = pa.concat_tables(parts)
    objects = objects.filter(objects["detect_isPrimary"]).select(OBJECT_COLUMNS)
    table = forced_source_table(visit_image, _on_image(objects, unit.params["corners"]), difference)
    return _stage_table(root, unit, table, FORCED_TYPE, "forced_source", "ForcedSource", start)


def task_forced_dia(root: Path, unit: Unit) -> TaskResult:
    start = time.perf_counter()
    visit_image, difference, first = _images(root, unit)
    ra, dec = unit.params["corners"]
    # the current rows of the DiaObjects near the image: their older rows may lie just outside it
    dia_objects = current_dia_objects([root / p for p in unit.inputs[first:]],
                                      SkyBox.around(ra, dec, HISTORY_MARGIN_ARCSEC), DIA_OBJECT_COLUMNS)
    table = forced_dia_table(visit_image, _on_image(dia_objects, unit.params["corners"]), difference)
    return _stage_table(root, unit, table, FORCED_DIA_TYPE, "forced_dia_source", "ForcedSourceOnDiaObject", start)


FORCED = Stage(name="forced", version="1", output_type=FORCED_TYPE, plan=plan_forced, task=task_forced,
               per_detector=True)
FORCED_DIA = Stage(name="forced_dia", version="1", output_type=FORCED_DIA_TYPE, plan=plan_forced_dia,
                   task=task_forced_dia, per_detector=True)
