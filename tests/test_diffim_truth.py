"""Differencing and DiaSources on simulated visits against simulator truth (issue 8 quality bars).

Four r-band visits at one pointing (same pixel grid) of a tiny-preset field with extra variables and
transients; the best-seeing visit, processed by single-visit processing, is the template; the others
are differenced against it. Truth gives each object's flux in both visits, so the true flux change
and its expected significance are known.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats
from scipy.spatial import cKDTree

from skydp import tables
from skydp.coadd import make_coadd
from skydp.diffim import subtract_images
from skydp.diffim.dia_sources import detect_dia_sources
from skydp.exposure import read_exposure
from skydp.pipeline.process import process_visit_image
from skydp.sim import simulate
from skydp.sim.presets import get_preset

MATCH_PX = 2.0


def _difference_visits(tmp, preset, seed: int, n_template: int):
    """Simulate, process every visit, coadd the n_template best-seeing ones as the template and
    difference the others against it: [(visit, Difference, DiaSource table, truth, template truth)].

    The template is the weighted mean of its inputs (no artifact clipping, which would drop variable
    pixels), so its truth flux is the same weighted mean of the inputs' true fluxes."""
    sim = simulate(tmp, preset=preset, seed=seed)
    processed = {}
    for path in sim.images:
        exp = process_visit_image(read_exposure(path)).exposure
        processed[exp.info.visit] = exp
    visits = pq.read_table(sim.visits).to_pandas().sort_values("seeing")
    template_visits = [int(v) for v in visits.visit.iloc[:n_template]]
    coadd = make_coadd([processed[v] for v in template_visits], clip=None)  # truth: the plain weighted mean
    template = coadd.exposure
    weights = dict(zip(coadd.inputs.column("visit").to_pylist(), coadd.inputs.column("weight").to_pylist()))
    epochs = pq.read_table(sim.truth_epochs).to_pandas()
    kinds = pq.read_table(sim.truth_objects, columns=["id", "type"]).to_pandas()
    epochs = epochs.merge(kinds, on="id")
    in_template = epochs[epochs.visit.isin(template_visits)].copy()
    in_template["w"] = in_template.visit.map(weights)
    in_template["wf"] = in_template.w * in_template.flux
    grouped = in_template.groupby("id")
    template_truth = grouped[["x", "y"]].mean().join(grouped.type.first())
    template_truth["flux"] = grouped.wf.sum() / grouped.w.sum()
    results = []
    for visit, science in processed.items():
        if visit in template_visits:
            continue
        diff = subtract_images(science, template)
        dia = detect_dia_sources(diff, science)
        truth = epochs[epochs.visit == visit].set_index("id")
        truth = truth.join(template_truth[["flux"]].rename(columns={"flux": "flux_template"}), how="left")
        truth["flux_template"] = truth["flux_template"].fillna(0.0)
        truth["delta"] = truth["flux"] - truth["flux_template"]
        results.append((visit, diff, dia, truth, template_truth))
    return results


@pytest.fixture(scope="module")
def differenced(tmp_path_factory):
    """tiny field (512 px, one pointing), 4 r visits, template = coadd of the best two."""
    preset = get_preset("tiny", dither_radius_deg=0.0, max_rotation_deg=0.0, visits_per_band={"r": 4},
                        n_transients=40, n_variables=6, star_density_scale=10.0)
    return _difference_visits(tmp_path_factory.mktemp("tiny"), preset, seed=11, n_template=2)


@pytest.fixture(scope="module")
def differenced_2k(tmp_path_factory):
    """2k x 2k detector at survey star density x2, 5 r visits, template = coadd of the best two."""
    preset = get_preset("tiny", detector_shape=(2048, 2048), dither_radius_deg=0.0, max_rotation_deg=0.0,
                        visits_per_band={"r": 5}, n_transients=60, n_variables=40, star_density_scale=2.0,
                        cosmic_rate=0.2)
    return _difference_visits(tmp_path_factory.mktemp("2k"), preset, seed=5, n_template=2)


@pytest.fixture(scope="module")
def quiet_4k_area(tmp_path_factory):
    """No variables, transients or movers, survey star density and cosmic-ray rate: 6 r visits of a
    2k x 2k detector, template = coadd of the best two, four differences = one 4k x 4k of area.
    Returns (results, simulation directory)."""
    preset = get_preset("tiny", detector_shape=(2048, 2048), dither_radius_deg=0.0, max_rotation_deg=0.0,
                        visits_per_band={"r": 6}, n_transients=0, n_variables=0, n_movers=0,
                        star_density_scale=1.0, cosmic_rate=0.05)
    outdir = tmp_path_factory.mktemp("quiet")
    return _difference_visits(outdir, preset, seed=7, n_template=2), outdir


def _clean_pixels(diff):
    d = diff.difference
    masked = (d.mask.array & d.mask.bitmask("DETECTED", "DETECTED_NEGATIVE", "NO_DATA", "SAT", "BAD")) != 0
    return np.isfinite(d.image) & ~masked


def _expected_snr(diff, delta, x, y):
    """|true flux change| / PSF-flux noise on the difference at the true position (noise-equivalent area)."""
    d = diff.difference
    psf = d.psf.image(float(np.median(x)), float(np.median(y)))
    var = np.nan_to_num(d.variance[np.clip(np.round(y).astype(int), 0, d.height - 1),
                                   np.clip(np.round(x).astype(int), 0, d.width - 1)], nan=np.inf)
    return np.abs(delta) / np.sqrt(var / np.sum(psf**2))


def _noise_std(results) -> list[float]:
    out = []
    for visit, diff, *_ in results:
        ok = _clean_pixels(diff)
        out.append(float(np.std(diff.difference.image[ok] / np.sqrt(diff.difference.variance[ok]))))
        print(f"visit {visit}: std(image/sqrt(variance)) on source-free pixels = {out[-1]:.3f}")
    return out


def _matched_changes(results, min_snr: float = 10.0):
    """(found, expected, pulls, signs_ok) over true flux changes with expected S/N >= min_snr."""
    found, expected, pulls, signs_ok = 0, 0, [], True
    for visit, diff, dia, truth, _ in results:
        changing = truth[truth.type.isin(["variable", "transient"]) & (truth.delta != 0)]
        snr = _expected_snr(diff, changing.delta.to_numpy(), changing.x.to_numpy(), changing.y.to_numpy())
        # positions where a difference exists at all (not in the NO_DATA border or corner)
        ix = np.clip(np.round(changing.x.to_numpy()).astype(int), 0, diff.difference.width - 1)
        iy = np.clip(np.round(changing.y.to_numpy()).astype(int), 0, diff.difference.height - 1)
        usable = np.isfinite(diff.difference.image[iy, ix])
        target = changing[(snr >= min_snr) & usable]
        table = dia.to_pandas()
        dist, idx = cKDTree(table[["x", "y"]].to_numpy()).query(target[["x", "y"]].to_numpy())
        hit = dist < MATCH_PX
        found += int(hit.sum())
        expected += len(target)
        rows = table.iloc[idx[hit]]
        pull = (rows.psfFlux.to_numpy() - target.delta.to_numpy()[hit]) / rows.psfFluxErr.to_numpy()
        pulls.extend(pull)
        for t_flux, delta, p in zip(target.flux_template.to_numpy()[hit], target.delta.to_numpy()[hit], pull):
            print(f"  template flux {t_flux:10.0f}  true change {delta:10.0f}  pull {p:6.2f}")
        signs_ok &= bool(np.all(rows.isNegative.to_numpy() == (target.delta.to_numpy()[hit] < 0)))
    return found, expected, np.array(pulls), signs_ok


def _unmatched_dia_sources(dia, truth, template):
    """(DiaSources as a DataFrame, no true change or mover within MATCH_PX in the visit or the
    template, an edge/CR/SAT/NO_DATA flag) for one difference."""
    table = dia.to_pandas()
    real = truth[truth.type.isin(["variable", "transient", "mover"])]
    moved = template[template.type.isin(["mover", "transient", "variable"])]
    pts = np.vstack([real[["x", "y"]].to_numpy(), moved[["x", "y"]].to_numpy()])
    dist, _ = cKDTree(pts).query(table[["x", "y"]].to_numpy())
    flagged = table.pixelFlags_edge | table.pixelFlags_cr | table.pixelFlags_saturated | table.pixelFlags_nodata
    return table, dist > MATCH_PX, flagged


def _false_detections(results) -> tuple[int, int, int]:
    """DiaSources with no true change (or mover, in the visit or the template) within 2 px:
    (count, how many carry an edge/CR/SAT/NO_DATA flag, pixels searched)."""
    total, flagged, area = 0, 0, 0
    for visit, diff, dia, truth, template in results:
        table, unmatched, flags = _unmatched_dia_sources(dia, truth, template)
        false, flags = table[unmatched], flags[unmatched]
        print(f"visit {visit}: {len(false)} false DiaSources, {int(flags.sum())} flagged edge/CR/SAT/NO_DATA")
        print(false[["x", "y", "psfFlux", "snr", "scienceFlux", "templateFlux", "isDipole"]].to_string())
        total += len(false)
        flagged += int(flags.sum())
        area += diff.difference.width * diff.difference.height
    print(f"false DiaSources: {total} ({flagged} flagged) in {area / 1e6:.2f} Mpx = "
          f"{total / area * 4096**2:.1f} per 4k x 4k")
    return total, flagged, area


def test_difference_noise_is_unit_normal(differenced):
    assert all(0.9 <= s <= 1.15 for s in _noise_std(differenced))


def test_dia_source_table_has_the_exact_schema(differenced):
    _, diff, dia, *_ = differenced[0]
    assert dia.schema == tables.arrow_schema("DiaSource")
    assert dia.num_rows > 0
    ids = dia.column("diaSourceId").to_numpy()
    assert len(set(ids.tolist())) == len(ids)
    assert np.all(dia.column("midpointMjdTai").to_numpy() == diff.difference.info.mjd_mid)
    mask = diff.difference.mask
    assert mask.get("DETECTED").any() and mask.get("DETECTED_NEGATIVE").any()


def test_recovery_against_truth(differenced):
    """Every change with S/N >= 10 found with the right sign (a handful on a tiny field: the
    statistics are in the slow 2k test)."""
    found, expected, pulls, signs_ok = _matched_changes(differenced)
    print(f"recovered {found}/{expected} changes with S/N >= 10; psfFlux pull median {np.median(pulls):.2f} "
          f"std {pulls.std():.2f}")
    assert expected >= 3
    assert found == expected
    assert signs_ok


def _on_blank_sky(results) -> int:
    """False DiaSources that are unflagged and on neither a science nor a template source (forced
    PSF flux below 5 sigma on both): noise or artefacts, not residuals of real objects."""
    count = 0
    for visit, diff, dia, truth, template in results:
        table, unmatched, flagged = _unmatched_dia_sources(dia, truth, template)
        blank = ((np.abs(table.scienceFlux) < 5 * table.scienceFluxErr)
                 & (np.abs(table.templateFlux) < 5 * table.templateFluxErr))
        count += int((unmatched & ~flagged & blank).sum())
    return count


def _expected_noise_peaks(diff) -> float:
    """Expected number of 5-sigma peaks (both polarities) Gaussian noise gives the matched filter on
    ``diff``'s usable pixels: the Euler characteristic of the excursion set (see
    test_false_detections_without_variable_sources)."""
    d = diff.difference
    usable = int(np.isfinite(d.image).sum())
    sigma = d.psf.shape(*(0.5 * (np.array(d.shape[::-1]) - 1))).sigma
    u = 5.0  # DiffimConfig.detection_threshold
    return 2 * usable / (2 * sigma**2) * u * np.exp(-u**2 / 2) / (2 * np.pi) ** 1.5


def test_false_detections_are_residuals_of_real_sources(differenced):
    """The tiny field is ten times denser in stars than a survey field: its false DiaSources are
    bright-star residuals (counted and printed); on blank sky no more than Gaussian noise plausibly
    gives (Poisson probability of at least that many >= 0.001). Measured 1 with 0.10 expected: science
    +4.4 sigma, template -2.7 sigma once the template error includes the kernel's noise correlation
    (the old error, 3x too small, made it a -8 sigma template source)."""
    _false_detections(differenced)
    expected = sum(_expected_noise_peaks(diff) for _, diff, *_ in differenced)
    blank = _on_blank_sky(differenced)
    print(f"blank-sky false DiaSources {blank}, {expected:.2f} expected from noise")
    assert blank == 0 or stats.poisson.sf(blank - 1, expected) >= 1e-3


@pytest.mark.slow
def test_2k_noise_recovery_pulls_and_false_detections(differenced_2k):
    """The issue's bars on a 2k x 2k detector with a two-visit coadd template."""
    noise = _noise_std(differenced_2k)
    found, expected, pulls, signs_ok = _matched_changes(differenced_2k)
    print(f"recovered {found}/{expected} changes with S/N >= 10; psfFlux pull median {np.median(pulls):.2f} "
          f"std {pulls.std():.2f} (robust {1.4826 * np.median(np.abs(pulls - np.median(pulls))):.2f})")
    total, _, area = _false_detections(differenced_2k)
    blank = _on_blank_sky(differenced_2k)
    print(f"false DiaSources on blank sky: {blank}")
    assert all(0.9 <= s <= 1.15 for s in noise)
    assert expected >= 40
    assert found >= 0.95 * expected
    assert signs_ok
    # issue bar: pull std 0.9-1.2; measured 0.99 (median 0.17). It was 1.24 while the fitted kernel
    # sum was 0.1-0.4 % off (noise correction dropped, variable kernel stars not clipped), a residual
    # of that fraction of every bright variable's static flux
    assert 0.9 <= pulls.std() <= 1.2
    assert abs(np.median(pulls)) < 0.3
    # with variables, twice the survey star density and 4x its cosmic-ray rate: measured 13 per
    # 4k x 4k (bright-star and CR residuals, a few 5.0-5.1 sigma on blank sky); the bar of 5
    # is for fields without variable sources: test_false_detections_without_variable_sources
    assert total / area * 4096**2 <= 20


def _classify_false(dia, truth, cosmics, visits) -> np.ndarray:
    """Class of each DiaSource on a field without changes: "cosmic ray" (a simulated cosmic-ray pixel
    of the visit or of a template input within 2 px, or the CR flag), "source residual" (a true star
    or galaxy within 2 px brighter than 10 psfFluxErr, or the SAT flag), else "blank sky"."""
    xy = dia[["x", "y"]].to_numpy()
    near_cr = np.zeros(len(dia), dtype=bool)
    hits = cosmics[cosmics.visit.isin(visits)]
    if len(hits):
        near_cr = cKDTree(hits[["x", "y"]].to_numpy()).query(xy)[0] <= MATCH_PX
    near_cr |= dia.pixelFlags_cr.to_numpy()
    dist, idx = cKDTree(truth[["x", "y"]].to_numpy()).query(xy)
    bright = truth.flux.to_numpy()[idx] >= 10 * dia.psfFluxErr.to_numpy()
    residual = ((dist <= MATCH_PX) & bright) | dia.pixelFlags_saturated.to_numpy()
    return np.where(near_cr, "cosmic ray", np.where(residual, "source residual", "blank sky"))


@pytest.mark.slow
def test_false_detections_without_variable_sources(quiet_4k_area):
    """Issue bar: on visits with no variable sources at most 5 false DiaSources per 4k x 4k
    detector-visit. Every DiaSource is false here; each is classified and printed.

    Blank-sky detections are compared with the peaks Gaussian noise gives a 5-sigma matched filter:
    the expected Euler characteristic of the excursion set above u of a smoothed Gaussian field,
    area * lambda_2 * u exp(-u^2 / 2) / (2 pi)^(3/2) per polarity, lambda_2 = 1 / (2 sigma^2) for
    white noise correlated with a Gaussian PSF of sigma px (Adler 1981). That is ~2.5 per 4k^2 and
    polarity at sigma ~2 px, 25 times the naive area / (4 pi sigma^2) * P(z > 5): the bar is close
    to the noise floor. Measured: 5.0 per 4k^2 = 1 saturated-star residual + 4 blank-sky peaks
    (science +-4.2-4.9 sigma on its own), 5.3 expected from noise."""
    results, outdir = quiet_4k_area
    cosmics = pq.read_table(outdir / "truth_cosmics.parquet").to_pandas()
    visits = pq.read_table(outdir / "visits.parquet").to_pandas().sort_values("seeing")
    template_visits = [int(v) for v in visits.visit.iloc[:2]]
    total, area, expected_noise, classes = 0, 0, 0.0, []
    for visit, diff, dia, truth, _ in results:
        table = dia.to_pandas()
        d = diff.difference
        expected_noise += _expected_noise_peaks(diff)
        kind = _classify_false(table, truth, cosmics, [visit] + template_visits)
        table["class"] = kind
        print(f"visit {visit}: {len(table)} DiaSources")
        print(table[["x", "y", "psfFlux", "psfFluxErr", "snr", "scienceFlux", "templateFlux", "isNegative",
                     "class"]].to_string())
        classes.extend(kind)
        total += len(table)
        area += d.width * d.height
    per_4k = total / area * 4096**2
    counts = {k: classes.count(k) for k in ("source residual", "cosmic ray", "blank sky")}
    print(f"{total} false DiaSources in {area / 4096**2:.2f} x 4k^2 = {per_4k:.1f} per 4k x 4k; {counts}; "
          f"blank sky expected from Gaussian noise {expected_noise:.2f}")
    assert area >= 4096**2
    assert per_4k <= 5
    assert counts["blank sky"] <= expected_noise + 3 * np.sqrt(expected_noise)  # no excess over noise peaks
