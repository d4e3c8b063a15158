"""Forced PSF photometry speed: positions per second on a 4k x 4k image, and the ratio against
photutils ``PSFPhotometry`` with fixed positions.

    python bench/bench_forced.py [--positions 100000] [--repeat 3] [--photutils-positions 2000]

The image: 4096^2 Gaussian noise plus one star per forced position, drawn with GalSim; the PSF is
a Moffat (FWHM 3.5-3.85 px across the image) on a 5 x 5 grid of 25 x 25 stamps (a PixelPsf, as a
visit image's PSF HDU holds). skydp is timed end to end (``forced_photometry_xy``: fit planes,
PSF table, all positions) and also per position only (``ForcedPhotometer.measure``). photutils
fits the same image with an ``ImagePSF`` of the centre stamp, x/y fixed, flux free, fit shape
25 x 25 (skydp fits 23 x 23); it is run on a subset of ``--photutils-positions`` and its rate
scaled linearly (its cost is per source). Reports medians of ``--repeat`` runs, wall and CPU time.
"""

from __future__ import annotations

import argparse

import galsim
import numpy as np
from astropy.table import QTable
from astropy.wcs import WCS

from skydp.exposure import Exposure, Mask, PixelPsf
from skydp.forced import ForcedPhotometer, forced_photometry_xy
from timing import median_time

SIZE = 4096
STAMP = 25


def make_image(n: int, seed: int = 1) -> tuple[Exposure, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.linspace(0, SIZE - 1, 5), np.linspace(0, SIZE - 1, 5))
    stamps = np.array([galsim.Moffat(beta=3.0, fwhm=3.5 * (1 + 0.1 * x / SIZE)).drawImage(
        nx=STAMP, ny=STAMP, scale=1.0).array for x in gx.ravel()])
    psf = PixelPsf(stamps, gx.ravel(), gy.ravel())
    x = rng.uniform(15, SIZE - 16, n)
    y = rng.uniform(15, SIZE - 16, n)
    flux = 10 ** rng.uniform(2.5, 5, n)
    image = rng.normal(0.0, 10.0, (SIZE, SIZE)).astype(np.float32)
    half = STAMP // 2
    for start in range(0, n, 20000):
        sl = slice(start, start + 20000)
        drawn = psf.images_at(x[sl], y[sl]) * flux[sl, None, None]
        cx, cy = np.floor(x[sl] + 0.5).astype(int), np.floor(y[sl] + 0.5).astype(int)
        rows = (cy[:, None] + np.arange(-half, half + 1))[:, :, None]
        cols = (cx[:, None] + np.arange(-half, half + 1))[:, None, :]
        np.add.at(image, (rows, cols), drawn.astype(np.float32))
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    wcs.wcs.crpix = [SIZE / 2, SIZE / 2]
    wcs.wcs.crval = [53.0, -28.0]
    exposure = Exposure(image, np.full((SIZE, SIZE), 100.0, np.float32), Mask.empty((SIZE, SIZE)), wcs, psf)
    return exposure, x, y, flux


def photutils_rate(exposure: Exposure, x: np.ndarray, y: np.ndarray, repeat: int) -> tuple[float, float]:
    from photutils.psf import ImagePSF, PSFPhotometry

    kernel = exposure.psf.image(SIZE / 2, SIZE / 2)
    model = ImagePSF(kernel, x_0=0, y_0=0, flux=1)
    model.x_0.fixed = True
    model.y_0.fixed = True
    phot = PSFPhotometry(model, (STAMP, STAMP), aperture_radius=5)
    init = QTable({"x": x, "y": y, "flux": np.full(x.size, 1000.0)})
    data = exposure.image.astype(np.float64)
    error = np.sqrt(exposure.variance.astype(np.float64))
    wall, cpu, _ = median_time(lambda _: phot(data, error=error, init_params=init), repeat)
    return x.size / wall, x.size / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--photutils-positions", type=int, default=2000)
    args = parser.parse_args()
    exposure, x, y, flux = make_image(args.positions)

    wall_total, cpu_total, (result, *_) = median_time(lambda _: forced_photometry_xy(exposure, x, y), args.repeat)
    ratio = np.median(result["psfFlux"].to_numpy() / flux)
    photometer = ForcedPhotometer(exposure)
    wall_meas, cpu_meas, _ = median_time(lambda _: photometer.measure(x, y), args.repeat)
    n = args.positions
    print(f"skydp forced_photometry_xy, {n} positions on {SIZE}^2, fit {photometer.table.size}^2 px:")
    print(f"  end to end   {wall_total:6.2f} s wall {n / wall_total:9.0f} pos/s   ({cpu_total:.2f} s CPU, "
          f"{n / cpu_total:.0f} pos/s)")
    print(f"  measure only {wall_meas:6.2f} s wall {n / wall_meas:9.0f} pos/s   ({cpu_meas:.2f} s CPU, "
          f"{n / cpu_meas:.0f} pos/s)")
    print(f"  median psfFlux / truth = {ratio:.5f} (blended field: neighbours add flux)")

    m = min(args.photutils_positions, n)
    pu_wall, pu_cpu = photutils_rate(exposure, x[:m], y[:m], args.repeat)
    print(f"photutils PSFPhotometry (fixed x, y), {m} positions, scaled: {pu_wall:.0f} pos/s wall, {pu_cpu:.0f} pos/s CPU")
    print(f"ratio skydp end to end / photutils: {n / wall_total / pu_wall:.0f}x wall, {n / cpu_total / pu_cpu:.0f}x CPU")


if __name__ == "__main__":
    main()
