"""The association stage: DiaSources join DiaObjects one visit at a time, in time order.

Each visit is a unit that writes the visit's associated DiaSources and a DiaObject *update*: the
rows of the DiaObjects the visit created or changed, as they are after it. The DiaObject table at
any time is the latest row of every object over the updates before it (``current_dia_objects``).
A unit reads only the earlier DiaObject updates and DiaSources near its own detections
(``skydp.etl.sky_box``), so a visit costs what the history of its patch of sky costs, and a new
night writes only the DiaObjects it touches. A unit's fingerprint includes the fingerprint of the
unit before it, so a change to any earlier visit re-runs every later one.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from skydp.association import associate
from skydp.etl.differencing import DETECTION_TYPE
from skydp.etl.repository import Repository
from skydp.etl.sky_box import SkyBox, read_in_box
from skydp.etl.stage import Output, Stage, TaskResult, Unit
from skydp.ids import split_visit_id

DIA_SOURCE_TYPE = "dia_source_catalog"
DIA_OBJECT_UPDATE_TYPE = "dia_object_update"  # the DiaObjects a visit created or changed, after it
VERSION = "2"
# Earlier DiaObject rows and DiaSources are read within this margin of a visit's detections. It
# must exceed how far an object's DiaSources lie from its current mean: each joined within the 1"
# radius of the mean of the n before it, which moved it by at most 1"/n, so they lie within
# 1" + sum(1/n) ~ 1" + ln(N) of it: under 10" for a million DiaSources per object.
HISTORY_MARGIN_ARCSEC = 30.0


def dia_source_path(visit: int) -> str:
    return f"catalogs/dia_source/{split_visit_id(visit)[0]}/dia_source_{visit}.parquet"


def dia_object_update_path(visit: int) -> str:
    return f"catalogs/dia_object_update/{split_visit_id(visit)[0]}/dia_object_update_{visit}.parquet"


def current_dia_objects(paths: Sequence[Path], box: SkyBox | None = None,
                        columns: list[str] | None = None) -> pa.Table | None:
    """The DiaObject table after the updates in ``paths``: the latest row of every object (the one
    with the most DiaSources: each update of an object adds at least one), restricted to rows in
    ``box`` (grow the box by ``HISTORY_MARGIN_ARCSEC`` beyond the area of interest, so that an
    object's latest row is read with its older ones). None when there is no update."""
    read = None if columns is None else sorted({*columns, "diaObjectId", "nDiaSources"})
    rows = read_in_box(paths, box, read)
    if rows is None:
        return None
    ids, n = rows["diaObjectId"].to_numpy(), rows["nDiaSources"].to_numpy()
    order = np.lexsort((n, ids))
    last = np.ones(order.size, bool)
    last[:-1] = ids[order[1:]] != ids[order[:-1]]
    latest = rows.take(pa.array(order[last]))
    return latest if columns is None else latest.select(columns)


def plan(repo: Repository) -> list[Unit]:
    """One unit per visit with detections, chained in visit order (visit ids increase with time)."""
    by_visit = defaultdict(list)
    for d in repo.registry.find(DETECTION_TYPE, status="ok"):
        by_visit[d.data_id["visit"]].append(d)
    units, previous, earlier = [], None, []
    for visit in sorted(by_visit):
        parts = sorted(by_visit[visit], key=lambda d: d.data_id["detector"])
        params = {"previous_fingerprint": previous.fingerprint(VERSION) if previous else None,
                  "earlier_visits": list(earlier)}
        unit = Unit({"visit": visit}, tuple(d.path for d in parts), tuple(d.sha256 for d in parts),
                    day_obs=split_visit_id(visit)[0], params=params)
        units.append(unit)
        previous = unit
        earlier.append(visit)
    return units


def task(root: Path, unit: Unit) -> TaskResult:
    start = time.perf_counter()
    repo = Repository(root)
    visit, earlier = unit.data_id["visit"], unit.params["earlier_visits"]
    detections = pa.concat_tables([pq.read_table(root / p) for p in unit.inputs])
    box = SkyBox.around(detections["ra"].to_numpy(), detections["dec"].to_numpy(), HISTORY_MARGIN_ARCSEC)
    state = current_dia_objects([root / dia_object_update_path(v) for v in earlier], box)
    history = read_in_box([root / dia_source_path(v) for v in earlier], box)
    result = associate(detections, state, history=history)
    sources_path = repo.staging_path(".parquet")
    pq.write_table(result.dia_sources, sources_path)
    update_path = repo.staging_path(".parquet")
    pq.write_table(result.dia_objects, update_path)
    return TaskResult(
        outputs=[Output(DIA_SOURCE_TYPE, unit.data_id, sources_path, dia_source_path(visit),
                        meta={"rows": result.dia_sources.num_rows}),
                 Output(DIA_OBJECT_UPDATE_TYPE, unit.data_id, update_path, dia_object_update_path(visit),
                        meta={"rows": result.dia_objects.num_rows})],
        rows={"DiaObject": len(result.new_ids)}, seconds=time.perf_counter() - start)


STAGE = Stage(name="associate", version=VERSION, output_type=DIA_SOURCE_TYPE, plan=plan, task=task,
              other_outputs=(DIA_OBJECT_UPDATE_TYPE,))
