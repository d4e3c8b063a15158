"""Warp one 4k x 4k plane onto a rotated, shifted grid (median of N) against reproject_interp, and
stack N 4k x 4k warps (seconds per input warp), with and without artifact rejection.

Run: python bench/bench_warp_coadd.py [--repeat 3] [--size 4096] [--inputs 6]
The input is a noise image with a TAN-SIP WCS at 0.2"/px; the target is a TAN grid rotated by 30 deg.
Wall-clock medians are the targets; CPU seconds (all threads) and the load average are printed too,
because the machine is shared. The first call of the numba warp kernel (JIT compile, or loading it
from numba's cache) is timed separately and not counted in the medians.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
from astropy.wcs import WCS, Sip

from skydp.coadd import make_coadd
from skydp.exposure import Exposure, Mask, PixelPsf, VisitInfo
from skydp.warp import warp_exposure
from timing import median_time


def _wcs(n: int, rot: float, sip: bool) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [53.1, -28.1] if sip else [53.1005, -28.1003]
    wcs.wcs.crpix = [n / 2 + 0.5, n / 2 + 0.5]
    c, s = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    wcs.wcs.cd = 0.2 / 3600 * np.array([[-c, s], [s, c]])
    if sip:
        a, b = np.zeros((4, 4)), np.zeros((4, 4))
        a[2, 0], b[0, 2] = 1e-7, -1e-7  # ~2 px at the corners
        wcs.sip = Sip(a, b, None, None, wcs.wcs.crpix)
    wcs.wcs.set()
    return wcs


def _exposure(n: int, seed: int) -> Exposure:
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 10, (n, n)).astype(np.float32)
    y, x = np.mgrid[:21, :21] - 10
    stamp = np.exp(-(x**2 + y**2) / 8.0)
    psf = PixelPsf(np.array([stamp] * 4), np.array([0.0, n, 0, n]), np.array([0.0, 0, n, n]))
    return Exposure(image=image, variance=np.full((n, n), 100.0, np.float32), mask=Mask.empty((n, n)),
                    wcs=_wcs(n, 5.0 * seed, True), psf=psf,
                    info=VisitInfo(visit=2026111500010 + seed, band="r", mjd=61360.0 + seed, exptime=30.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--inputs", type=int, default=6)
    args = parser.parse_args()
    n, repeat = args.size, args.repeat
    source = _exposure(n, 0)
    target = _wcs(n, 30.0, False)
    rows = []

    t = time.perf_counter()
    warp_exposure(_exposure(64, 0), _wcs(64, 30.0, False), (64, 64))
    first_call = time.perf_counter() - t

    wall, cpu, _ = median_time(lambda _: warp_exposure(source, target, (n, n)), repeat)
    rows.append((f"warp_exposure {n}^2: image + variance + mask + PSF", wall, cpu, ""))
    source.variance = None
    t_plane, cpu, _ = median_time(lambda _: warp_exposure(source, target, (n, n)), repeat)
    rows.append((f"warp_exposure {n}^2: one plane (image + mask + PSF)", t_plane, cpu, "target <= 2 s"))
    try:
        from reproject import reproject_interp
    except ImportError:
        rows.append(("reproject_interp: not installed (pip install reproject)", math.nan, math.nan, ""))
    else:
        t_rep, cpu, _ = median_time(lambda _: reproject_interp((source.image, source.wcs), target, shape_out=(n, n),
                                                        order="bicubic"), repeat)
        rows.append((f"reproject_interp bicubic {n}^2 one plane", t_rep, cpu,
                     f"skydp / reproject = {t_plane / t_rep:.2f}"))

    warps = [warp_exposure(_exposure(n, seed), target, (n, n)) for seed in range(args.inputs)]
    wall, cpu, _ = median_time(lambda _: make_coadd(warps), repeat)
    rows.append((f"make_coadd {args.inputs} x {n}^2, rejection, per input", wall / args.inputs, cpu / args.inputs,
                 "target <= 0.25 s"))
    wall, cpu, _ = median_time(lambda _: make_coadd(warps, clip=None), repeat)
    rows.append((f"make_coadd {args.inputs} x {n}^2, no rejection, per input", wall / args.inputs,
                 cpu / args.inputs, ""))

    print(f"first warp_exposure call (numba JIT or cache load, not in the medians): {first_call:.2f} s")
    print(f"medians of {repeat} runs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'step':<58} {'wall s':>8} {'CPU s':>8}  note")
    for name, wall, cpu, note in rows:
        print(f"{name:<58} {wall:8.3f} {cpu:8.3f}  {note}")


if __name__ == "__main__":
    main()
