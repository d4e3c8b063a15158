"""The association stage: DiaSources join DiaObjects one visit at a time, in time order.

Each visit is a unit that reads the DiaObject table left by the visit before it and writes the
visit's associated DiaSources and the DiaObject table after it. A unit's fingerprint includes the
fingerprint of the unit before it, so a change to any earlier visit re-runs every later one,
while a new night runs only its own visits and recomputes only the DiaObjects they touch.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skydp.association import associate
from skydp.etl.differencing import DETECTION_TYPE
from skydp.etl.repository import Repository
from skydp.etl.stage import Output, Stage, TaskResult, Unit
from skydp.ids import split_visit_id

DIA_SOURCE_TYPE = "dia_source_catalog"
DIA_OBJECT_STATE_TYPE = "dia_object_state"  # the whole DiaObject table after a visit
VERSION = "1"


def dia_source_path(visit: int) -> str:
    return f"catalogs/dia_source/{split_visit_id(visit)[0]}/dia_source_{visit}.parquet"


def dia_object_state_path(visit: int) -> str:
    return f"catalogs/dia_object_state/dia_object_after_{visit}.parquet"


def plan(repo: Repository) -> list[Unit]:
    """One unit per visit with detections, chained in visit order (visit ids increase with time)."""
    by_visit = defaultdict(list)
    for d in repo.registry.find(DETECTION_TYPE, status="ok"):
        by_visit[d.data_id["visit"]].append(d)
    units, previous, history = [], None, []
    for visit in sorted(by_visit):
        parts = sorted(by_visit[visit], key=lambda d: d.data_id["detector"])
        params = {"previous_visit": previous.data_id["visit"] if previous else None,
                  "previous_fingerprint": previous.fingerprint(VERSION) if previous else None,
                  "history": list(history)}
        unit = Unit({"visit": visit}, tuple(d.path for d in parts), tuple(d.sha256 for d in parts),
                    day_obs=split_visit_id(visit)[0], params=params)
        units.append(unit)
        previous = unit
        history.append(dia_source_path(visit))
    return units


def task(root: Path, unit: Unit) -> TaskResult:
    start = time.perf_counter()
    repo = Repository(root)
    visit, previous_visit = unit.data_id["visit"], unit.params["previous_visit"]
    detections = pa.concat_tables([pq.read_table(root / p) for p in unit.inputs])
    state = None if previous_visit is None else pq.read_table(root / dia_object_state_path(previous_visit))
    earlier = [pq.read_table(root / p) for p in unit.params["history"]]
    result = associate(detections, state, history=pa.concat_tables(earlier) if earlier else None)
    updated = result.dia_objects
    kept = [] if state is None else [state.filter(pc.invert(pc.is_in(state["diaObjectId"], updated["diaObjectId"])))]
    after = pa.concat_tables([*kept, updated]).sort_by("diaObjectId")

    sources_path = repo.staging_path(".parquet")
    pq.write_table(result.dia_sources, sources_path)
    state_path = repo.staging_path(".parquet")
    pq.write_table(after, state_path)
    return TaskResult(
        outputs=[Output(DIA_SOURCE_TYPE, unit.data_id, sources_path, dia_source_path(visit),
                        meta={"rows": result.dia_sources.num_rows}),
                 Output(DIA_OBJECT_STATE_TYPE, unit.data_id, state_path, dia_object_state_path(visit),
                        meta={"rows": after.num_rows, "touched": updated.num_rows})],
        rows={"DiaObject": int(len(result.new_ids))}, seconds=time.perf_counter() - start)


STAGE = Stage(name="associate", version=VERSION, output_type=DIA_SOURCE_TYPE, plan=plan, task=task,
              other_outputs=(DIA_OBJECT_STATE_TYPE,))
