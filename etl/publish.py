"""Publish: per-detector catalog fragments -> HATS catalogs, plain Visit/CcdVisit/ImageMetadata
Parquet tables, then the DuckDB database over all of them.

Both stages are single units whose fingerprint covers every fragment they read, so they run only
when something upstream changed. HATS catalogs are rebuilt from all fragments (write_hats swaps a
complete new catalog in), which makes an incremental night give exactly the tables of a run from
scratch.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from skydp import tables
from skydp.etl.faults import checkpoint
from skydp.etl.image_metadata import image_metadata_table, visit_image_row
from skydp.etl.ingest import INPUT_TYPE
from skydp.etl.repository import Repository
from skydp.etl.snapshots import make_snapshot, prune_snapshots
from skydp.etl.single_visit import SOURCE_TYPE, VISIT_IMAGE_TYPE
from skydp.etl.stage import Output, Stage, TaskResult, Unit
from skydp.etl.visit_tables import ccd_visit_table, visit_table
from skydp.store import build_database, write_hats

PUBLISH_TYPE = "published_tables"
DATABASE_TYPE = "catalog_database"
PLAIN_TABLES = ("Visit", "CcdVisit", "ImageMetadata")
# per-detector fragment dataset type -> HATS table it feeds
FRAGMENTS = {SOURCE_TYPE: "Source"}
TIMESTAMP_COLUMNS = ("expMidpt", "obsStart")


def _fragments_unit(repo: Repository, types: tuple[str, ...]) -> list[Unit]:
    rows = [d for t in types for d in repo.registry.find(t, status="ok")]
    return [Unit({"scope": "all"}, tuple(d.path for d in rows), tuple(d.sha256 for d in rows))]


def plan_publish(repo: Repository) -> list[Unit]:
    return _fragments_unit(repo, (*FRAGMENTS, VISIT_IMAGE_TYPE))


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
    for dataset_type, table_name in FRAGMENTS.items():
        parts = [pq.read_table(root / d.path) for d in registry.find(dataset_type, status="ok")]
        table = pa.concat_tables(parts) if parts else tables.empty_table(table_name)
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
