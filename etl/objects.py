"""The object stage: per (tract, patch), detect and measure Objects on the deep coadds of every band."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from skydp.coadd.io import read_coadd
from skydp.etl.coadds import DEEP_TYPE, INPUTS_SUFFIX, sub_patch
from skydp.etl.repository import Repository
from skydp.etl.stage import Output, Stage, TaskResult, Unit
from skydp.objects import measure_objects
from skydp.skymap import DEFAULT_SKYMAP

OBJECT_TYPE = "object_catalog"


def plan(repo: Repository) -> list[Unit]:
    """One unit per patch with at least one deep coadd; it reads the coadds of all bands."""
    groups = defaultdict(list)
    inputs = {(d.data_id["tract"], d.data_id["patch"], d.data_id["band"]): d.path
              for d in repo.registry.find(DEEP_TYPE + INPUTS_SUFFIX, status="ok")}
    for coadd in repo.registry.find(DEEP_TYPE, status="ok"):
        groups[(coadd.data_id["tract"], coadd.data_id["patch"])].append(coadd)
    units = []
    for (tract, patch), coadds in sorted(groups.items()):
        coadds.sort(key=lambda d: d.data_id["band"])
        units.append(Unit({"tract": tract, "patch": patch}, tuple(d.path for d in coadds),
                          tuple(d.sha256 for d in coadds),
                          params={"bands": [d.data_id["band"] for d in coadds],
                                  "inputs": [inputs[(tract, patch, d.data_id["band"])] for d in coadds]}))
    return units


def task(root: Path, unit: Unit) -> TaskResult:
    start = time.perf_counter()
    repo = Repository(root)
    tract, patch = unit.data_id["tract"], unit.data_id["patch"]
    coadds = {band: read_coadd(root / image, root / inputs)
              for band, image, inputs in zip(unit.params["bands"], unit.inputs, unit.params["inputs"])}
    first = next(iter(coadds.values())).exposure
    info = sub_patch(DEFAULT_SKYMAP.patch_info(tract, patch), first.bbox)
    objects = measure_objects(coadds, info, DEFAULT_SKYMAP)
    staged = repo.staging_path(".parquet")
    pq.write_table(objects, staged)
    relative = f"catalogs/object/{tract}/object_{tract}_{patch}.parquet"
    return TaskResult(outputs=[Output(OBJECT_TYPE, unit.data_id, staged, relative, meta={"rows": objects.num_rows})],
                      rows={"Object": objects.num_rows}, seconds=time.perf_counter() - start)


STAGE = Stage(name="objects", version="1", output_type=OBJECT_TYPE, plan=plan, task=task, per_detector=True)
