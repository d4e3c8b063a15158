"""The single-visit stage: each ingested (visit, detector) becomes a processed visit_image, its
background model, and a Source catalog fragment; the CcdVisit summary goes into the registry row."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits

from skydp.etl.faults import checkpoint
from skydp.etl.ingest import INPUT_TYPE
from skydp.etl.repository import Repository
from skydp.etl.stage import Output, Stage, TaskResult, Unit
from skydp.exposure import read_exposure, write_exposure
from skydp.pipeline import Background, combine_snaps, process_visit_image

SOURCE_TYPE = "source_catalog"
VISIT_IMAGE_TYPE = "visit_image"
BACKGROUND_TYPE = "visit_background"


def plan(repo: Repository) -> list[Unit]:
    """One unit per (visit, detector) with every snap of it as input."""
    groups: dict[tuple[int, int], list] = defaultdict(list)
    for ds in repo.registry.find(INPUT_TYPE, status="ok"):
        groups[(ds.data_id["visit"], ds.data_id["detector"])].append(ds)
    units = []
    for (visit, detector), snaps in sorted(groups.items()):
        snaps.sort(key=lambda d: d.data_id["snap"])
        units.append(Unit({"visit": visit, "detector": detector}, tuple(d.path for d in snaps),
                          tuple(d.sha256 for d in snaps), day_obs=snaps[0].meta["day_obs"]))
    return units


def _write_background(background: Background, path: Path) -> None:
    arrays = background.to_arrays()
    hdus = fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(np.asarray(v), name=k.upper()) for k, v in arrays.items()])
    hdus.writeto(path)


def read_background(path: Path) -> Background:
    """Inverse of the stage's background file: the model the visit_image had subtracted."""
    with fits.open(path) as hdus:
        return Background.from_arrays({h.name.lower(): h.data for h in hdus[1:]})


def _write_in_row_groups(table: pa.Table, path: Path, row_group_size: int = 4096) -> None:
    """Parquet written group by group (the crash tests kill the writer between two groups)."""
    with pq.ParquetWriter(path, table.schema) as writer:
        for start in range(0, max(table.num_rows, 1), row_group_size):
            writer.write_table(table.slice(start, row_group_size))
            checkpoint("single_visit:mid-parquet")


def task(root: Path, unit: Unit) -> TaskResult:
    """Process one detector; writes staged files only."""
    start = time.perf_counter()
    repo = Repository(root)
    visit, detector, day_obs = unit.data_id["visit"], unit.data_id["detector"], unit.day_obs
    exposures = [read_exposure(root / p) for p in unit.inputs]
    exposure = exposures[0] if len(exposures) == 1 else combine_snaps(exposures)
    result = process_visit_image(exposure)
    stem = f"{day_obs}/{visit}/{{}}_{visit}_det{detector:03d}"
    data_id = unit.data_id

    image_path = repo.staging_path(".fits")
    write_exposure(result.exposure, image_path)
    background_path = repo.staging_path(".fits")
    background_path.unlink()
    _write_background(result.background, background_path)
    source_path = repo.staging_path(".parquet")
    _write_in_row_groups(result.sources, source_path)

    summary = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in result.ccd_visit.items()}
    n_sources = result.sources.num_rows
    return TaskResult(
        outputs=[
            Output(VISIT_IMAGE_TYPE, data_id, image_path, f"images/visit_image/{stem.format('visit_image')}.fits"),
            Output(BACKGROUND_TYPE, data_id, background_path, f"images/background/{stem.format('background')}.fits"),
            Output(SOURCE_TYPE, data_id, source_path, f"catalogs/source/{stem.format('source')}.parquet",
                   meta={"ccd_visit": summary, "rows": n_sources}),
        ],
        rows={"Source": n_sources},
        seconds=time.perf_counter() - start,
    )


STAGE = Stage(name="single_visit", version="1", output_type=SOURCE_TYPE, plan=plan, task=task, per_detector=True)
