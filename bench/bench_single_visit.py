"""Single-visit benchmark: process_visit_image vs sep alone vs photutils on a 4k x 4k image with
~5000 Moffat stars (single thread, median of N runs, peak RSS per tool in a fresh subprocess).
Peers: "sep" = background + extract + sum_circle (the issue's definition) in its lightest form: a
global-RMS threshold and one 5-px aperture; "sep-dp1" = the same three calls for the outputs of our
step: the variance plane for the threshold and the errors, and the nine DP1 apertures; "photutils" = the
equivalent work (detection, deblending, nine apertures, annulus sky, PSF fit: see run_photutils);
"photutils-detect" = its detection half with one aperture, the lighter peer used until session 3.
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
APERTURE_RADII = (3, 6, 9, 12, 17, 25, 35, 50, 70)  # px: LSST's ap03 ... ap70


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


def run_sep(image, var, dp1: bool = False):
    """sep.Background + extract + sum_circle; ``dp1``: with the variance plane and the nine DP1 radii."""
    import sep

    t = time.perf_counter()
    sep.set_extract_pixstack(5_000_000)
    bkg = sep.Background(image, bw=64, bh=64, fw=3, fh=3)
    sub = image - bkg.back()
    if dp1:
        objects = sep.extract(sub, 5.0, var=var, minarea=5)
        x, y = np.asarray(objects["x"], float), np.asarray(objects["y"], float)
        for r in APERTURE_RADII:  # one call per radius: sep broadcasts (n, 1) x (1, 9) only with a segmap
            sep.sum_circle(sub, x, y, float(r), var=var, subpix=0)
    else:
        objects = sep.extract(sub, 5.0, err=bkg.globalrms, minarea=5)
        sep.sum_circle(sub, objects["x"], objects["y"], 5.0, err=bkg.globalrms)
    return time.perf_counter() - t, len(objects)


def _photutils_catalog(image):
    """photutils' detection half: mesh background, 5 sigma on the PSF-smoothed image, 32-level
    deblending, segment catalogue (centroids, moments-based shapes)."""
    from astropy.convolution import convolve
    from photutils.background import Background2D, SExtractorBackground
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources, make_2dgaussian_kernel

    bkg = Background2D(image, 64, filter_size=3, bkg_estimator=SExtractorBackground())
    sub = image - bkg.background
    kernel = make_2dgaussian_kernel(FWHM, size=9)
    smooth = convolve(sub, kernel)
    noise = bkg.background_rms * np.sqrt(np.sum(kernel.array**2))
    seg = detect_sources(smooth, 5.0 * noise, n_pixels=5)
    seg = deblend_sources(smooth, seg, n_pixels=5, n_levels=32, contrast=0.005, progress_bar=False)
    cat = SourceCatalog(sub, seg, convolved_data=smooth)
    return sub, cat.to_table(columns=["label", "x_centroid", "y_centroid", "segment_flux", "fwhm", "elongation",
                                      "covariance"])


def run_photutils_detect(image, var):
    """Detection half only, plus one r = 5 px aperture (the peer used up to session 3)."""
    from photutils.aperture import CircularAperture, aperture_photometry

    t = time.perf_counter()
    sub, tab = _photutils_catalog(image)
    aperture_photometry(sub, CircularAperture(np.column_stack([tab["x_centroid"], tab["y_centroid"]]), r=5.0))
    return time.perf_counter() - t, len(tab)


def run_photutils(image, var):
    """photutils doing the work of process_visit_image: the detection half, then per source the nine
    LSST apertures (exact overlap, with errors), the sky as a 3-sigma-clipped mean in a 7-15 PSF sigma
    annulus, and a PSF fit of position and flux with the true PSF on a 15 x 15 box (ours fits the
    centroid on the +-4 sigma core, 15 x 15 here, and the flux on the whole stamp). Not done here,
    though ours does them: cosmic rays, aperture correction, sky sources, PSF moments, pixel flags."""
    from astropy.stats import SigmaClip
    from astropy.table import QTable
    from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture, aperture_photometry
    from photutils.psf import ImagePSF, PSFPhotometry

    t = time.perf_counter()
    sub, tab = _photutils_catalog(image)
    xy = np.column_stack([tab["x_centroid"], tab["y_centroid"]])
    error = np.sqrt(var)
    aperture_photometry(sub, [CircularAperture(xy, r) for r in APERTURE_RADII], error=error)
    sigma = FWHM / 2.3548
    ApertureStats(sub, CircularAnnulus(xy, 7 * sigma, 15 * sigma), sigma_clip=SigmaClip(sigma=3.0)).mean
    psf = ImagePSF(moffat_stamps(np.zeros(1), np.zeros(1))[0], flux=1, x_0=0, y_0=0)
    init = QTable({"x": xy[:, 0], "y": xy[:, 1], "flux": np.asarray(tab["segment_flux"])})
    PSFPhotometry(psf, (15, 15), aperture_radius=5)(sub, error=error, init_params=init)
    return time.perf_counter() - t, len(tab)


def child(tool: str, size: int, n: int, repeat: int) -> None:
    image, var = make_image(size, n)
    fn = {"ours": run_ours, "sep": run_sep, "sep-dp1": lambda im, v: run_sep(im, v, dp1=True),
          "photutils": run_photutils, "photutils-detect": run_photutils_detect}[tool]
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
    ap.add_argument("--tools", default="ours,sep,sep-dp1,photutils,photutils-detect")
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
    print(f"{'tool':<16} {'wall s':>7} {'CPU s':>7} {'sources':>8} {'peak RSS MB':>12}  wall runs")
    for tool, r in rows.items():
        print(f"{tool:<16} {r['median_s']:7.2f} {r['median_cpu_s']:7.2f} {r['n']:8d} {r['peak_rss_mb']:12.0f}  "
              f"{np.round(r['times'], 2)}")
    if "ours" in rows:
        for tool in ("sep", "sep-dp1", "photutils", "photutils-detect"):
            if tool in rows:
                print(f"ours / {tool}: wall {rows['ours']['median_s'] / rows[tool]['median_s']:.2f}x, "
                      f"CPU {rows['ours']['median_cpu_s'] / rows[tool]['median_cpu_s']:.2f}x")


if __name__ == "__main__":
    main()
