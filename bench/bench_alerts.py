"""Alert benchmark (issue 8, Performance): build (visit_alerts) and write (write_alerts) the alert
packets of one detector-visit; goal <= 3 ms CPU per alert for both together.

Synthetic input in the shape of bench_prompt's APDB (built in a few seconds, no simulation): a
4096^2 detector with a TAN-SIP WCS far from the boresight and a spatially varying 41 x 41 pixel
PSF; --n DiaSources tonight with every DiaSource column filled; a history of 40 earlier visits
over a year (bands g, r, i) in which half of tonight's objects and 3000 other persistent objects
are detected with probability 0.6, associated into DiaObjects, plus ForcedSourceOnDiaObject rows
of every object on every earlier visit after its first DiaSource. So an alert of an object seen
before carries ~24 prvDiaSources and up to 40 prvDiaForcedSources, as in bench_prompt.

Timed (median of --repeats runs, wall and CPU seconds, and CPU ms per alert):
  build  visit_alerts (packets, three 30 x 30 cutouts each: science, template, difference)
  write  write_alerts (schema validation + Avro deflate)
Usage: python bench/bench_alerts.py [--n 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pyarrow as pa

from skydp import tables
from skydp.alerts import visit_alerts, write_alerts
from skydp.association import associate
from skydp.exposure import Exposure, Mask, PixelPsf, VisitInfo
from skydp.ids import source_id
from skydp.sim.wcs import detector_wcs, radial_distortion_coefficient

GOAL_MS_PER_ALERT = 3.0
SIZE = 4096
NOISE = 60.0  # nJy per pixel
N_PRIOR_VISITS = 40
N_BACKGROUND_OBJECTS = 3000
DETECTION_PROBABILITY = 0.6
MJD = 61000.2
VISIT = 2026111500012


def make_exposure(rng: np.random.Generator, rotpa: float = 30.0) -> Exposure:
    """A 4096^2 detector far from the boresight (TAN-SIP matters) with a 5 x 5 grid of Gaussian PSFs."""
    wcs = detector_wcs(53.1, -28.1, 30.0, (6000.0, -4000.0), (SIZE, SIZE), radial_distortion_coefficient(5.0, 8000.0))
    grid = np.linspace(0, SIZE - 1, 5)
    gx, gy = np.meshgrid(grid, grid)
    r = np.arange(41) - 20
    sigmas = 1.6 + 0.4 * gx.ravel() / SIZE
    stamps = np.exp(-(r[None, None, :] ** 2 + r[None, :, None] ** 2) / (2 * sigmas[:, None, None] ** 2))
    info = VisitInfo(instrument="LSSTCam-sim", visit=VISIT, detector=0, band="r", day_obs=20261115, mjd=MJD,
                     exptime=30.0, rotpa=rotpa)
    shape = (SIZE, SIZE)
    return Exposure(image=rng.normal(0, NOISE, shape).astype(np.float32),
                    variance=np.full(shape, NOISE**2, np.float32), mask=Mask.empty(shape), wcs=wcs,
                    psf=PixelPsf(stamps / stamps.sum(axis=(1, 2), keepdims=True), gx.ravel(), gy.ravel()),
                    xy0=(0, 0), info=info)


def dia_sources(rng: np.random.Generator, exposure: Exposure, x: np.ndarray, y: np.ndarray, visit: int,
                mjd: float, band: str) -> pa.Table:
    """DiaSources at pixel positions (x, y) with every column of the DiaSource table filled."""
    n = x.size
    ra, dec = exposure.pixel_to_sky(x, y)
    values: dict[str, object] = {}
    for column in tables.columns("DiaSource"):
        if column.datatype == "boolean":
            values[column.name] = rng.uniform(size=n) < 0.1
        elif column.datatype in ("float", "double"):
            values[column.name] = rng.normal(1000.0, 300.0, n)
        elif column.datatype in ("int", "long"):
            values[column.name] = rng.integers(1, 100, n)
    err = rng.uniform(0.02, 0.2, n) / 3600.0
    values.update({
        "diaSourceId": source_id(visit, 0, np.arange(1, n + 1)), "visit": np.full(n, visit),
        "detector": np.zeros(n, np.int64), "band": np.full(n, band), "midpointMjdTai": np.full(n, mjd),
        "time_processed": [datetime.datetime(2026, 11, 15, 6)] * n, "coord_ra": ra, "coord_dec": dec,
        "ra": ra, "dec": dec, "raErr": err / np.cos(np.radians(dec)), "decErr": err,
        "ra_dec_Cov": np.zeros(n), "x": x, "y": y,
    })
    del values["diaObjectId"], values["ssObjectId"], values["parentDiaSourceId"]
    return tables.to_arrow("DiaSource", values)


def forced_history(sources: pa.Table, objects: pa.Table, rng: np.random.Generator) -> pa.Table:
    """ForcedSourceOnDiaObject rows of every DiaObject on every earlier visit after its first DiaSource."""
    visits = sources.group_by(["visit", "band"]).aggregate([("midpointMjdTai", "min")])
    v_id, v_band = visits.column("visit").to_numpy(), visits.column("band").to_numpy(zero_copy_only=False)
    v_mjd = visits.column("midpointMjdTai_min").to_numpy()
    o_id, first = objects.column("diaObjectId").to_numpy(), objects.column("firstDiaSourceMjdTai").to_numpy()
    oi, vi = np.nonzero(v_mjd[None, :] >= first[:, None])
    n = oi.size
    flux = rng.normal(0, 300.0, n)
    return tables.to_arrow("ForcedSourceOnDiaObject", {
        "forcedSourceOnDiaObjectId": np.arange(1, n + 1), "diaObjectId": o_id[oi],
        "coord_ra": objects.column("ra").to_numpy()[oi], "coord_dec": objects.column("dec").to_numpy()[oi],
        "visit": v_id[vi], "detector": np.zeros(n), "band": v_band[vi], "midpointMjdTai": v_mjd[vi],
        "psfDiffFlux": flux, "psfDiffFluxErr": np.full(n, 300.0), "psfFlux": flux + 2e4,
        "psfFluxErr": np.full(n, 320.0),
    })


def build_inputs(n: int, seed: int):
    """Science, template (NaN ROTPA, as a coadd) and difference exposures; tonight's association and history."""
    rng = np.random.default_rng(seed)
    science, difference = make_exposure(rng), make_exposure(rng)
    template = make_exposure(rng, rotpa=float("nan"))
    x, y = rng.uniform(-5, SIZE + 5, (2, n))  # a few cutouts run off the detector edge
    tonight = dia_sources(rng, science, x, y, VISIT, MJD, "r")
    seen = rng.uniform(size=n) < 0.5
    ox = np.concatenate([x[seen], rng.uniform(0, SIZE, N_BACKGROUND_OBJECTS)])
    oy = np.concatenate([y[seen], rng.uniform(0, SIZE, N_BACKGROUND_OBJECTS)])
    parts = []
    for k in range(N_PRIOR_VISITS):
        here = rng.uniform(size=ox.size) < DETECTION_PROBABILITY
        jitter = rng.normal(0, 0.1, (2, int(here.sum())))
        parts.append(dia_sources(rng, science, ox[here] + jitter[0], oy[here] + jitter[1], 2025111500010 + k,
                                 MJD - 365.0 + k * 360.0 / N_PRIOR_VISITS, "gri"[k % 3]))
    prior = associate(pa.concat_tables(parts))
    assoc = associate(tonight, prior.dia_objects, history=prior.dia_sources)
    forced = forced_history(prior.dia_sources, prior.dia_objects, rng)
    return science, template, difference, assoc, prior.dia_sources, forced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="DiaSources (alerts) tonight")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    science, template, difference, assoc, history, forced = build_inputs(args.n, args.seed)
    print(f"inputs: {assoc.dia_sources.num_rows} DiaSources tonight, history of {history.num_rows} DiaSources, "
          f"{forced.num_rows} forced sources")
    times: dict[str, list[tuple[float, float]]] = {"build": [], "write": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"visit_{VISIT}.avro"
        for _ in range(args.repeats):
            w, c = time.perf_counter(), time.process_time()
            alerts = visit_alerts(assoc.dia_sources, assoc.dia_objects, history, forced, science, template,
                                  difference)
            times["build"].append((time.perf_counter() - w, time.process_time() - c))
            w, c = time.perf_counter(), time.process_time()
            write_alerts(path, alerts)
            times["write"].append((time.perf_counter() - w, time.process_time() - c))
        size_mb = path.stat().st_size / 1e6
    n = len(alerts)
    n_prv = sum(len(a["prvDiaSources"] or ()) for a in alerts) / n
    n_forced = sum(len(a["prvDiaForcedSources"] or ()) for a in alerts) / n
    print(f"{n} alerts, mean {n_prv:.1f} prvDiaSources and {n_forced:.1f} prvDiaForcedSources, file {size_mb:.1f} MB")
    print(f"{'step':<6} {'wall s':>8} {'CPU s':>8} {'CPU ms/alert':>13}   (median of {args.repeats})")
    total = 0.0
    for name, runs in times.items():
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        total += cpu
        print(f"{name:<6} {wall:8.3f} {cpu:8.3f} {1e3 * cpu / n:13.2f}")
    per_alert = 1e3 * total / n
    print(f"build + write: {per_alert:.2f} ms CPU per alert (goal <= {GOAL_MS_PER_ALERT} ms): "
          f"{'met' if per_alert <= GOAL_MS_PER_ALERT else 'NOT met'}")


if __name__ == "__main__":
    main()
