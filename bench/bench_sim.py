"""Time to draw one 4k x 4k detector of the ``survey`` preset (median of 3), plus writing it.

Run: python bench/bench_sim.py [--repeat 3] [--detector 4]
Prints the number of objects drawn, the median render time and the FITS write time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from skydp.exposure import write_exposure
from skydp.sim.observing import schedule
from skydp.sim.presets import get_preset
from skydp.sim.render import render
from skydp.sim.run import to_exposure
from skydp.sim.sky import make_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--detector", type=int, default=4, help="detector of the 3x3 focal plane (4 = centre)")
    args = parser.parse_args()

    preset = get_preset("survey")
    t0 = time.perf_counter()
    rng = np.random.default_rng([0, 1])
    observations = schedule(preset, rng)
    cat = make_catalog(preset, observations, rng)
    setup = time.perf_counter() - t0
    obs = next(o for o in observations if o.band == "r")

    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        rendered = render(preset, obs, args.detector, cat, seed=0)
        times.append(time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_exposure(to_exposure(rendered, obs, args.detector), Path(tmp) / "bench.fits")
        write = time.perf_counter() - t

    nx, ny = preset.detector_shape
    print(f"survey preset: schedule + catalogue of {len(cat)} objects in {setup:.2f} s")
    print(f"detector {args.detector} of visit {obs.visit} ({obs.band}, seeing {obs.seeing:.2f}\"), {nx}x{ny}: "
          f"{rendered.conditions['n_drawn']} objects drawn on it")
    print(f"render: median {np.median(times):.2f} s of {args.repeat} ({', '.join(f'{t:.2f}' for t in times)})")
    print(f"write FITS (image, mask, variance, PSF): {write:.2f} s")


if __name__ == "__main__":
    main()
