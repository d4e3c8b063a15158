"""Forced photometry and the ForcedSource / ForcedSourceOnDiaObject builders on simulator truth (tiny preset).

Stars are measured at their true positions; "isolated" means the summed response of the PSF fit
to every other drawn object (its true flux times the PSF autocorrelation at the separation) is
below 0.1 sigma, so the truth flux is what a perfect forced fit must return.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy.signal import fftconvolve
from scipy.spatial import cKDTree

from skydp import ids, tables
from skydp.exposure import read_exposure
from skydp.forced import forced_dia_table, forced_photometry, forced_source_table
from skydp.pipeline import process_visit_image
from skydp.sim import simulate

UNUSABLE_FLAGS = ("psfFlux_flag", "pixelFlags_saturated", "pixelFlags_bad", "pixelFlags_edge", "pixelFlags_nodata",
                  "pixelFlags_suspect")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = simulate(tmp_path_factory.mktemp("forced_sim"), preset="tiny", seed=3, progress=False)
    epochs = pq.read_table(out.outdir / "truth_epochs.parquet").to_pandas()
    objects = pq.read_table(out.outdir / "truth_objects.parquet")
    return out, epochs, objects


def _neighbour_response(psf_kernel: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """Flux a PSF fit at each position picks up from all the other objects."""
    auto = fftconvolve(psf_kernel, psf_kernel[::-1, ::-1]) / np.sum(psf_kernel**2)
    h = psf_kernel.shape[0] - 1
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(h, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    dx, dy = np.rint(x[j] - x[i]).astype(int), np.rint(y[j] - y[i]).astype(int)
    inside = (np.abs(dx) <= h) & (np.abs(dy) <= h)
    w = np.where(inside, auto[np.clip(dy + h, 0, 2 * h), np.clip(dx + h, 0, 2 * h)], 0.0)
    out = np.zeros(len(x))
    np.add.at(out, i, np.abs(flux[j]) * w)
    np.add.at(out, j, np.abs(flux[i]) * w)
    return out


def _isolated_stars(exposure, epochs, objects):
    rows = epochs[(epochs.visit == exposure.info.visit) & epochs.drawn].reset_index(drop=True)
    ny, nx = exposure.shape
    kernel = exposure.psf.image((nx - 1) / 2, (ny - 1) / 2)
    response = _neighbour_response(kernel, rows.x.to_numpy(), rows.y.to_numpy(), rows.flux.to_numpy())
    star_ids = set(np.asarray(objects["id"])[np.asarray(objects["type"]) == "star"])
    is_star = rows.id.isin(star_ids).to_numpy()
    return rows[is_star].reset_index(drop=True), response[is_star]


def _measure_stars(exposure, epochs, objects):
    stars, response = _isolated_stars(exposure, epochs, objects)
    result = forced_photometry(exposure, stars.ra.to_numpy(), stars.dec.to_numpy()).to_pandas()
    usable = ~np.any([result[name].to_numpy() for name in UNUSABLE_FLAGS], axis=0)
    good = usable & (response < 0.1 * result.psfFluxErr.to_numpy())
    return stars, result, good


@pytest.fixture(scope="module")
def measured(sim):
    """(exposure, truth star rows, forced result, usable-and-isolated mask) for every visit image."""
    out, epochs, objects = sim
    return [(exposure, *_measure_stars(exposure, epochs, objects))
            for exposure in (read_exposure(path) for path in out.images)]


def test_pulls_and_bias_on_visit_images(measured):
    pulls, bright_ratio = [], []
    for _, stars, result, good in measured:
        # positions come from ra/dec through the WCS: they must land on the truth pixel positions
        np.testing.assert_allclose(result.x[good], stars.x[good], atol=2e-3)
        np.testing.assert_allclose(result.y[good], stars.y[good], atol=2e-3)
        flux, err, truth = result.psfFlux.to_numpy(), result.psfFluxErr.to_numpy(), stars.flux.to_numpy()
        pulls.append(((flux - truth) / err)[good])
        bright = good & (truth / err > 50)
        bright_ratio.append(flux[bright] / truth[bright])
    pulls, bright_ratio = np.concatenate(pulls), np.concatenate(bright_ratio)
    assert pulls.size > 500 and bright_ratio.size > 100
    # measured: pull std 1.02, median 0.04 (939 isolated stars); bright median ratio - 1 ~ 4e-4
    assert 0.9 < np.std(pulls) < 1.2
    assert abs(np.median(pulls)) < 0.15
    assert abs(np.median(bright_ratio) - 1) < 0.01


def test_bright_star_scatter_across_visits_matches_errors(measured):
    """chi2/dof of each bright isolated star's fluxes in one band about their weighted mean ~ 1."""
    parts = []
    for exposure, stars, result, good in measured:
        bright = good & (stars.flux.to_numpy() / result.psfFluxErr.to_numpy() > 30)
        band = np.full(bright.sum(), "ugrizy".index(exposure.info.band))
        parts.append(np.column_stack([stars.id[bright], band, result.psfFlux[bright], result.psfFluxErr[bright]]))
    rows = np.concatenate(parts)
    chi2, dof = 0.0, 0
    for key in np.unique(rows[:, :2], axis=0):
        this = np.all(rows[:, :2] == key, axis=1)
        f, e = rows[this, 2], rows[this, 3]
        if f.size < 2:
            continue
        mean = np.sum(f / e**2) / np.sum(1 / e**2)
        chi2 += np.sum(((f - mean) / e) ** 2)
        dof += f.size - 1
    assert dof > 80
    assert 0.75 < chi2 / dof < 1.3


def test_processed_image_gives_unbiased_fluxes(sim):
    """On the pipeline's output (background re-subtracted, CRs interpolated, PSF from the file)."""
    out, epochs, objects = sim
    exposure = process_visit_image(read_exposure(out.images[1])).exposure
    stars, result, good = _measure_stars(exposure, epochs, objects)
    good &= ~result.pixelFlags_interpolated.to_numpy()
    flux, err, truth = result.psfFlux.to_numpy(), result.psfFluxErr.to_numpy(), stars.flux.to_numpy()
    pulls = ((flux - truth) / err)[good]
    bright = good & (truth / err > 50)
    assert pulls.size > 100 and bright.sum() > 15
    assert 0.9 < np.std(pulls) < 1.2
    assert abs(np.median(flux[bright] / truth[bright]) - 1) < 0.01


def test_forced_source_table(sim):
    out, _, objects = sim
    exposure = read_exposure(out.images[0])
    objs = pa.table({"objectId": pc.add(objects["id"], 1000), "coord_ra": objects["ra"], "coord_dec": objects["dec"],
                     "tract": pa.array(np.full(objects.num_rows, 7), pa.int64()),
                     "patch": pa.array(np.full(objects.num_rows, 3), pa.int64())})
    difference = exposure.copy()
    difference.image[:] = 0.0
    table = forced_source_table(exposure, objs, difference)
    assert table.schema.equals(tables.arrow_schema("ForcedSource"))
    x, y = exposure.sky_to_pixel(np.asarray(objects["ra"]), np.asarray(objects["dec"]))
    on = (x >= -0.5) & (x < exposure.width - 0.5) & (y >= -0.5) & (y < exposure.height - 0.5)
    assert table.num_rows == on.sum()
    np.testing.assert_array_equal(table["objectId"], np.asarray(objects["id"])[on] + 1000)  # input order
    assert set(table["band"].to_pylist()) == {exposure.info.band}
    assert set(table["visit"].to_pylist()) == {exposure.info.visit}
    assert table["midpointMjdTai"][0].as_py() == pytest.approx(exposure.info.mjd_mid)
    assert set(table["tract"].to_pylist()) == {7} and set(table["patch"].to_pylist()) == {3}
    # a zero difference image gives zero psfDiffFlux with the same errors as the visit image
    diff = table["psfDiffFlux"].to_numpy()
    ok = ~np.asarray(table["psfFlux_flag"])
    np.testing.assert_allclose(diff[ok], 0.0, atol=1e-6)
    np.testing.assert_allclose(table["psfDiffFluxErr"].to_numpy()[ok], table["psfFluxErr"].to_numpy()[ok], rtol=1e-5)
    flux, mag = table["psfFlux"].to_numpy(), table["psfMag"]
    positive = ok & (flux > 0)
    np.testing.assert_allclose(np.asarray(mag.filter(pa.array(positive))), 31.4 - 2.5 * np.log10(flux[positive]),
                               rtol=1e-6)
    assert mag.null_count == np.sum(~(np.isfinite(flux) & (flux > 0)))
    # without a difference image the psfDiff columns are null
    plain = forced_source_table(exposure, objs)
    assert plain["psfDiffFlux"].null_count == plain.num_rows


def test_forced_dia_table_ids_and_schema(sim):
    out, _, objects = sim
    exposure = read_exposure(out.images[2])
    dia = pa.table({"diaObjectId": pc.multiply(objects["id"], -1), "ra": objects["ra"], "dec": objects["dec"]})
    table = forced_dia_table(exposure, dia, None)
    assert table.schema.equals(tables.arrow_schema("ForcedSourceOnDiaObject"))
    key = np.asarray(table["forcedSourceOnDiaObjectId"])
    assert np.unique(key).size == table.num_rows
    # packed visit+detector id with the counter in diaObjectId order
    counters = [ids.unpack_source_id(k) for k in key]
    assert {(v, d) for v, d, _ in counters} == {(exposure.info.visit, exposure.info.detector)}
    order = np.argsort(np.asarray(table["diaObjectId"]))
    np.testing.assert_array_equal(np.array([n for _, _, n in counters])[order], np.arange(1, table.num_rows + 1))
    # tract/patch from the default sky map when the DiaObjects carry none
    assert table["tract"].null_count == 0 and table["patch"].null_count == 0
    # same input, same ids
    again = forced_dia_table(exposure, dia, None)
    np.testing.assert_array_equal(np.asarray(again["forcedSourceOnDiaObjectId"]), key)


def test_builders_reject_incomplete_input(sim):
    out, _, objects = sim
    exposure = read_exposure(out.images[0])
    with pytest.raises(ValueError, match="objects table has no column 'objectId'"):
        forced_source_table(exposure, pa.table({"coord_ra": objects["ra"], "coord_dec": objects["dec"]}))
    with pytest.raises(ValueError, match="dia_objects table has no column 'ra'"):
        forced_dia_table(exposure, pa.table({"diaObjectId": objects["id"]}), None)
