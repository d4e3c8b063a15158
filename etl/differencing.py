"""The difference stage: per (visit, detector), subtract the matched template_coadd from the visit
image and detect DiaSources (associated to DiaObjects later, a visit at a time)."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from skydp import tables
from skydp.coadd.mosaic import mosaic_patches
from skydp.diffim import subtract_images
from skydp.diffim.dia_sources import detect_dia_sources
from skydp.etl.coadds import TEMPLATE_TYPE
from skydp.etl.image_metadata import footprint
from skydp.etl.processed import ProcessedImage, processed_images
from skydp.etl.repository import Repository
from skydp.etl.stage import Output, Stage, TaskResult, Unit
from skydp.exposure import Exposure, read_exposure, write_exposure
from skydp.ids import pack_visit_detector
from skydp.skymap import DEFAULT_SKYMAP

DIFFERENCE_TYPE = "difference_image"
DETECTION_TYPE = "dia_source_detections"  # DiaSources of one detector before association
TEMPLATE_MARGIN = 64  # px of template kept around the detector for the matching kernel and the warp


def plan(repo: Repository) -> list[Unit]:
    """One unit per processed image that a template of its band covers, within a single tract."""
    templates = defaultdict(dict)  # (band, tract) -> patch -> dataset
    for d in repo.registry.find(TEMPLATE_TYPE, status="ok"):
        templates[(d.data_id["band"], d.data_id["tract"])][d.data_id["patch"]] = d
    units = []
    for image in processed_images(repo):
        patches = _covering_templates(image, templates)
        if not patches or {v for d in patches for v in d.meta.get("visits", [])} <= {image.visit}:
            continue  # no template, or one made of this very visit: nothing to compare it with
        tract = patches[0].data_id["tract"]
        units.append(Unit({"visit": image.visit, "detector": image.detector},
                          (image.image.path, *(d.path for d in patches)),
                          (image.image.sha256, *(d.sha256 for d in patches)), day_obs=image.day_obs,
                          params={"tract": tract, "patches": [d.data_id["patch"] for d in patches]}))
    return units


def _covering_templates(image: ProcessedImage, templates: dict) -> list:
    """The template patches of the tract that holds most of the image's overlapping patches."""
    by_tract = defaultdict(list)
    for tract, patch in DEFAULT_SKYMAP.patches_overlapping(*image.corners):
        found = templates.get((image.band, int(tract)), {}).get(int(patch))
        if found is not None:
            by_tract[int(tract)].append(found)
    if not by_tract:
        return []
    best = max(sorted(by_tract), key=lambda t: len(by_tract[t]))
    return sorted(by_tract[best], key=lambda d: d.data_id["patch"])


def template_for(science: Exposure, root: Path, tract: int, patches: list[int], paths: list[str]) -> Exposure:
    """The template patches mosaicked on their tract grid, cut to the science image's footprint."""
    infos = [DEFAULT_SKYMAP.patch_info(tract, p) for p in patches]
    ra, dec = science.corners()
    x, y = infos[0].wcs.world_to_pixel_values(ra, dec)
    x, y = np.asarray(x) + infos[0].xy0[0], np.asarray(y) + infos[0].xy0[1]
    bbox = (int(np.floor(x.min())) - TEMPLATE_MARGIN, int(np.floor(y.min())) - TEMPLATE_MARGIN,
            int(np.ceil(x.max())) + TEMPLATE_MARGIN, int(np.ceil(y.max())) + TEMPLATE_MARGIN)
    return mosaic_patches([(info, read_exposure(root / p)) for info, p in zip(infos, paths)], bbox)


def _image_meta(science: Exposure, unit: Unit) -> dict:
    info = science.info
    return {"ccdVisitId": pack_visit_detector(info.visit, info.detector), "band": info.band,
            "physical_filter": info.physical_filter, "instrument_name": info.instrument or None,
            "tract": unit.params["tract"], "patch": unit.params["patches"][0], "footprint": footprint(science),
            "template": {"tract": unit.params["tract"], "patches": unit.params["patches"], "paths": list(unit.inputs[1:])},
            "t_min": info.mjd, "t_max": info.mjd + info.exptime / 86400.0, "t_exptime": info.exptime}


def _no_difference(repo: Repository, unit: Unit, science: Exposure, reason: str, start: float) -> TaskResult:
    """An empty DiaSource fragment whose registry row says why the visit could not be differenced."""
    visit, detector = unit.data_id["visit"], unit.data_id["detector"]
    table_path = repo.staging_path(".parquet")
    pq.write_table(tables.empty_table("DiaSource"), table_path)
    relative = f"catalogs/dia_detections/{unit.day_obs}/{visit}/dia_detections_{visit}_det{detector:03d}.parquet"
    meta = {"rows": 0, "band": science.info.band, "mjd": science.info.mjd_mid, "skipped": reason}
    return TaskResult(outputs=[Output(DETECTION_TYPE, unit.data_id, table_path, relative, meta=meta)],
                      seconds=time.perf_counter() - start)


def task(root: Path, unit: Unit) -> TaskResult:
    start = time.perf_counter()
    repo = Repository(root)
    visit, detector = unit.data_id["visit"], unit.data_id["detector"]
    science = read_exposure(root / unit.inputs[0])
    template = template_for(science, root, unit.params["tract"], unit.params["patches"], list(unit.inputs[1:]))
    try:
        difference = subtract_images(science, template)
    except ValueError as err:  # no usable matching kernel: recorded, and this visit has no difference image
        return _no_difference(repo, unit, science, str(err), start)
    dia_sources = detect_dia_sources(difference, science)

    stem = f"{unit.day_obs}/{visit}/{{}}_{visit}_det{detector:03d}"
    image_path = repo.staging_path(".fits")
    write_exposure(difference.difference, image_path)
    table_path = repo.staging_path(".parquet")
    pq.write_table(dia_sources, table_path)
    return TaskResult(
        outputs=[Output(DIFFERENCE_TYPE, unit.data_id, image_path, f"images/difference_image/{stem.format('difference_image')}.fits",
                        meta=_image_meta(science, unit)),
                 Output(DETECTION_TYPE, unit.data_id, table_path, f"catalogs/dia_detections/{stem.format('dia_detections')}.parquet",
                        meta={"rows": dia_sources.num_rows, "band": science.info.band, "mjd": science.info.mjd_mid})],
        rows={"DiaSource": dia_sources.num_rows}, seconds=time.perf_counter() - start)


STAGE = Stage(name="difference", version="1", output_type=DETECTION_TYPE, plan=plan, task=task, per_detector=True,
              other_outputs=(DIFFERENCE_TYPE,))
