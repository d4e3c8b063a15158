"""The difference stage: per (visit, detector), subtract the matched template_coadd from the visit
image and detect DiaSources (associated to DiaObjects later, a visit at a time).

Each difference image is written with its recipe beside it (skydp.diffim.recreate). In a repository
whose policy is ``drop_difference_images`` the ``drop_differences`` stage, after every stage that reads
the pixels, deletes the FITS files; later readers (forced photometry of old visits on new DiaObjects,
``Catalog.image``) recreate them. Registry rows keep the checksum of the original FITS, so nothing
downstream looks changed or missing to the runner.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from skydp import tables
from skydp.checksums import sha256_of
from skydp.diffim.recreate import DifferenceRecipe, RecipeFile, read_recipe, recipe_path, write_recipe
from skydp.diffim.template import choose_template_tract
from skydp.etl.coadds import TEMPLATE_TYPE
from skydp.etl.image_metadata import footprint
from skydp.etl.processed import ProcessedImage, processed_images
from skydp.etl.repository import Repository
from skydp.etl.stage import Output, Stage, TaskResult, Unit
from skydp.exposure import Exposure, write_exposure
from skydp.ids import pack_visit_detector, split_visit_id
from skydp.skymap import DEFAULT_SKYMAP

DIFFERENCE_TYPE = "difference_image"
RECIPE_TYPE = "difference_recipe"  # the JSON recipe beside each difference image
DROPPED_TYPE = "difference_image_dropped"  # marker: the FITS was deleted, the recipe recreates it
DETECTION_TYPE = "dia_source_detections"  # DiaSources of one detector before association


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
    """The template patches of the tract whose templates cover most of the image (choose_template_tract)."""
    corners = image.corners
    by_tract = defaultdict(list)
    for tract, patch in DEFAULT_SKYMAP.patches_overlapping(*corners):
        found = templates.get((image.band, int(tract)), {}).get(int(patch))
        if found is not None:
            by_tract[int(tract)].append(found)
    if not by_tract:
        return []
    patches = {t: [d.data_id["patch"] for d in found] for t, found in by_tract.items()}
    best = choose_template_tract(corners, patches)
    return sorted(by_tract[best], key=lambda d: d.data_id["patch"])


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


def recipe_of(unit: Unit) -> DifferenceRecipe:
    """The recipe of a unit: its science image, template patches and their registry checksums."""
    science = RecipeFile(unit.inputs[0], unit.checksums[0])
    templates = tuple(RecipeFile(p, c) for p, c in zip(unit.inputs[1:], unit.checksums[1:]))
    return DifferenceRecipe(science, templates, unit.params["tract"], tuple(unit.params["patches"]))


def task(root: Path, unit: Unit) -> TaskResult:
    start = time.perf_counter()
    repo = Repository(root)
    visit, detector = unit.data_id["visit"], unit.data_id["detector"]
    recipe = recipe_of(unit)
    science, template = recipe.inputs(root)
    try:
        difference, dia_sources = recipe.run(science, template)
    except ValueError as err:  # no usable matching kernel: recorded, and this visit has no difference image
        return _no_difference(repo, unit, science, str(err), start)

    stem = f"{unit.day_obs}/{visit}/{{}}_{visit}_det{detector:03d}"
    relative = f"images/difference_image/{stem.format('difference_image')}.fits"
    image_path = repo.staging_path(".fits")
    write_exposure(difference.difference, image_path)
    staged_recipe = repo.staging_path(".json")
    write_recipe(recipe.with_image(relative, sha256_of(image_path)), staged_recipe)
    table_path = repo.staging_path(".parquet")
    pq.write_table(dia_sources, table_path)
    return TaskResult(
        outputs=[Output(DIFFERENCE_TYPE, unit.data_id, image_path, relative, meta=_image_meta(science, unit)),
                 Output(RECIPE_TYPE, unit.data_id, staged_recipe, recipe_path(relative).as_posix(),
                        meta={"image": relative}),
                 Output(DETECTION_TYPE, unit.data_id, table_path, f"catalogs/dia_detections/{stem.format('dia_detections')}.parquet",
                        meta={"rows": dia_sources.num_rows, "band": science.info.band, "mjd": science.info.mjd_mid})],
        rows={"DiaSource": dia_sources.num_rows}, seconds=time.perf_counter() - start)


def plan_drop(repo: Repository) -> list[Unit]:
    """With the drop_difference_images policy, one unit per difference image that has a recipe
    (images made before recipes existed are kept). Inputs: the image and its recipe."""
    if not repo.drop_difference_images:
        return []
    recipes = {(d.data_id["visit"], d.data_id["detector"]): d for d in repo.registry.find(RECIPE_TYPE, status="ok")}
    units = []
    for image in repo.registry.find(DIFFERENCE_TYPE, status="ok"):
        recipe = recipes.get((image.data_id["visit"], image.data_id["detector"]))
        if recipe is not None:
            units.append(Unit(image.data_id, (image.path, recipe.path), (image.sha256, recipe.sha256),
                              day_obs=split_visit_id(image.data_id["visit"])[0]))
    return units


def task_drop(root: Path, unit: Unit) -> TaskResult:
    """Delete one difference FITS after checking that its recipe is the registered one, describes this
    very image, and that every input it names is present and unchanged (so it can be recreated).

    The only task that removes a file outside tmp/: deleting is idempotent, so a run killed between
    the deletion and the commit just repeats it.
    """
    start = time.perf_counter()
    image_path, recipe_file = unit.inputs
    if sha256_of(root / recipe_file) != unit.checksums[1]:
        raise ValueError(f"{root / recipe_file}: changed since it was registered; {image_path} kept")
    recipe = read_recipe(root / recipe_file)
    if recipe.image != RecipeFile(image_path, unit.checksums[0]):
        raise ValueError(f"{root / recipe_file}: describes {recipe.image}, not {image_path}; kept")
    recipe.check_inputs(root, str(root / recipe_file))
    (root / image_path).unlink(missing_ok=True)
    return TaskResult(seconds=time.perf_counter() - start)


STAGE = Stage(name="difference", version="1", output_type=DETECTION_TYPE, plan=plan, task=task, per_detector=True,
              other_outputs=(DIFFERENCE_TYPE, RECIPE_TYPE))
DROP = Stage(name="drop_differences", version="1", output_type=DROPPED_TYPE, plan=plan_drop, task=task_drop)
