"""End to end on the simulator: single-visit processing, image differencing, association and
alerts for every DiaSource, checked against the simulator's truth (slow: ~1-2 min on 2 cores)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.spatial import cKDTree

from skydp.alerts import read_alerts, write_alerts, visit_alerts
from skydp.association import associate, update_dia_objects
from skydp.diffim import subtract_images
from skydp.diffim.dia_sources import detect_dia_sources
from skydp.exposure import read_exposure
from skydp.pipeline import process_visit_image
from skydp.sim import simulate
from skydp.sim.presets import get_preset


@pytest.mark.slow
def test_alerts_from_the_pipeline_on_the_tiny_simulation(tmp_path):
    preset = get_preset("tiny", n_transients=40, n_variables=20)  # enough to test the association
    sim = simulate(tmp_path / "sim", preset=preset, seed=3)
    exposures = [process_visit_image(read_exposure(p)).exposure for p in sim.images]
    exposures.sort(key=lambda e: e.info.mjd)
    templates = {b: min((e for e in exposures if e.info.band == b), key=lambda e: e.psf.shape(256, 256).fwhm)
                 for b in {e.info.band for e in exposures}}
    objects = history = None
    n_alerts = 0
    for science in exposures:
        template = templates[science.info.band]
        if science is template:
            continue
        diff = subtract_images(science, template)
        res = associate(detect_dia_sources(diff, science), objects, history=history)
        history = res.dia_sources if history is None else pa.concat_tables([history, res.dia_sources])
        objects = update_dia_objects(objects, res.dia_objects)
        alerts = visit_alerts(res.dia_sources, objects, history, None, science, diff.matched_template,
                              diff.difference)
        path = tmp_path / f"visit_{science.info.visit}.avro"
        assert write_alerts(path, alerts) == res.dia_sources.num_rows  # every packet validated
        for alert in read_alerts(path):
            src = alert["diaSource"]
            cut = read_exposure(alert["cutoutDifference"])
            x, y = (float(v[0]) for v in cut.sky_to_pixel(np.array([src["ra"]]), np.array([src["dec"]])))
            assert abs(x - src["x"]) < 0.05 and abs(y - src["y"]) < 0.05
            assert alert["diaObject"]["nDiaSources"] == len(alert["prvDiaSources"]) + 1
        n_alerts += len(alerts)
    assert n_alerts > 20

    # truth: every transient or variable detected (within 0.5") in two or more visits forms one DiaObject
    truth = pq.read_table(sim.truth_epochs).to_pandas()
    kinds = pq.read_table(sim.truth_objects, columns=["id", "type"]).to_pandas().set_index("id")["type"]
    truth = truth[truth["id"].map(kinds).isin(["transient", "variable"]).to_numpy()]
    linked: dict[int, list[int]] = {}
    for visit in np.unique(history.column("visit").to_numpy()):
        rows = history.filter(pa.compute.equal(history.column("visit"), visit))
        here = truth[truth["visit"] == visit]
        if here.empty or rows.num_rows == 0:
            continue
        cos_dec = np.cos(np.radians(here["dec"].to_numpy()[0]))
        tree = cKDTree(np.stack([here["ra"].to_numpy() * cos_dec, here["dec"].to_numpy()], 1))
        ra, dec = rows.column("ra").to_numpy(), rows.column("dec").to_numpy()
        dist, idx = tree.query(np.stack([ra * cos_dec, dec], 1), distance_upper_bound=0.5 / 3600)
        for oid, d, i in zip(rows.column("diaObjectId").to_numpy(), dist, idx):
            if np.isfinite(d):
                linked.setdefault(int(here["id"].to_numpy()[i]), []).append(int(oid))
    repeated = {tid: set(oids) for tid, oids in linked.items() if len(oids) >= 2}
    assert len(repeated) >= 5
    assert all(len(oids) == 1 for oids in repeated.values()), repeated
