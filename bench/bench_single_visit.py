"""Single-visit benchmark: process_visit_image vs sep alone vs photutils on a 4k x 4k image with
~5000 Moffat stars (single thread, median of N runs, peak RSS per tool in a fresh subprocess).
photutils' deblend_sources needs scikit-image (benchmark-only dependency, like photutils).

    python bench/bench_single_visit.py [--size 4096] [--n 5000] [--repeat 3]
    python bench/bench_single_visit.py --profile 30   # CPU-time profile of one run of ours, by phase
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

FWHM, BETA, SKY_SIGMA, STAMP = 4.0, 3.5, 20.0, 31


def moffat_stamps(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Unit-flux Moffat stamps (N, S, S) centred at (S//2 + dx, S//2 + dy), 4x4 sub-sampled pixels."""
    alpha = FWHM / (2 * np.sqrt(2 ** (1 / BETA) - 1))
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    g = np.arange(STAMP) - STAMP // 2
    u = (g[:, None] + sub[None, :]).ravel()
    out = []
    for a, b in zip(dx, dy):
        r2 = (u[None, :] - a) ** 2 + (u[:, None] - b) ** 2
        p = (1 + r2 / alpha**2) ** (-BETA)
        p = p.reshape(STAMP, 4, STAMP, 4).mean(axis=(1, 3))
        out.append(p / p.sum())
    return np.array(out)


def make_image(size: int, n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(20, size - 20, n)
    y = rng.uniform(20, size - 20, n)
    flux = np.exp(rng.uniform(np.log(500), np.log(5e5), n))
    cx, cy = np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)
    stamps = moffat_stamps(x - cx, y - cy) * flux[:, None, None]
    truth = np.zeros((size, size), np.float32)
    h = STAMP // 2
    for s, a, b in zip(stamps, cx, cy):
        y0, x0 = b - h, a - h
        ys, xs = slice(max(y0, 0), min(y0 + STAMP, size)), slice(max(x0, 0), min(x0 + STAMP, size))
        truth[ys, xs] += s[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    var = (SKY_SIGMA**2 + 0.5 * truth).astype(np.float32)
    image = (truth + 400.0 + rng.normal(size=truth.shape).astype(np.float32) * np.sqrt(var)).astype(np.float32)
    return image, var


def run_ours(image, var):
    from astropy.wcs import WCS

    from skydp.exposure import Exposure, Mask, PixelPsf, VisitInfo
    from skydp.pipeline import process_visit_image

    size = image.shape[0]
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [size / 2, size / 2]
    w.wcs.cd = np.diag([-0.2, 0.2]) / 3600
    psf = PixelPsf(moffat_stamps(np.zeros(1), np.zeros(1)), np.array([size / 2]), np.array([size / 2]))
    exp = Exposure(image=image, variance=var, mask=Mask.empty(image.shape), wcs=w, psf=psf,
                   info=VisitInfo(visit=2026032400012, detector=1, band="r"))
    t = time.perf_counter()
    result = process_visit_image(exp)
    return time.perf_counter() - t, int(np.sum(~result.sources["sky_source"].to_numpy(zero_copy_only=False)))


def run_sep(image, var):
    import sep

    t = time.perf_counter()
    sep.set_extract_pixstack(5_000_000)
    bkg = sep.Background(image, bw=64, bh=64, fw=3, fh=3)
    sub = image - bkg.back()
    objects = sep.extract(sub, 5.0, err=bkg.globalrms, minarea=5)
    sep.sum_circle(sub, objects["x"], objects["y"], 5.0, err=bkg.globalrms)
    return time.perf_counter() - t, len(objects)


def run_photutils(image, var):
    from astropy.convolution import convolve
    from photutils.aperture import CircularAperture, aperture_photometry
    from photutils.background import Background2D, SExtractorBackground
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources, make_2dgaussian_kernel

    t = time.perf_counter()
    bkg = Background2D(image, 64, filter_size=3, bkg_estimator=SExtractorBackground())
    sub = image - bkg.background
    kernel = make_2dgaussian_kernel(FWHM, size=9)
    smooth = convolve(sub, kernel)
    noise = bkg.background_rms * np.sqrt(np.sum(kernel.array**2))
    seg = detect_sources(smooth, 5.0 * noise, n_pixels=5)
    seg = deblend_sources(smooth, seg, n_pixels=5, n_levels=32, contrast=0.005, progress_bar=False)
    cat = SourceCatalog(sub, seg, convolved_data=smooth)
    tab = cat.to_table(columns=["label", "x_centroid", "y_centroid", "segment_flux", "fwhm", "elongation"])
    apertures = CircularAperture(np.column_stack([tab["x_centroid"], tab["y_centroid"]]), r=5.0)
    aperture_photometry(sub, apertures)
    return time.perf_counter() - t, len(tab)


def child(tool: str, size: int, n: int, repeat: int) -> None:
    image, var = make_image(size, n)
    fn = {"ours": run_ours, "sep": run_sep, "photutils": run_photutils}[tool]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu, count = [], [], 0
    for _ in range(repeat):
        c0 = time.process_time()
        dt, count = fn(image, var)
        cpu.append(time.process_time() - c0)
        times.append(dt)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"tool": tool, "median_s": float(np.median(times)), "times": times, "n": count,
                      "median_cpu_s": float(np.median(cpu)), "peak_rss_mb": peak / 1024,
                      "rss_before_mb": base / 1024}))


def profile(size: int, n: int, top: int) -> None:
    """cProfile (process-time clock) of one run of process_visit_image, after a warm-up on a cut-out."""
    import cProfile
    import pstats

    image, var = make_image(size, n)
    run_ours(image[:512, :512].copy(), var[:512, :512].copy())
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    run_ours(image, var)
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(r"skydp|sep|scipy", top)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child")
    ap.add_argument("--tools", default="ours,sep,photutils")
    ap.add_argument("--profile", type=int, metavar="TOP", help="profile ours once; print the TOP entries")
    args = ap.parse_args()
    if args.profile:
        profile(args.size, args.n, args.profile)
        return
    if args.child:
        child(args.child, args.size, args.n, args.repeat)
        return
    rows = {}
    for tool in args.tools.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", tool, "--size", str(args.size), "--n",
                              str(args.n), "--repeat", str(args.repeat)], capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{tool} benchmark failed:\n{out.stderr}")
        rows[tool] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{args.size}x{args.size}, {args.n} stars, 1 thread, median of {args.repeat}; CPU s = process time "
          "(less sensitive than wall time to other jobs on a shared machine)")
    print(f"{'tool':<10} {'wall s':>7} {'CPU s':>7} {'sources':>8} {'peak RSS MB':>12}  wall runs")
    for tool, r in rows.items():
        print(f"{tool:<10} {r['median_s']:7.2f} {r['median_cpu_s']:7.2f} {r['n']:8d} {r['peak_rss_mb']:12.0f}  "
              f"{np.round(r['times'], 2)}")
    if "ours" in rows:
        for tool in ("sep", "photutils"):
            if tool in rows:
                print(f"ours / {tool}: wall {rows['ours']['median_s'] / rows[tool]['median_s']:.2f}x, "
                      f"CPU {rows['ours']['median_cpu_s'] / rows[tool]['median_cpu_s']:.2f}x")


if __name__ == "__main__":
    main()
