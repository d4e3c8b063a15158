"""`skydp forced` and `skydp diff` on small synthetic exposures with known stars and a known transient."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
from astropy.wcs import WCS

from skydp.cli import main
from skydp.exposure import Exposure, Mask, PixelPsf, VisitInfo, read_exposure, write_exposure

N = 200
NOISE = 20.0  # nJy per pixel


def _gaussian(sigma: float, size: int = 31) -> np.ndarray:
    u = np.arange(size) - size // 2
    g = np.exp(-0.5 * (u / sigma) ** 2)
    return np.outer(g, g) / np.outer(g, g).sum()


def _exposure(x: np.ndarray, y: np.ndarray, flux: np.ndarray, sigma: float, seed: int, visit: int) -> Exposure:
    """Gaussian stars sampled at pixel centres, white noise, a TAN WCS at (150, 2)."""
    yy, xx = np.mgrid[:N, :N]
    image = np.zeros((N, N))
    for xi, yi, fi in zip(x, y, flux):
        image += fi * np.exp(-0.5 * ((xx - xi) ** 2 + (yy - yi) ** 2) / sigma**2) / (2 * np.pi * sigma**2)
    image += np.random.default_rng(seed).normal(0, NOISE, image.shape)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval, wcs.wcs.crpix, wcs.wcs.cdelt = [150.0, 2.0], [N / 2, N / 2], [-0.2 / 3600, 0.2 / 3600]
    info = VisitInfo(instrument="test", visit=2026010100000 + visit, detector=0, band="r", physical_filter="r", day_obs=20260101,
                     mjd=61000.0 + visit, exptime=30.0, airmass=1.0, boresight_ra=150.0, boresight_dec=2.0, rotpa=0.0)
    psf = PixelPsf(_gaussian(sigma)[None], np.array([N / 2]), np.array([N / 2]))
    return Exposure(image.astype(np.float32), np.full((N, N), NOISE**2, np.float32), Mask.empty((N, N)), wcs, psf,
                    info=info)


def _stars(n: int = 36, seed: int = 1):
    """Isolated stars: a 6 x 6 grid 30 px apart, jittered by up to half a pixel."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(6) * 30 + 25.0, np.arange(6) * 30 + 25.0)
    keep = rng.permutation(36)[:n]
    x, y = gx.ravel()[keep] + rng.uniform(-0.5, 0.5, n), gy.ravel()[keep] + rng.uniform(-0.5, 0.5, n)
    return x, y, rng.uniform(5e3, 5e4, n)


def test_forced_measures_the_csv_positions_in_order(tmp_path, capsys) -> None:
    x, y, flux = _stars()
    exposure = _exposure(x, y, flux, sigma=1.7, seed=2, visit=1)
    image = tmp_path / "image.fits"
    write_exposure(exposure, image)
    ra, dec = exposure.pixel_to_sky(x, y)
    order = np.random.default_rng(3).permutation(x.size)
    ids = np.arange(x.size) * 7 + 100
    csv = tmp_path / "positions.csv"
    csv.write_text("id,ra,dec\n" + "".join(f"{ids[i]},{ra[i]:.10f},{dec[i]:.10f}\n" for i in order))
    out = tmp_path / "forced.parquet"
    assert main(["forced", str(image), "--radec", str(csv), "-o", str(out)]) == 0
    table = pq.read_table(out).to_pydict()
    assert table["id"] == ids[order].tolist()
    pull = (np.array(table["psfFlux"]) - flux[order]) / np.array(table["psfFluxErr"])
    assert abs(np.median(pull)) < 0.5 and 0.7 < np.std(pull) < 1.4  # 36 isolated stars, noise only


def test_forced_names_the_csv_when_a_column_is_missing(tmp_path, capsys) -> None:
    x, y, flux = _stars(3)
    image = tmp_path / "image.fits"
    write_exposure(_exposure(x, y, flux, sigma=1.7, seed=2, visit=1), image)
    csv = tmp_path / "bad.csv"
    csv.write_text("ra\n150.0\n")
    assert main(["forced", str(image), "--radec", str(csv), "-o", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "dec" in err and "Traceback" not in err
    assert not (tmp_path / "o.parquet").exists()


def test_diff_finds_the_transient_and_removes_the_stars(tmp_path, capsys) -> None:
    x, y, flux = _stars(35)
    template = _exposure(x, y, flux, sigma=1.3, seed=4, visit=1)  # sharper template, as usual
    new_x, new_y, new_flux = 100.3, 85.6, 2.0e4  # between grid stars
    science = _exposure(np.append(x, new_x), np.append(y, new_y), np.append(flux, new_flux), sigma=2.0, seed=5,
                        visit=2)
    paths = {name: tmp_path / f"{name}.fits" for name in ("science", "template", "diff")}
    write_exposure(science, paths["science"])
    write_exposure(template, paths["template"])
    dia = tmp_path / "dia.parquet"
    assert main(["diff", str(paths["science"]), str(paths["template"]), "-o", str(paths["diff"]),
                 "--dia-sources", str(dia)]) == 0
    difference = read_exposure(paths["diff"])
    sources = pq.read_table(dia).to_pydict()
    distance = np.hypot(np.array(sources["x"]) - new_x, np.array(sources["y"]) - new_y)
    found = int(np.argmin(distance))
    assert distance[found] < 0.5
    assert abs(sources["psfFlux"][found] - new_flux) < 4 * sources["psfFluxErr"][found]
    assert not sources["isNegative"][found]
    assert len(sources["x"]) <= 3  # the 35 static stars leave (almost) nothing behind
    inner = (slice(15, N - 15), slice(15, N - 15))
    pulls = (difference.image / np.sqrt(difference.variance))[inner]
    far = np.hypot(*np.meshgrid(np.arange(N) - new_x, np.arange(N) - new_y))[inner] > 10
    assert 0.85 < np.std(pulls[far & np.isfinite(pulls)]) < 1.2
