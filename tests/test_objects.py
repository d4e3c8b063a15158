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
    pair = kind == 2  # a companion 9 px away, half as bright
    xs = np.r_[x, x[pair] + 9.0]
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


def _snr_r(truth: Truth) -> np.ndarray:
    p = _psf("r").drawImage(nx=PSF_SIZE, ny=PSF_SIZE, scale=1.0).array
    return truth.flux["r"] * np.sqrt(np.sum(p**2)) / NOISE["r"]


def _isolated(truth: Truth) -> np.ndarray:
    d = np.hypot(truth.x[:, None] - truth.x[None, :], truth.y[:, None] - truth.y[None, :])
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1) > 15


def _interior(truth: Truth, xy0=(BOUNDARY_X - 200, 20160), shape=(400, 400), margin=30) -> np.ndarray:
    return ((truth.x > xy0[0] + margin) & (truth.x < xy0[0] + shape[1] - margin)
            & (truth.y > xy0[1] + margin) & (truth.y < xy0[1] + shape[0] - margin))


def test_completeness_and_no_spurious_detections(scene):
    truth, _, objects = scene
    leaves = np.flatnonzero(objects["deblend_nChild"].to_numpy() == 0)
    idx = _match(truth, objects, leaves)
    sel = _interior(truth) & (_snr_r(truth) >= 10)
    completeness = np.mean(idx[sel] >= 0)
    print(f"completeness at S/N >= 10: {completeness:.3f} of {sel.sum()}")
    assert completeness >= 0.95
    # every leaf away from the edges is a true object (pure white noise gives ~0 false 5-sigma peaks)
    x, y = objects["x"].to_numpy()[leaves], objects["y"].to_numpy()[leaves]
    from scipy.spatial import cKDTree
    dist, _ = cKDTree(np.column_stack([truth.x, truth.y])).query(np.column_stack([x, y]))
    print(f"leaves farther than 3 px from any truth object: {np.sum(dist > 3)} of {len(leaves)}")
    assert np.sum(dist > 3) <= 2


def test_isolated_star_fluxes_unbiased_with_unit_pulls(scene):
    truth, _, objects = scene
    leaves = np.flatnonzero(objects["deblend_nChild"].to_numpy() == 0)
    idx = _match(truth, objects, leaves)
    snr = _snr_r(truth)
    # pulls where the noise dominates: above S/N 200 the wings of the brightest neighbours (0.1-0.2 %)
    # are comparable to the errors
    sel = truth.is_star & _isolated(truth) & _interior(truth) & (idx >= 0)
    noisy = (snr[sel] > 10) & (snr[sel] < 200)
    for band in ("r", "g"):
        for col in ("psfFlux", "free_psfFlux"):
            flux = objects[f"{band}_{col}"].to_numpy()[idx[sel]]
            err = objects[f"{band}_{col}Err"].to_numpy()[idx[sel]]
            true = truth.flux[band][sel]
            bright = snr[sel] > 100
            bias = np.median(flux[bright] / true[bright]) - 1
            pull = ((flux - true) / err)[noisy]
            pull_std = 1.4826 * np.median(np.abs(pull - np.median(pull)))
            print(f"{band}_{col}: bias {bias:+.4f} ({bright.sum()} stars S/N>100), pull std {pull_std:.3f} "
                  f"median {np.median(pull):+.3f} ({noisy.sum()} stars S/N 10-200)")
            assert abs(bias) < 0.01
            assert 0.8 < pull_std < 1.2
            assert abs(np.median(pull)) < 0.3


def test_positions_and_errors(scene):
    truth, _, objects = scene
    leaves = np.flatnonzero(objects["deblend_nChild"].to_numpy() == 0)
    idx = _match(truth, objects, leaves)
    sel = truth.is_star & _isolated(truth) & _interior(truth) & (idx >= 0) & (_snr_r(truth) > 20)
    dx = objects["x"].to_numpy()[idx[sel]] - truth.x[sel]
    pull = dx / objects["xErr"].to_numpy()[idx[sel]]
    print(f"x offset median {np.median(dx):+.4f} px, pull std {np.std(pull):.3f}")
    assert abs(np.median(dx)) < 0.02
    assert 0.7 < np.std(pull) < 1.3
    ra, dec = coadds_sky = scene[1]["r"].pixel_to_sky(truth.x[sel], truth.y[sel])
    del coadds_sky
    sep_arcsec = 3600 * np.hypot((objects["coord_ra"].to_numpy()[idx[sel]] - ra) * np.cos(np.radians(dec)),
                                 objects["coord_dec"].to_numpy()[idx[sel]] - dec)
    assert np.median(sep_arcsec) < 0.02
    ra_err = objects["coord_raErr"].to_numpy()[idx[sel]] * 3600 * np.cos(np.radians(dec))
    assert np.allclose(ra_err, objects["xErr"].to_numpy()[idx[sel]] * 0.2, rtol=0.05)


def test_extendedness_separates_stars_and_galaxies(scene):
    truth, _, objects = scene
    leaves = np.flatnonzero(objects["deblend_nChild"].to_numpy() == 0)
    idx = _match(truth, objects, leaves)
    ok = _isolated(truth) & _interior(truth) & (idx >= 0)
    ext = objects["refExtendedness"].to_numpy(zero_copy_only=False)
    stars = ok & truth.is_star & (_snr_r(truth) > 50)
    galaxies = ok & ~truth.is_star
    print(f"stars extended {np.nanmean(ext[idx[stars]]):.3f} ({stars.sum()}), "
          f"galaxies extended {np.nanmean(ext[idx[galaxies]]):.3f} ({galaxies.sum()})")
    assert np.nanmean(ext[idx[stars]]) <= 0.05
    assert np.nanmean(ext[idx[galaxies]]) >= 0.9
    size = objects["r_sizeExtendedness"].to_numpy(zero_copy_only=False)
    assert np.nanmedian(size[idx[galaxies]]) > 0.9 > 0.1 > np.nanmedian(size[idx[stars]])


@pytest.fixture(scope="module")
def sparse():
    """Galaxies and stars 80 px apart: no other footprint inside any Kron aperture."""
    rng = np.random.default_rng(7)
    gx, gy = np.meshgrid(np.arange(5) * 80.0 + 40, np.arange(5) * 80.0 + 40)
    x0, y0 = BOUNDARY_X - 200, 20160
    n = gx.size
    is_star = np.arange(n) % 3 == 0
    flux = 10 ** rng.uniform(3.5, 4.5, n)
    truth = Truth(x=x0 + gx.ravel() + rng.uniform(-2, 2, n), y=y0 + gy.ravel() + rng.uniform(-2, 2, n),
                  flux={"r": flux, "g": 0.8 * flux}, hlr=np.where(is_star, 0.0, rng.uniform(2.0, 4.0, n)),
                  is_star=is_star)
    coadds = _render((400, 400), (x0, y0), truth, seed=8)
    return truth, coadds, measure_objects(coadds, SKYMAP.patch_info(TRACT, PATCH_A), SKYMAP)


def test_kron_matches_sep_on_isolated_objects(sparse):
    """Our Kron radius and flux vs sep run directly on the image with the same ellipse (no segmentation)."""
    truth, coadds, objects = sparse
    rows = _match(truth, objects, np.arange(objects.num_rows))
    assert np.all(rows >= 0) and np.all(objects["deblend_nChild"].to_numpy()[rows] == 0)
    xy0 = coadds["r"].xy0
    x = objects["x"].to_numpy()[rows] - xy0[0]
    y = objects["y"].to_numpy()[rows] - xy0[1]
    a, b, theta = _axes(*(objects[f"shape_{k}"].to_numpy()[rows].astype(float) for k in ("xx", "yy", "xy")))
    image = coadds["r"].image.astype(np.float64)
    kr, _ = sep.kron_radius(image, x, y, a, b, theta, 6.0)
    flux, _, _ = sep.sum_ellipse(image, x, y, a, b, theta, np.maximum(2.5 * kr, 3.5), subpix=0)
    ours_rad = objects["r_kronRad"].to_numpy()[rows]
    ours_flux = objects["r_kronFlux"].to_numpy()[rows]
    print(f"kronRad ratio {np.median(ours_rad / (kr * np.sqrt(a * b))):.5f}, "
          f"kronFlux ratio {np.median(ours_flux / flux):.5f} ({len(rows)} objects)")
    np.testing.assert_allclose(ours_rad, kr * np.sqrt(a * b), rtol=1e-3)
    np.testing.assert_allclose(ours_flux, flux, rtol=1e-3)
    # against truth: 2.5 Kron radii hold ~90-95 % of an exponential disk and of a Moffat(3.5) star
    ratio = ours_flux / truth.flux["r"]
    print(f"kron/true: galaxies {np.median(ratio[~truth.is_star]):.3f}, stars {np.median(ratio[truth.is_star]):.3f}")
    assert 0.85 < np.median(ratio[~truth.is_star]) < 1.0
    assert 0.92 < np.median(ratio[truth.is_star]) < 1.0


def _axes(cxx, cyy, cxy):
    mean = 0.5 * (cxx + cyy)
    half = np.hypot(0.5 * (cxx - cyy), cxy)
    return np.sqrt(mean + half), np.sqrt(mean - half), 0.5 * np.arctan2(2 * cxy, cxx - cyy)


def test_patch_overlap_gives_each_object_one_primary_row():
    """The same sky measured on two different cut-outs as patch A and as patch B: every true object is
    primary exactly once, and no two primary rows lie within 1 arcsec."""
    truth = _scene(seed=3)
    region = _render((400, 560), (BOUNDARY_X - 280, 20160), truth, seed=4)
    tables_ = []
    for patch, (c0, c1) in ((PATCH_A, (0, 400)), (PATCH_B, (160, 560))):
        cut = {}
        for band, exp in region.items():
            wcs = exp.wcs.deepcopy()
            wcs.wcs.crpix = wcs.wcs.crpix - np.array([c0, 0.0])
            cut[band] = Exposure(image=exp.image[:, c0:c1], variance=exp.variance[:, c0:c1],
                                 mask=Mask.empty((400, c1 - c0)), wcs=wcs, psf=exp.psf,
                                 xy0=(exp.xy0[0] + c0, exp.xy0[1]), info=exp.info)
        tables_.append(measure_objects(cut, SKYMAP.patch_info(TRACT, patch), SKYMAP))
    both = pa.concat_tables(tables_)
    primary = np.flatnonzero(both["detect_isPrimary"].to_numpy())
    assert set(both["patch"].to_numpy()[primary]) == {PATCH_A, PATCH_B}
    ra, dec = both["coord_ra"].to_numpy()[primary], both["coord_dec"].to_numpy()[primary]
    from scipy.spatial import cKDTree
    xyz = np.column_stack([np.cos(np.radians(dec)) * np.cos(np.radians(ra)),
                           np.cos(np.radians(dec)) * np.sin(np.radians(ra)), np.sin(np.radians(dec))])
    pairs = cKDTree(xyz).query_pairs(np.radians(1 / 3600))
    assert not pairs
    # objects well inside the region, on either side of the boundary, detected as primary exactly once
    inside = ((truth.x > BOUNDARY_X - 250) & (truth.x < BOUNDARY_X + 250) & (truth.y > 20190) & (truth.y < 20530)
              & (_snr_r(truth) >= 10))
    x = both["x"].to_numpy()[primary]
    y = both["y"].to_numpy()[primary]
    d = np.hypot(x[None, :] - truth.x[inside, None], y[None, :] - truth.y[inside, None])
    counts = np.sum(d < 2.0, axis=1)
    print(f"primary matches per true object: {np.bincount(counts)}")
    assert np.mean(counts == 1) >= 0.97
    assert np.all(counts <= 1)


def test_blendedness_zero_when_isolated_positive_in_pairs(scene):
    truth, _, objects = scene
    nchild = objects["deblend_nChild"].to_numpy()
    parent = objects["parentObjectId"].to_numpy()
    blend = objects["r_blendedness"].to_numpy(zero_copy_only=False)
    isolated = objects["detect_isIsolated"].to_numpy()
    assert np.all(blend[isolated] == 0)
    children = (parent != 0) & (nchild == 0)
    assert np.all(np.isfinite(blend[children]))
    assert np.all((blend[children] >= 0) & (blend[children] <= 1))  # children of far neighbours: ~0
    # in a 2:1 pair 9 px apart the fainter child is the more blended
    leaves = np.flatnonzero(nchild == 0)
    idx = _match(truth, objects, leaves)
    n_main = 144
    companions = np.arange(n_main, len(truth.x))
    mains = np.flatnonzero((truth.x[:n_main, None] == truth.x[companions] - 9.0).any(axis=1))
    ok = (idx[mains] >= 0) & (idx[companions] >= 0)
    assert ok.sum() >= 5
    print(f"blendedness in 2:1 pairs: fainter {np.median(blend[idx[companions[ok]]]):.3f}, "
          f"brighter {np.median(blend[idx[mains[ok]]]):.3f}")
    assert np.all(blend[idx[companions[ok]]] > blend[idx[mains[ok]]])
    assert np.median(blend[idx[companions[ok]]]) > 0.005  # neighbour wings under a PSF-sized weight: ~2 %


def test_significance_image_null_distribution():
    """Independent N(0, 1) bands: the combined image has the one-sided Gaussian tail of a single band."""
    from scipy import stats

    from skydp.objects.detection import significance_image

    rng = np.random.default_rng(11)
    for n_bands in (1, 2, 4):
        z = significance_image([rng.standard_normal(400_000).astype(np.float32) for _ in range(n_bands)])
        for level in (1.5, 2.5, 3.0):
            observed = np.mean(z > level)
            expected = stats.norm.sf(level)
            assert abs(observed - expected) < 5 * np.sqrt(expected / z.size), (n_bands, level, observed, expected)
    one = rng.standard_normal(1000).astype(np.float32)
    np.testing.assert_allclose(significance_image([one])[one > 0], one[one > 0], rtol=1e-3, atol=2e-3)


def test_pure_noise_gives_no_objects_and_correlated_noise_is_normalised():
    """Noise smoothed by a kernel (as warping correlates coadd noise) with a per-pixel variance plane
    that ignores the correlation: the noise scale absorbs it and nothing is detected."""
    from scipy import ndimage

    rng = np.random.default_rng(12)
    truth = Truth(x=np.zeros(0), y=np.zeros(0), flux={"r": np.zeros(0), "g": np.zeros(0)}, hlr=np.zeros(0),
                  is_star=np.zeros(0, bool))
    coadds = _render((300, 300), (BOUNDARY_X - 200, 20160), truth, seed=13)
    for band, exp in coadds.items():
        white = rng.normal(0.0, NOISE[band], exp.shape)
        exp.image = ndimage.gaussian_filter(white, 0.7).astype(np.float32)
        exp.image *= NOISE[band] / exp.image.std()  # pixel rms right, pixels correlated
    objects = measure_objects(coadds, SKYMAP.patch_info(TRACT, PATCH_A), SKYMAP)
    assert objects.num_rows == 0
    assert objects.schema.equals(tables.arrow_schema("Object"))


def test_match_sources_to_objects(scene):
    _, _, objects = scene
    primary = objects.filter(objects["detect_isPrimary"])
    ra = primary["coord_ra"].to_numpy()[:20]
    dec = primary["coord_dec"].to_numpy()[:20]
    offset = 0.5 / 3600  # 0.5 arcsec north: matched; 3 arcsec: not
    sources = pa.table({"coord_ra": np.r_[ra, ra], "coord_dec": np.r_[dec + offset, dec + 6 * offset]})
    matched = match_sources_to_objects(sources, objects)
    np.testing.assert_array_equal(matched[:20], primary["objectId"].to_numpy()[:20])
    assert np.all(matched[20:] == 0)
    with pytest.raises(ValueError, match="coord_ra"):
        match_sources_to_objects(pa.table({"ra": [1.0]}), objects)


def test_bad_inputs_raise_clear_errors(scene):
    _, coadds, _ = scene
    patch = SKYMAP.patch_info(TRACT, PATCH_A)
    with pytest.raises(ValueError, match="no coadds"):
        measure_objects({}, patch, SKYMAP)
    with pytest.raises(ValueError, match="band"):
        measure_objects({"q": coadds["r"]}, patch, SKYMAP)
    shifted = coadds["g"].copy()
    shifted.xy0 = (shifted.xy0[0] + 1, shifted.xy0[1])
    with pytest.raises(ValueError, match="grid"):
        measure_objects({"r": coadds["r"], "g": shifted}, patch, SKYMAP)
    no_psf = coadds["r"].copy()
    no_psf.psf = None
    with pytest.raises(ValueError, match="band r: the coadd has no PSF"):
        measure_objects({"r": no_psf}, patch, SKYMAP)
    with pytest.raises(ValueError, match="ObjectConfig"):
        ObjectConfig(threshold=-1)
