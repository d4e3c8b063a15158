"""Object detection and measurement on GalSim-rendered coadds with known truth.

The scene is drawn on a cut-out of a real sky-map patch grid (tract pixels of the default SkyMap),
straddling the boundary between two patches of one tract, in two bands with different Moffat PSFs
and white Gaussian noise of known variance. Truth: positions, total fluxes, star/galaxy type.
"""

from __future__ import annotations

from dataclasses import dataclass

import galsim
import numpy as np
import pyarrow as pa
import pytest
import sep

from skydp import ids, tables
from skydp.exposure import Exposure, Mask, PixelPsf, VisitInfo
from skydp.objects import ObjectConfig, match_sources_to_objects, measure_objects
from skydp.skymap import DEFAULT_SKYMAP

SKYMAP = DEFAULT_SKYMAP
TRACT = int(SKYMAP.find_tract(53.1, -28.1))
PATCH_A, PATCH_B = 54, 55  # (px, py) = (4, 5) and (5, 5): their inner boxes meet at tract x = 20000
BOUNDARY_X = 20000
FWHM = {"g": 4.4, "r": 3.8}  # px
NOISE = {"g": 2.0, "r": 1.5}  # nJy per pixel, white
PSF_SIZE = 41


@dataclass
class Truth:
    x: np.ndarray  # tract pixels
    y: np.ndarray
    flux: dict[str, np.ndarray]
    hlr: np.ndarray  # px, 0 for stars
    is_star: np.ndarray


def _psf(band: str) -> galsim.GSObject:
    return galsim.Moffat(beta=3.5, fwhm=FWHM[band])


def _render(shape: tuple[int, int], xy0: tuple[int, int], truth: Truth, seed: int) -> dict[str, Exposure]:
    """Coadd-like exposures (nJy, background 0) of the truth objects on tract-pixel region xy0 + shape."""
    ny, nx = shape
    rng = np.random.default_rng(seed)
    out = {}
    for band in ("g", "r"):
        img = galsim.ImageD(nx, ny, xmin=xy0[0], ymin=xy0[1], scale=1.0)  # galsim pixel i <-> tract pixel i (0-based)
        psf = _psf(band)
        for i in range(len(truth.x)):
            flux = truth.flux[band][i]
            prof = psf if truth.is_star[i] else galsim.Convolve(
                galsim.Exponential(half_light_radius=truth.hlr[i]).shear(e1=0.2, e2=-0.1), psf)
            stamp = prof.withFlux(flux).drawImage(nx=81, ny=81, scale=1.0,
                                                  center=galsim.PositionD(truth.x[i], truth.y[i]))
            bounds = stamp.bounds & img.bounds
            if bounds.isDefined():
                img[bounds] += stamp[bounds]
        image = img.array + rng.normal(0.0, NOISE[band], size=(ny, nx))
        stamp = psf.drawImage(nx=PSF_SIZE, ny=PSF_SIZE, scale=1.0).array
        gx, gy = np.meshgrid(xy0[0] + np.linspace(0, nx - 1, 3), xy0[1] + np.linspace(0, ny - 1, 3))
        wcs = SKYMAP.tract_wcs(TRACT)
        wcs.wcs.crpix = wcs.wcs.crpix - np.array(xy0, dtype=float)
        out[band] = Exposure(image=image, variance=np.full((ny, nx), NOISE[band] ** 2), mask=Mask.empty((ny, nx)),
                             wcs=wcs, psf=PixelPsf(np.repeat(stamp[None], 9, axis=0), gx.ravel(), gy.ravel()),
                             xy0=xy0, info=VisitInfo(band=band))
    return out


def _scene(seed: int = 1) -> Truth:
    """Isolated stars on a jittered grid (S/N 5 to 2000 in r), a few galaxies and close pairs."""
    rng = np.random.default_rng(seed)
    x0, y0 = BOUNDARY_X - 180, 20180
    gx, gy = np.meshgrid(np.arange(12) * 30.0 + 15, np.arange(12) * 30.0 + 15)
    x = x0 + gx.ravel() + rng.uniform(-3, 3, gx.size)
    y = y0 + gy.ravel() + rng.uniform(-3, 3, gx.size)
    n = x.size
    kind = rng.permutation(np.r_[np.zeros(n - 24), np.ones(16), np.full(8, 2)])  # 0 star, 1 galaxy, 2 pair
    r_snr = 10 ** rng.uniform(np.log10(5), np.log10(2000), n)
    # PSF-flux S/N of a Moffat point source with white noise: flux / (sigma sqrt(1 / sum P^2))
    p = _psf("r").drawImage(nx=PSF_SIZE, ny=PSF_SIZE, scale=1.0).array
    r_flux = r_snr * NOISE["r"] / np.sqrt(np.sum(p**2))
    colour = rng.uniform(0.5, 1.5, n)  # g / r flux ratio
    is_star = kind != 1
    hlr = np.where(kind == 1, rng.uniform(2.5, 4.0, n), 0.0)
    r_flux = np.where(kind == 1, np.maximum(r_flux, 3000.0), r_flux)
    pair = kind == 2  # a companion 7 px away, half as bright
    xs = np.r_[x, x[pair] + 7.0]
    ys = np.r_[y, y[pair]]
    flux_r = np.r_[r_flux, 0.5 * r_flux[pair]]
    flux_g = np.r_[r_flux * colour, 0.5 * (r_flux * colour)[pair]]
    return Truth(x=xs, y=ys, flux={"r": flux_r, "g": flux_g}, hlr=np.r_[hlr, np.zeros(pair.sum())],
                 is_star=np.r_[is_star, np.ones(pair.sum(), bool)])


@pytest.fixture(scope="module")
def scene():
    truth = _scene()
    xy0 = (BOUNDARY_X - 200, 20160)
    coadds = _render((400, 400), xy0, truth, seed=2)
    objects = measure_objects(coadds, SKYMAP.patch_info(TRACT, PATCH_A), SKYMAP)
    return truth, coadds, objects


def _match(truth: Truth, objects: pa.Table, rows: np.ndarray, radius: float = 2.0) -> np.ndarray:
    """Index of the Object row (of ``rows``) nearest to each truth object within ``radius`` px; -1 if none."""
    from scipy.spatial import cKDTree

    x = objects["x"].to_numpy()[rows]
    y = objects["y"].to_numpy()[rows]
    dist, idx = cKDTree(np.column_stack([x, y])).query(np.column_stack([truth.x, truth.y]),
                                                       distance_upper_bound=radius)
    return np.where(np.isfinite(dist), rows[np.minimum(idx, len(rows) - 1)], -1)


def test_schema_ids_and_families(scene):
    truth, coadds, objects = scene
    assert objects.schema.equals(tables.arrow_schema("Object"))
    oid = objects["objectId"].to_numpy()
    assert len(np.unique(oid)) == len(oid)
    tract, patch, n, _ = ids.unpack_object_id(int(oid[0]))
    assert (tract, patch, n) == (TRACT, PATCH_A, 1)
    nchild = objects["deblend_nChild"].to_numpy()
    parent = objects["parentObjectId"].to_numpy()
    parents = oid[nchild > 0]
    assert len(parents) >= 5  # the close pairs are blends
    for pid, k in zip(parents, nchild[nchild > 0]):
        assert np.sum(parent == pid) == k
    assert not np.any(objects["detect_isPrimary"].to_numpy()[nchild > 0])
    assert set(objects["refBand"].to_pylist()) <= {"r", "g"}
