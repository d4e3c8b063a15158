"""Benchmark: difference image of a 4k x 4k detector (kernel fit + convolution + decorrelation) and
DiaSource detection/measurement, against one full-image FFT convolution of the same size.

Two simulated r-band visits of one pointing (so no warp is timed), both through single-visit
processing first (as the ETL hands them over). Prints the median of 3 runs in seconds, wall and CPU.
Run: /work/venv/bin/python bench/bench_diffim.py [--size 4096] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pyarrow.parquet as pq
from scipy import signal

from skydp.diffim import subtract_images
from skydp.diffim.dia_sources import detect_dia_sources
from skydp.exposure import read_exposure
from skydp.pipeline.process import process_visit_image
from skydp.sim import simulate
from skydp.sim.presets import get_preset
from timing import median_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        preset = get_preset("tiny", detector_shape=(args.size, args.size), dither_radius_deg=0.0, max_rotation_deg=0.0,
                            visits_per_band={"r": 2}, star_density_scale=1.0, n_transients=50, n_variables=50,
                            cosmic_rate=0.05)
        t0 = time.perf_counter()
        sim = simulate(tmp, preset=preset, seed=2, jobs=1)
        visits = pq.read_table(sim.visits).to_pandas().sort_values("seeing")
        template = process_visit_image(read_exposure(sim.outdir / visits.image.iloc[0])).exposure
        science = process_visit_image(read_exposure(sim.outdir / visits.image.iloc[1])).exposure
        print(f"setup (simulate + process 2 visits of {args.size}^2): {time.perf_counter() - t0:.1f} s")

    wall, cpu, (diff, *_) = median_time(lambda _: subtract_images(science, template), args.repeat)
    print(f"subtract_images (kernel fit + convolution + decorrelation): median {wall:.2f} s wall, {cpu:.2f} s CPU; "
          f"convolved the {diff.convolved}, kernel {diff.kernel.basis.size} px, {len(diff.kernel.star_x)} stars, "
          f"{diff.kernel.n_rejected} rejected")
    dwall, dcpu, (dia,) = median_time(lambda _: detect_dia_sources(subtract_images(science, template), science), 1)
    print(f"subtract + detect_dia_sources: {dwall:.2f} s wall, {dcpu:.2f} s CPU, {dia.num_rows} DiaSources")
    kernel = diff.kernel.kernel_image(args.size / 2, args.size / 2)
    image = science.image.astype(np.float64)
    fwall, fcpu, _ = median_time(lambda _: signal.fftconvolve(image, kernel, mode="same"), args.repeat)
    print(f"one full-image FFT convolution (scipy.signal.fftconvolve, {kernel.shape[0]}^2 kernel): median {fwall:.2f} s "
          f"wall, {fcpu:.2f} s CPU")
    print(f"ratio subtract_images / one FFT convolution: {wall / fwall:.1f}x wall, {cpu / fcpu:.1f}x CPU "
          f"(goal: <= 8 s on one core)")


if __name__ == "__main__":
    main()
