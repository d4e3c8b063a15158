"""Publish: per-detector catalog fragments -> HATS catalogs, plain Visit/CcdVisit/ImageMetadata
Parquet tables, then the DuckDB database over all of them.

Both stages are single units whose fingerprint covers every fragment they read, so they run only
when something upstream changed. HATS catalogs are rebuilt from all fragments (write_hats swaps a
complete new catalog in), which makes an incremental night give exactly the tables of a run from
scratch.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from skydp import tables
from skydp.etl.faults import checkpoint
from skydp.etl.association import DIA_OBJECT_UPDATE_TYPE, DIA_SOURCE_TYPE, current_dia_objects
from skydp.etl.coadds import DEEP_TYPE, TEMPLATE_TYPE
from skydp.etl.differencing import DIFFERENCE_TYPE, DROPPED_TYPE, RECIPE_TYPE
from skydp.etl.forced import FORCED_DIA_TYPE, FORCED_TYPE
from skydp.etl.image_metadata import derived_image_row, image_metadata_table, visit_image_row
from skydp.etl.ingest import INPUT_TYPE
from skydp.etl.objects import OBJECT_TYPE
from skydp.etl.registry import Dataset
from skydp.etl.repository import Repository
from skydp.etl.snapshots import make_snapshot, prune_snapshots
from skydp.etl.single_visit import SOURCE_TYPE, VISIT_IMAGE_TYPE
from skydp.etl.stage import Output, Stage, TaskResult, Unit
from skydp.etl.visit_tables import ccd_visit_table, visit_table
from skydp.objects import match_sources_to_objects
from skydp.store import build_database, write_hats

PUBLISH_TYPE = "published_tables"
DATABASE_TYPE = "catalog_database"
PLAIN_TABLES = ("Visit", "CcdVisit", "ImageMetadata")
# fragment dataset type -> HATS table it feeds
FRAGMENTS = {SOURCE_TYPE: "Source", OBJECT_TYPE: "Object", FORCED_TYPE: "ForcedSource",
             DIA_SOURCE_TYPE: "DiaSource", FORCED_DIA_TYPE: "ForcedSourceOnDiaObject"}
DERIVED_IMAGES = (DEEP_TYPE, TEMPLATE_TYPE, DIFFERENCE_TYPE)
TIMESTAMP_COLUMNS = ("expMidpt", "obsStart")


def _fragments_unit(repo: Repository, types: tuple[str, ...]) -> list[Unit]:
    rows = [d for t in types for d in repo.registry.find(t, status="ok")]
    return [Unit({"scope": "all"}, tuple(d.path for d in rows), tuple(d.sha256 for d in rows))]


def plan_publish(repo: Repository) -> list[Unit]:
    unit = _fragments_unit(repo, (*FRAGMENTS, DIA_OBJECT_UPDATE_TYPE, VISIT_IMAGE_TYPE, *DERIVED_IMAGES,
                                  RECIPE_TYPE))[0]
    dropped = _dropped(repo)
    params = {"dropped_difference_images": sorted(dropped)} if dropped else {}
    return [Unit(unit.data_id, unit.inputs, unit.checksums, params=params)]


def _dropped(repo: Repository) -> set[tuple[int, int]]:
    """(visit, detector) of the difference images kept only as recipes."""
    return {(d.data_id["visit"], d.data_id["detector"]) for d in repo.registry.find(DROPPED_TYPE, status="ok")}


def _difference_images(repo: Repository, dropped: set[tuple[int, int]]) -> list[Dataset]:
    """Difference image rows; a dropped image is listed by its recipe (path and checksum), which
    ``Catalog.image`` recreates it from."""
    recipes = {(d.data_id["visit"], d.data_id["detector"]): d for d in repo.registry.find(RECIPE_TYPE, status="ok")}
    out = []
    for image in repo.registry.find(DIFFERENCE_TYPE, status="ok"):
        key = (image.data_id["visit"], image.data_id["detector"])
        if key in dropped:
            image = dataclasses.replace(image, path=recipes[key].path, sha256=recipes[key].sha256)
        out.append(image)
    return out


def _catalog_tables(root: Path, repo: Repository) -> dict[str, pa.Table]:
    """Every HATS table from its fragments; Source.objectId from the nearest primary Object."""
    out = {}
    for dataset_type, table_name in FRAGMENTS.items():
        # to_arrow: fragments written before a nullable column was added to schema/ get it as nulls
        parts = [tables.to_arrow(table_name, pq.read_table(root / d.path))
                 for d in repo.registry.find(dataset_type, status="ok")]
        out[table_name] = pa.concat_tables(parts) if parts else tables.empty_table(table_name)
    dia_objects = current_dia_objects([root / d.path for d in repo.registry.find(DIA_OBJECT_UPDATE_TYPE, status="ok")])
    out["DiaObject"] = tables.empty_table("DiaObject") if dia_objects is None else dia_objects.sort_by("diaObjectId")
    if out["Object"].num_rows and out["Source"].num_rows:
        object_ids = match_sources_to_objects(out["Source"], out["Object"])
        source = out["Source"]
        column = pa.array(object_ids, type=source.schema.field("objectId").type, mask=object_ids <= 0)
        out["Source"] = source.set_column(source.schema.get_field_index("objectId"), "objectId", column)
    return out


def _ccd_summary(meta: dict) -> dict:
    summary = dict(meta["ccd_visit"])
    for column in TIMESTAMP_COLUMNS:
        if isinstance(summary.get(column), str):
            summary[column] = datetime.datetime.fromisoformat(summary[column])
    return summary


def task_publish(root: Path, unit: Unit) -> TaskResult:
    start = time.perf_counter()
    repo = Repository(root)
    registry = repo.registry
    for table_name, table in _catalog_tables(root, repo).items():
        write_hats(table_name, table, root / "hats")
        checkpoint("publish:hats-written")

    catalogs = registry.find(SOURCE_TYPE, status="ok")
    summaries = [_ccd_summary(d.meta) for d in catalogs]
    inputs = registry.find(INPUT_TYPE, status="ok")
    pointing = {d.data_id["visit"]: d.meta for d in inputs}
    instrument = {d.data_id["visit"]: d.meta.get("instrument", "") for d in inputs}
    by_ccd = {(s["visitId"], s["detector"]): s for s in summaries}
    images = [visit_image_row(d, by_ccd[(d.data_id["visit"], d.data_id["detector"])], instrument[d.data_id["visit"]])
              for d in registry.find(VISIT_IMAGE_TYPE, status="ok")
              if (d.data_id["visit"], d.data_id["detector"]) in by_ccd]
    dropped = {tuple(key) for key in unit.params.get("dropped_difference_images", [])}
    derived = [d for t in (DEEP_TYPE, TEMPLATE_TYPE) for d in registry.find(t, status="ok")]
    images += [derived_image_row(d, d.meta) for d in derived + _difference_images(repo, dropped)]
    plain = {"Visit": visit_table(summaries, pointing), "CcdVisit": ccd_visit_table(summaries),
             "ImageMetadata": image_metadata_table(images)}
    outputs = []
    for name, table in plain.items():
        staged = repo.staging_path(".parquet")
        pq.write_table(table, staged)
        outputs.append(Output(f"table_{name}", {"table": name}, staged, f"tables/{name}.parquet"))
    repo.close()
    return TaskResult(outputs=outputs, seconds=time.perf_counter() - start)


def plan_database(repo: Repository) -> list[Unit]:
    return _fragments_unit(repo, (PUBLISH_TYPE, *(f"table_{n}" for n in PLAIN_TABLES)))


def task_database(root: Path, unit: Unit) -> TaskResult:
    """Snapshot the published files, point a new database at the snapshot, drop old snapshots."""
    start = time.perf_counter()
    name = unit.fingerprint(DATABASE.version)[:16]
    snapshot = make_snapshot(root, name)
    checkpoint("database:snapshot")
    build_database(root, source=snapshot)
    prune_snapshots(root, name)
    return TaskResult(seconds=time.perf_counter() - start)


PUBLISH = Stage(name="publish", version="1", output_type=PUBLISH_TYPE, plan=plan_publish, task=task_publish)
DATABASE = Stage(name="database", version="1", output_type=DATABASE_TYPE, plan=plan_database, task=task_database)
