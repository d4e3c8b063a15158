"""Prompt-processing benchmark (issue 8, Performance): the whole per-detector alert chain for one
4k x 4k detector-visit must take <= 30 s, half of LSST's 60 s alert budget.

Setup (once, cached in --keep DIR when given): a simulated r-band survey of one 4096^2 detector
(demo field, dithered and rotated pointings, transients and variables); every visit through
single-visit processing; a template coadd of the three best-seeing visits other than the last,
built on the sky map's tract grid (so the chain has to warp it, as in the ETL); the last visit is
the science image. A DiaObject history in the shape of an APDB: 40 earlier visits over a year
(bands g, r, i) with prior DiaSources of half of tonight's detections (variables seen before),
of 3000 other persistent DiaObjects spread over the detector and of one-off detections, associated
visit by visit into DiaObjects, plus ForcedSourceOnDiaObject rows of every object on every
earlier visit after its first detection.

Timed chain (library calls, not the ETL), median of --repeats runs, wall and CPU seconds:
  read       read_exposure of the visit image and of the template
  history    the DiaObject, DiaSource and forced-source history (Parquet)
  difference subtract_images (template warp, kernel fit, convolution, decorrelation)
  detect     detect_dia_sources (detection, measurement, dipoles, forced science flux)
  associate  associate(tonight's DiaSources, DiaObjects, history)
  alerts     visit_alerts (packets with 30 x 30 cutouts; the template cutout is the PSF-matched
             template on the science grid, which Difference already holds)
  write      write_alerts (schema validation + Avro deflate)
Usage: python bench/bench_prompt.py [--keep DIR] [--repeats 3] [--size 4096]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.time import Time

from skydp import tables
from skydp.alerts import visit_alerts, write_alerts
from skydp.association import associate
from skydp.coadd import make_coadd
from skydp.diffim import detect_dia_sources, subtract_images
from skydp.exposure import read_exposure, write_exposure
from skydp.ids import make_visit_id, source_id
from skydp.pipeline.process import process_visit_image
from skydp.sim import simulate
from skydp.sim.presets import get_preset
from skydp.skymap import DEFAULT_SKYMAP
from skydp.warp import warp_exposure

ALERT_BUDGET_S = 60.0
GOAL_S = 30.0
TEMPLATE_MARGIN = 64  # px of template around the detector footprint, as the ETL's difference stage
N_PRIOR_VISITS = 40
N_BACKGROUND_OBJECTS = 3000
N_ONE_OFF_PER_VISIT = 30
SEEN_BEFORE_FRACTION = 0.5


def build_images(cache: Path, size: int, seed: int) -> tuple[Path, Path]:
    """Simulate, process, and write the science visit image and the tract-grid template coadd."""
    science_path, template_path = cache / "science.fits", cache / "template.fits"
    if science_path.exists() and template_path.exists():
        return science_path, template_path
    preset = get_preset("demo", detector_shape=(size, size), visits_per_band={"r": 5}, n_nights=5,
                        n_transients=60, n_variables=40)
    t0 = time.perf_counter()
    sim = simulate(cache / "sim", preset=preset, seed=seed, jobs=1)
    visits = pq.read_table(sim.visits).to_pandas().sort_values("mjd")
    science_row = visits.iloc[-1]
    template_rows = visits.iloc[:-1].sort_values("seeing").iloc[:3]
    print(f"setup: simulated {len(visits)} visits of {size}^2 in {time.perf_counter() - t0:.0f} s", flush=True)
    science = process_visit_image(read_exposure(sim.outdir / science_row.image)).exposure
    write_exposure(science, science_path)

    ra, dec = science.corners()
    tract = int(DEFAULT_SKYMAP.find_tract(np.mean(ra), np.mean(dec)))
    x, y = DEFAULT_SKYMAP.tract_pixels(tract, ra, dec)
    x0, y0 = int(np.floor(np.min(x))) - TEMPLATE_MARGIN, int(np.floor(np.min(y))) - TEMPLATE_MARGIN
    x1, y1 = int(np.ceil(np.max(x))) + TEMPLATE_MARGIN, int(np.ceil(np.max(y))) + TEMPLATE_MARGIN
    wcs = DEFAULT_SKYMAP.tract_wcs(tract).deepcopy()
    wcs.wcs.crpix = wcs.wcs.crpix - np.array([x0, y0], dtype=float)
    warps = []
    for image in template_rows.image:
        processed = process_visit_image(read_exposure(sim.outdir / image)).exposure
        warps.append(warp_exposure(processed, wcs, (y1 - y0, x1 - x0), xy0=(x0, y0)))
    write_exposure(make_coadd(warps).exposure, template_path)
    print(f"setup: science visit {science.info.visit}, template of visits {list(template_rows.visit)} on tract "
          f"{tract} ({x1 - x0} x {y1 - y0} px); {time.perf_counter() - t0:.0f} s in all", flush=True)
    return science_path, template_path


def build_history(cache: Path, science_path: Path, template_path: Path, seed: int) -> dict[str, Path]:
    """Synthetic APDB content before the science visit (see the module docstring), as Parquet files."""
    paths = {name: cache / f"{name}.parquet" for name in ("dia_objects", "dia_sources", "forced")}
    if all(p.exists() for p in paths.values()):
        return paths
    rng = np.random.default_rng(seed)
    science = read_exposure(science_path)
    tonight = detect_dia_sources(subtract_images(science, read_exposure(template_path)), science)
    info = science.info
    # persistent objects: half of tonight's detections and background objects uniform over the detector
    seen = rng.uniform(size=tonight.num_rows) < SEEN_BEFORE_FRACTION
    bx, by = rng.uniform(0, science.width, N_BACKGROUND_OBJECTS), rng.uniform(0, science.height, N_BACKGROUND_OBJECTS)
    b_ra, b_dec = science.pixel_to_sky(bx + science.xy0[0], by + science.xy0[1])
    obj_ra = np.concatenate([tonight.column("ra").to_numpy()[seen], b_ra])
    obj_dec = np.concatenate([tonight.column("dec").to_numpy()[seen], b_dec])
    obj_flux = rng.lognormal(8, 1, obj_ra.size) * rng.choice([-1, 1], obj_ra.size)
    parts = []
    for k in range(N_PRIOR_VISITS):
        mjd = info.mjd - 365.0 + k * 360.0 / N_PRIOR_VISITS
        visit = make_visit_id(int(Time(mjd, format="mjd").strftime("%Y%m%d")), 10 + k)
        here = np.flatnonzero(rng.uniform(size=obj_ra.size) < 0.6)
        n_new = N_ONE_OFF_PER_VISIT
        new_x, new_y = rng.uniform(0, science.width, n_new), rng.uniform(0, science.height, n_new)
        new_ra, new_dec = science.pixel_to_sky(new_x + science.xy0[0], new_y + science.xy0[1])
        n = here.size + n_new
        rows = tonight.take(rng.integers(0, tonight.num_rows, n))  # column template: every measured field filled
        err = rng.uniform(0.02, 0.2, n) / 3600.0
        cos_dec = np.cos(np.radians(obj_dec.mean()))
        flux = np.concatenate([obj_flux[here], rng.lognormal(7, 0.5, n_new)]) * rng.normal(1, 0.1, n)
        values = {
            "diaSourceId": source_id(visit, info.detector, np.arange(n)), "visit": np.full(n, visit),
            "band": np.full(n, "gri"[k % 3]), "midpointMjdTai": np.full(n, mjd),
            "ra": np.concatenate([obj_ra[here], new_ra]) + rng.normal(0, err) / cos_dec,
            "dec": np.concatenate([obj_dec[here], new_dec]) + rng.normal(0, err),
            "raErr": err / cos_dec, "decErr": err, "ra_dec_Cov": np.zeros(n), "psfFlux": flux, "psfFluxErr": np.sqrt(np.abs(flux)) * 5 + 50,
            "scienceFlux": flux + 2e4, "scienceFluxErr": np.full(n, 150.0),
        }
        values["coord_ra"], values["coord_dec"] = values["ra"], values["dec"]
        for name, v in values.items():
            rows = rows.set_column(rows.column_names.index(name), name, pa.array(v, rows.schema.field(name).type))
        parts.append(rows)
    prior = associate(pa.concat_tables(parts))
    pq.write_table(prior.dia_sources, paths["dia_sources"])
    pq.write_table(prior.dia_objects, paths["dia_objects"])
    pq.write_table(forced_history(prior.dia_sources, prior.dia_objects, info.detector, rng), paths["forced"])
    print(f"setup: history of {prior.dia_sources.num_rows} DiaSources in {prior.dia_objects.num_rows} DiaObjects "
          f"over {N_PRIOR_VISITS} visits ({int(seen.sum())} of tonight's {tonight.num_rows} detections seen before)",
          flush=True)
    return paths


def forced_history(sources: pa.Table, objects: pa.Table, detector: int, rng: np.random.Generator) -> pa.Table:
    """ForcedSourceOnDiaObject rows of every DiaObject on every earlier visit after its first DiaSource."""
    visits = sources.group_by(["visit", "band"]).aggregate([("midpointMjdTai", "min")])
    v_id, v_band = visits.column("visit").to_numpy(), visits.column("band").to_numpy(zero_copy_only=False)
    v_mjd = visits.column("midpointMjdTai_min").to_numpy()
    o_id, first = objects.column("diaObjectId").to_numpy(), objects.column("firstDiaSourceMjdTai").to_numpy()
    o_ra, o_dec = objects.column("ra").to_numpy(), objects.column("dec").to_numpy()
    oi, vi = np.nonzero(v_mjd[None, :] >= first[:, None])
    n = oi.size
    flux = rng.normal(0, 300.0, n)
    return tables.to_arrow("ForcedSourceOnDiaObject", {
        "forcedSourceOnDiaObjectId": np.arange(1, n + 1), "diaObjectId": o_id[oi], "coord_ra": o_ra[oi],
        "coord_dec": o_dec[oi], "visit": v_id[vi], "detector": np.full(n, detector), "band": v_band[vi],
        "midpointMjdTai": v_mjd[vi], "psfDiffFlux": flux, "psfDiffFluxErr": np.full(n, 300.0),
        "psfFlux": flux + 2e4, "psfFluxErr": np.full(n, 320.0),
    })


def run_chain(science_path: Path, template_path: Path, history: dict[str, Path], out: Path) -> tuple[dict, dict, dict]:
    """One pass of the prompt chain; returns per-step wall and CPU seconds and counts."""
    wall, cpu, counts = {}, {}, {}

    def step(name, fn):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        wall[name], cpu[name] = time.perf_counter() - w, time.process_time() - c
        return result

    science, template = step("read", lambda: (read_exposure(science_path), read_exposure(template_path)))
    objects, sources, forced = step("history", lambda: tuple(pq.read_table(history[k])
                                                            for k in ("dia_objects", "dia_sources", "forced")))
    diff = step("difference", lambda: subtract_images(science, template))
    dia = step("detect", lambda: detect_dia_sources(diff, science))
    assoc = step("associate", lambda: associate(dia, objects, history=sources))
    # the template is on the science grid now; a coadd has no rotator angle (NaN), which FITS headers refuse
    matched = diff.matched_template
    matched.info = replace(matched.info, rotpa=science.info.rotpa)
    alerts = step("alerts", lambda: visit_alerts(assoc.dia_sources, assoc.dia_objects, sources, forced, science,
                                                 matched, diff.difference))
    step("write", lambda: write_alerts(out, alerts))
    counts.update(dia_sources=dia.num_rows, new_objects=int(assoc.new_ids.size), alerts=len(alerts),
                  avro_mb=out.stat().st_size / 1e6)
    print("run: " + ", ".join(f"{k} {wall[k]:.1f}/{cpu[k]:.1f}" for k in wall) + " s (wall/CPU)", flush=True)
    return wall, cpu, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="cache directory for the simulated inputs (reused when present)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.keep or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        science_path, template_path = build_images(cache, args.size, args.seed)
        history = build_history(cache, science_path, template_path, args.seed)
        runs = [run_chain(science_path, template_path, history, Path(tmp) / f"alerts_{k}.avro")
                for k in range(args.repeats)]
    counts = runs[-1][2]
    print(f"{args.size}^2 detector: {counts['dia_sources']} DiaSources, {counts['new_objects']} new DiaObjects, "
          f"{counts['alerts']} alerts ({counts['avro_mb']:.1f} MB Avro); median of {args.repeats} runs")
    print(f"{'step':12s} {'wall s':>8s} {'cpu s':>8s}")
    for name in runs[0][0]:
        print(f"{name:12s} {statistics.median(r[0][name] for r in runs):8.2f} "
              f"{statistics.median(r[1][name] for r in runs):8.2f}")
    total_wall = statistics.median(sum(r[0].values()) for r in runs)
    total_cpu = statistics.median(sum(r[1].values()) for r in runs)
    print(f"{'total':12s} {total_wall:8.2f} {total_cpu:8.2f}")
    print(f"fraction of LSST's {ALERT_BUDGET_S:.0f} s alert budget: {total_wall / ALERT_BUDGET_S:.2f} wall, "
          f"{total_cpu / ALERT_BUDGET_S:.2f} CPU (goal <= {GOAL_S / ALERT_BUDGET_S:.2f}, i.e. {GOAL_S:.0f} s)")


if __name__ == "__main__":
    main()
