"""Association benchmark (issue 8, Performance: >= 1e5 DiaSources/s).

Synthetic survey: --sources DiaSources over --visits visits of a 3 x 3 deg field. 70 % of each
visit's DiaSources are re-detections of persistent variable objects (each seen in ~90 % of the
visits, 0.02-0.2" centroid errors), the rest are one-off detections (noise, new transients) that
start new DiaObjects, so the DiaObject table grows through the survey as in real alert production.
Measured (median of --repeats runs; "cpu s" = this process's CPU time, which other jobs on a
shared machine disturb less than the wall time; rates are DiaSources per second of each):
  - associate(all DiaSources): the visit-by-visit matching in time order plus the DiaObject
    statistics of every object at the end;
  - the matching alone (assign_dia_object_ids) and dia_object_table alone on the associated
    DiaSources;
  - the nightly path for the last visit: associate(one visit, current DiaObjects, history),
    which recomputes the statistics of the objects that visit touches from all their DiaSources.
Usage: python bench/bench_association.py [--sources 1e6] [--visits 100] [--repeats 3]
"""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from skydp.association import assign_dia_object_ids, associate, dia_object_table
from timing import median_time

FIELD = (150.0, 2.0)  # centre (ra, dec), deg
HALF_WIDTH = 1.5  # deg


def synthetic_dia_sources(n_sources: int, n_visits: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    per_visit = n_sources // n_visits
    n_persistent = int(0.7 * per_visit / 0.9)
    cos_dec = np.cos(np.radians(FIELD[1]))
    obj_ra = FIELD[0] + rng.uniform(-HALF_WIDTH, HALF_WIDTH, n_persistent) / cos_dec
    obj_dec = FIELD[1] + rng.uniform(-HALF_WIDTH, HALF_WIDTH, n_persistent)
    obj_flux = rng.lognormal(8, 1, n_persistent)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in (
        "diaSourceId", "visit", "band", "midpointMjdTai", "ra", "dec", "raErr", "decErr", "ra_dec_Cov",
        "psfFlux", "psfFluxErr", "scienceFlux", "scienceFluxErr")}
    next_id = 1
    for v in range(n_visits):
        seen = np.flatnonzero(rng.uniform(size=n_persistent) < 0.9)[:per_visit]
        n_new = per_visit - seen.size
        ra = np.concatenate([obj_ra[seen], FIELD[0] + rng.uniform(-HALF_WIDTH, HALF_WIDTH, n_new) / cos_dec])
        dec = np.concatenate([obj_dec[seen], FIELD[1] + rng.uniform(-HALF_WIDTH, HALF_WIDTH, n_new)])
        err = rng.uniform(0.02, 0.2, per_visit) / 3600
        dec = dec + rng.normal(0, err)
        ra = ra + rng.normal(0, err) / cos_dec
        flux = np.concatenate([obj_flux[seen], rng.lognormal(7, 0.5, n_new)]) * rng.normal(1, 0.1, per_visit)
        cols["diaSourceId"].append(np.arange(next_id, next_id + per_visit))
        next_id += per_visit
        cols["visit"].append(np.full(per_visit, 2026010100000 + 10 + v))
        cols["band"].append(np.full(per_visit, "ugrizy"[v % 6]))
        cols["midpointMjdTai"].append(np.full(per_visit, 61000.0 + 0.7 * v))
        cols["ra"].append(ra)
        cols["dec"].append(dec)
        cols["raErr"].append(err / cos_dec)
        cols["decErr"].append(err)
        cols["ra_dec_Cov"].append(np.zeros(per_visit))
        cols["psfFlux"].append(flux)
        cols["psfFluxErr"].append(np.sqrt(flux) * 5)
        cols["scienceFlux"].append(flux + 1e4)
        cols["scienceFluxErr"].append(np.full(per_visit, 100.0))
    return pa.table({k: np.concatenate(v) for k, v in cols.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=float, default=1e6)
    parser.add_argument("--visits", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sources = synthetic_dia_sources(int(args.sources), args.visits)
    n = sources.num_rows
    print(f"{n} DiaSources over {args.visits} visits; median of {args.repeats} runs")
    print(f"{'step':58s} {'wall s':>8s} {'cpu s':>8s} {'per wall s':>11s} {'per cpu s':>10s}")

    def report(name: str, wall: float, cpu: float, count: int) -> None:
        print(f"{name:58s} {wall:8.2f} {cpu:8.2f} {count / wall:11.3g} {count / cpu:10.3g}")

    wall, cpu, _ = median_time(lambda _: assign_dia_object_ids(sources), args.repeats)
    report("matching only (assign_dia_object_ids)", wall, cpu, n)
    wall, cpu, (res, *_) = median_time(lambda _: associate(sources), args.repeats)
    report("associate (matching + DiaObject statistics)", wall, cpu, n)
    n_obj = res.dia_objects.num_rows
    print(f"  -> {n_obj} DiaObjects ({res.new_ids.size} new)")
    wall, cpu, _ = median_time(lambda _: dia_object_table(res.dia_sources), args.repeats)
    report(f"dia_object_table alone ({n_obj} objects)", wall, cpu, n)

    visits = res.dia_sources.column("visit")
    last = pc.max(visits)
    before = res.dia_sources.filter(pc.less(visits, last))
    tonight = sources.filter(pc.equal(sources.column("visit"), last))
    objects = dia_object_table(before)
    wall, cpu, (inc, *_) = median_time(lambda _: associate(tonight, objects, history=before), args.repeats)
    report(f"nightly: last visit vs {objects.num_rows} objects + history", wall, cpu, tonight.num_rows)
    print(f"  -> {inc.dia_objects.num_rows} DiaObjects updated or created")


if __name__ == "__main__":
    main()
