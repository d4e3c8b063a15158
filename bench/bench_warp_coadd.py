"""Warp one 4k x 4k plane onto a rotated, shifted grid (median of N) against reproject_interp, and
stack N 4k x 4k warps (seconds per input warp).

Run: python bench/bench_warp_coadd.py [--repeat 3] [--size 4096] [--inputs 6]
The input is a noise image with a TAN-SIP WCS at 0.2"/px; the target is a TAN grid rotated by 30 deg.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from astropy.wcs import WCS, Sip

from skydp.coadd import make_coadd
from skydp.exposure import Exposure, Mask, PixelPsf, VisitInfo
from skydp.warp import warp_exposure


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


def _timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--inputs", type=int, default=6)
    args = parser.parse_args()
    n = args.size
    source = _exposure(n, 0)
    target = _wcs(n, 30.0, False)

    t_warp, _ = _timed(lambda: warp_exposure(source, target, (n, n)), args.repeat)
    print(f"warp_exposure {n}x{n} (image + variance + mask + PSF): median {t_warp:.2f} s of {args.repeat}")
    source.variance = None
    t_plane, _ = _timed(lambda: warp_exposure(source, target, (n, n)), args.repeat)
    print(f"warp_exposure {n}x{n} one plane (image + mask + PSF): median {t_plane:.2f} s")
    try:
        from reproject import reproject_interp
    except ImportError:
        print("reproject not installed: no comparison with reproject_interp (pip install reproject)")
    else:
        t_rep, _ = _timed(lambda: reproject_interp((source.image, source.wcs), target, shape_out=(n, n), order="bicubic"),
                          args.repeat)
        print(f"reproject_interp bicubic {n}x{n}: median {t_rep:.2f} s; ratio skydp one plane / reproject = {t_plane / t_rep:.2f}")

    warps = [warp_exposure(_exposure(n, seed), target, (n, n)) for seed in range(args.inputs)]
    t_stack, coadd = _timed(lambda: make_coadd(warps), 1)
    t_plain, _ = _timed(lambda: make_coadd(warps, clip=None), 1)
    print(f"make_coadd {args.inputs} x {n}x{n}: {t_stack:.2f} s = {t_stack / args.inputs:.3f} s per input warp "
          f"(without artifact rejection {t_plain / args.inputs:.3f} s per input)")


if __name__ == "__main__":
    main()
