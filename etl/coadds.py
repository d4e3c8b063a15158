"""The coadd stage: per (tract, patch, band), a deep_coadd of every processed visit image that
overlaps the patch and a template_coadd of the best-seeing third of them, each with its table of
inputs."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from skydp.coadd import build_patch_coadd, select_template_visits
from skydp.coadd.io import write_coadd
from skydp.etl.image_metadata import footprint
from skydp.etl.processed import processed_images
from skydp.etl.repository import Repository
from skydp.etl.stage import Output, Stage, TaskResult, Unit
from skydp.skymap import DEFAULT_SKYMAP, PatchInfo

DEEP_TYPE = "deep_coadd"
TEMPLATE_TYPE = "template_coadd"
REGION_MARGIN = 8  # px
INPUTS_SUFFIX = "_inputs"  # the coadd-inputs table of a coadd type: deep_coadd_inputs, template_coadd_inputs


def plan(repo: Repository) -> list[Unit]:
    """One unit per (tract, patch, band) that some processed image overlaps.

    All bands of a patch share one region (around every image on the patch, whatever its band),
    so the Object stage finds its coadds on a common grid.
    """
    groups, on_patch = defaultdict(list), defaultdict(list)
    for image in processed_images(repo):
        for tract, patch in DEFAULT_SKYMAP.patches_overlapping(*image.corners):
            groups[(int(tract), int(patch), image.band)].append(image)
            on_patch[(int(tract), int(patch))].append(image.corners)
    units = []
    for (tract, patch, band), images in sorted(groups.items()):
        seeing = {im.visit: im.seeing for im in images}
        template = sorted(int(v) for v in select_template_visits(seeing))
        region = _data_region(DEFAULT_SKYMAP.patch_info(tract, patch), on_patch[(tract, patch)])
        units.append(Unit({"tract": tract, "patch": patch, "band": band},
                          tuple(im.image.path for im in images), tuple(im.image.sha256 for im in images),
                          params={"visits": [im.visit for im in images], "template_visits": template,
                                  "region": list(region)}))
    return units


def sub_patch(info: PatchInfo, bbox: tuple[int, int, int, int]) -> PatchInfo:
    """The part ``bbox`` (tract pixels, end-exclusive) of a patch, clipped to it, as a PatchInfo.

    Coadds cover only where their inputs are: a 2k detector in a 4.2k patch would otherwise store
    three quarters NO_DATA.
    """
    x0, y0, x1, y1 = (max(bbox[0], info.outer_bbox[0]), max(bbox[1], info.outer_bbox[1]),
                      min(bbox[2], info.outer_bbox[2]), min(bbox[3], info.outer_bbox[3]))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"tract {info.tract} patch {info.patch}: region {bbox} misses the patch")
    wcs = info.wcs.deepcopy()
    wcs.wcs.crpix = wcs.wcs.crpix - np.array([x0 - info.xy0[0], y0 - info.xy0[1]], dtype=float)
    return replace(info, wcs=wcs, xy0=(x0, y0), shape=(y1 - y0, x1 - x0))


def _data_region(info: PatchInfo, corners: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, int, int, int]:
    """Tract-pixel box around every image's corners, with room for the warp kernel, clipped to the patch."""
    ra = np.concatenate([c[0] for c in corners])
    dec = np.concatenate([c[1] for c in corners])
    x, y = info.wcs.world_to_pixel_values(ra, dec)
    x, y = np.asarray(x) + info.xy0[0], np.asarray(y) + info.xy0[1]
    box = (int(np.floor(x.min())) - REGION_MARGIN, int(np.floor(y.min())) - REGION_MARGIN,
           int(np.ceil(x.max())) + 1 + REGION_MARGIN, int(np.ceil(y.max())) + 1 + REGION_MARGIN)
    outer = info.outer_bbox
    return (max(box[0], outer[0]), max(box[1], outer[1]), min(box[2], outer[2]), min(box[3], outer[3]))


def coadd_path(dataset_type: str, tract: int, patch: int, band: str, suffix: str = ".fits") -> str:
    return f"images/{dataset_type}/{tract}/{patch}/{dataset_type}_{tract}_{patch}_{band}{suffix}"


def task(root: Path, unit: Unit) -> TaskResult:
    """Build and stage both coadds of one patch and band."""
    start = time.perf_counter()
    repo = Repository(root)
    tract, patch, band = unit.data_id["tract"], unit.data_id["patch"], unit.data_id["band"]
    patch_info = DEFAULT_SKYMAP.patch_info(tract, patch)
    info = sub_patch(patch_info, tuple(unit.params["region"]))
    chosen = set(unit.params["template_visits"])
    selections = {DEEP_TYPE: unit.inputs,
                  TEMPLATE_TYPE: tuple(p for p, v in zip(unit.inputs, unit.params["visits"]) if v in chosen)}
    outputs = []
    for dataset_type, paths in selections.items():
        coadd = build_patch_coadd([root / p for p in paths], info)
        image, inputs = repo.staging_path(".fits"), repo.staging_path(".parquet")
        write_coadd(coadd, image, inputs)
        mjd = coadd.inputs["mjd"].to_numpy()
        meta = {"n_inputs": coadd.inputs.num_rows, "visits": sorted(set(coadd.inputs["visit"].to_pylist())),
                "band": band, "footprint": footprint(coadd.exposure),
                "t_min": float(mjd.min()), "t_max": float(mjd.max()),
                "t_exptime": float(coadd.exposure.info.exptime)}
        outputs += [Output(dataset_type, unit.data_id, image, coadd_path(dataset_type, tract, patch, band), meta=meta),
                    Output(dataset_type + INPUTS_SUFFIX, unit.data_id, inputs,
                           coadd_path(dataset_type, tract, patch, band, INPUTS_SUFFIX + ".parquet"))]
    return TaskResult(outputs=outputs, seconds=time.perf_counter() - start)


STAGE = Stage(name="coadd", version="1", output_type=DEEP_TYPE, plan=plan, task=task, per_detector=True,
              other_outputs=(TEMPLATE_TYPE, DEEP_TYPE + INPUTS_SUFFIX, TEMPLATE_TYPE + INPUTS_SUFFIX))
