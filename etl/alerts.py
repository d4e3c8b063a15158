"""The alert stage: per (visit, detector), one LSST alert packet for every DiaSource, written as an
Avro file, with the DiaObject as it stood after the visit, the earlier DiaSources and forced
photometry of that DiaObject, and science, template and difference cutouts."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from skydp.alerts import visit_alerts, write_alerts
from skydp.diffim.recreate import load_difference
from skydp.diffim.template import template_for
from skydp.etl.association import DIA_OBJECT_UPDATE_TYPE, DIA_SOURCE_TYPE, HISTORY_MARGIN_ARCSEC
from skydp.etl.differencing import DETECTION_TYPE, DIFFERENCE_TYPE
from skydp.etl.forced import FORCED_DIA_TYPE
from skydp.etl.repository import Repository
from skydp.etl.sky_box import SkyBox, read_in_box
from skydp.etl.stage import Output, Stage, TaskResult, Unit
from skydp.exposure import read_exposure
from skydp.ids import split_visit_id
from skydp.warp import warp_exposure

ALERT_TYPE = "alert_packets"


def plan(repo: Repository) -> list[Unit]:
    """One unit per difference image whose visit has been associated."""
    registry = repo.registry
    associated = {d.data_id["visit"]: d for d in registry.find(DIA_SOURCE_TYPE, status="ok")}
    updates = {d.data_id["visit"]: d for d in registry.find(DIA_OBJECT_UPDATE_TYPE, status="ok")}
    differences = {(d.data_id["visit"], d.data_id["detector"]): d for d in registry.find(DIFFERENCE_TYPE, status="ok")}
    forced = sorted(registry.find(FORCED_DIA_TYPE, status="ok"), key=lambda d: (d.data_id["visit"], d.data_id["detector"]))
    units = []
    for detection in registry.find(DETECTION_TYPE, status="ok"):
        visit, detector = detection.data_id["visit"], detection.data_id["detector"]
        if visit not in associated or visit not in updates or (visit, detector) not in differences:
            continue
        earlier_sources = [d for v, d in sorted(associated.items()) if v < visit]
        earlier_forced = [d for d in forced if d.data_id["visit"] < visit]
        science = registry.get("visit_image", {"visit": visit, "detector": detector})
        difference = differences[(visit, detector)]
        fixed = [associated[visit], updates[visit], science, difference]
        units.append(Unit({"visit": visit, "detector": detector},
                          tuple(d.path for d in fixed + earlier_sources + earlier_forced),
                          tuple(d.sha256 for d in fixed + earlier_sources + earlier_forced),
                          day_obs=split_visit_id(visit)[0],
                          params={"n_sources": len(earlier_sources), "template": difference.meta["template"]}))
    return units


def task(root: Path, unit: Unit) -> TaskResult:
    start = time.perf_counter()
    repo = Repository(root)
    visit, detector = unit.data_id["visit"], unit.data_id["detector"]
    sources_path, update_path, science_path, difference_path, *rest = unit.inputs
    n_sources = unit.params["n_sources"]
    dia_sources = pq.read_table(root / sources_path)
    dia_sources = dia_sources.filter(pc.equal(dia_sources["detector"], detector))
    science, difference = read_exposure(root / science_path), load_difference(root, difference_path)
    template = unit.params["template"]
    matched = warp_exposure(template_for(science, template["tract"], template["patches"],
                                         [root / p for p in template["paths"]]),
                            science.wcs, science.shape, science.xy0)
    matched.info = replace(matched.info, rotpa=science.info.rotpa)  # now on the science grid
    # the visit's DiaObject update holds the DiaObject of each of its DiaSources; their earlier
    # DiaSources and forced fluxes are read near the detector's DiaSources only
    box = SkyBox.around(dia_sources["ra"].to_numpy(), dia_sources["dec"].to_numpy(), HISTORY_MARGIN_ARCSEC)
    alerts = visit_alerts(dia_sources, pq.read_table(root / update_path),
                          read_in_box([root / p for p in rest[:n_sources]], box),
                          read_in_box([root / p for p in rest[n_sources:]], box, ra="coord_ra", dec="coord_dec"),
                          science, matched, difference)
    staged = repo.staging_path(".avro")
    write_alerts(staged, alerts)
    relative = f"alerts/{unit.day_obs}/{visit}/alerts_{visit}_det{detector:03d}.avro"
    return TaskResult(outputs=[Output(ALERT_TYPE, unit.data_id, staged, relative, meta={"alerts": len(alerts)})],
                      rows={"alerts": len(alerts)}, seconds=time.perf_counter() - start)


STAGE = Stage(name="alerts", version="1", output_type=ALERT_TYPE, plan=plan, task=task, per_detector=True)
