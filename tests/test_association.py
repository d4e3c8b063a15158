"""Association and DiaObject statistics: against direct numpy/scipy/astropy computations,
incremental == from scratch, and purity/completeness on the simulator's transients and variables."""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa
import pytest
from astropy.stats import median_absolute_deviation
from scipy.optimize import linear_sum_assignment, lsq_linear
from scipy.spatial import cKDTree
from scipy.stats import skew

from skydp import tables
from skydp.association import associate, dia_object_table, update_dia_objects
from skydp.association.matching import match_one_to_one, unit_vectors
from skydp.association.object_state import chord, pairs_within
from skydp.ids import source_id
from skydp.sim.observing import focal_plane_radius, schedule
from skydp.sim.presets import get_preset
from skydp.sim.sky import TRANSIENT, VARIABLE, make_catalog
from skydp.sim.wcs import PIXEL_SCALE

BANDS = "ugrizy"


def dia_source_table(ra, dec, visit, mjd, band, *, err_arcsec=0.05, psf_flux=None, psf_err=None,
                     science_flux=None, science_err=None, first_n=None) -> pa.Table:
    """A DiaSource table (exact schema) with LSST ids per (visit, detector 0) and coordinate errors."""
    ra, dec = np.broadcast_arrays(np.atleast_1d(np.asarray(ra, float)), np.asarray(dec, float))
    n = ra.size
    visit = np.broadcast_to(np.asarray(visit, np.int64), n)
    ids = np.empty(n, np.int64)
    for v in np.unique(visit):
        here = visit == v
        ids[here] = source_id(int(v), 0, np.arange(1, here.sum() + 1))
    err = np.broadcast_to(np.asarray(err_arcsec, float), n) / 3600.0
    ones = np.ones(n)
    return tables.to_arrow("DiaSource", {
        "diaSourceId": ids, "visit": visit, "detector": np.zeros(n, np.int64),
        "band": np.broadcast_to(np.asarray(band), n).astype(str),
        "midpointMjdTai": np.broadcast_to(np.asarray(mjd, float), n),
        "time_processed": [datetime.datetime(2026, 11, 20)] * n,
        "coord_ra": ra, "coord_dec": dec, "ra": ra, "dec": dec,
        "raErr": err / np.cos(np.radians(dec)), "decErr": err, "ra_dec_Cov": 0 * ones,
        "psfFlux": ones * 1000 if psf_flux is None else psf_flux,
        "psfFluxErr": ones * 100 if psf_err is None else psf_err,
        "scienceFlux": ones * 5000 if science_flux is None else science_flux,
        "scienceFluxErr": ones * 50 if science_err is None else science_err,
    })


def visit_id(k: int) -> int:
    return 2026111500010 + k


# ---------------------------------------------------------------- statistics


def stetson_j_direct(f: np.ndarray, e: np.ndarray) -> float:
    """Stetson (1996) J about the reweighted mean, written out per object (alpha = beta = 2)."""
    n = f.size
    k = np.sqrt(n / (n - 1))
    mean = np.sum(f / e**2) / np.sum(1 / e**2)
    for _ in range(20):
        w = 1 / e**2 / (1 + (np.abs(k * (f - mean) / e) / 2.0) ** 2)
        new = np.sum(w * f) / np.sum(w)
        diff = abs(new - mean)
        mean = new
        if diff / mean < 1e-6 and diff < 1e-6:
            break
    p = (k * (f - mean) / e) ** 2 - 1
    return float(np.mean(np.sign(p) * np.sqrt(np.abs(p))))


def direct_stats(f: np.ndarray, e: np.ndarray, t: np.ndarray) -> dict[str, float]:
    w = 1 / e**2
    mean = np.average(f, weights=w)
    order = np.argsort(t)
    out = {
        "Mean": mean, "MeanErr": np.sqrt(1 / w.sum()), "Ndata": f.size,
        "Sigma": np.std(f, ddof=1) if f.size > 1 else np.nan,
        "Chi2": np.sum(((f - mean) / e) ** 2), "Min": f.min(), "Max": f.max(),
        "MAD": median_absolute_deviation(f), "ErrMean": e.mean(),
        "Skew": skew(f, bias=False) if f.size > 2 else np.nan,
        "MaxSlope": np.max(np.diff(f[order]) / np.diff(t[order])) if f.size > 1 else np.nan,
        "StetsonJ": stetson_j_direct(f, e) if f.size > 1 else np.nan,
    }
    for q in (5, 25, 50, 75, 95):
        out[f"Percentile{q:02d}"] = np.percentile(f, q)
    if f.size > 1:  # as ap_linearFit: scipy lsq_linear on the error-scaled design matrix
        out["LinearSlope"], out["LinearIntercept"] = lsq_linear(np.stack([t / e, 1 / e], axis=1), f / e).x
    else:
        out["LinearSlope"] = out["LinearIntercept"] = np.nan
    return out


def test_dia_object_statistics_match_direct_computation():
    rng = np.random.default_rng(7)
    n_obj = 60
    rows = []
    for k in range(n_obj):
        n = int(rng.choice([1, 2, 3, 5, 12, 40]))
        band = rng.choice(list("gri"), n)
        flux = rng.normal(rng.uniform(-2000, 5000), rng.uniform(50, 800), n)
        if k % 7 == 0:
            flux[0] = np.nan  # excluded from the psfFlux statistics, still counted in nDiaSources
        rows.append({"oid": np.full(n, 1000 + k), "band": band, "flux": flux, "err": rng.uniform(30, 300, n),
                     "t": 61000 + np.sort(rng.uniform(0, 300, n)), "sci": rng.normal(8000, 100, n),
                     "scierr": rng.uniform(20, 60, n)})
    c = {key: np.concatenate([r[key] for r in rows]) for key in rows[0]}
    for key in ("flux", "err", "sci", "scierr"):  # the DiaSource flux columns are float32
        c[key] = c[key].astype(np.float32).astype(float)
    m = c["oid"].size
    visits = np.arange(m) % 500
    src = dia_source_table(np.full(m, 10.0), np.full(m, -30.0), [visit_id(v) for v in visits], c["t"], c["band"],
                           psf_flux=c["flux"], psf_err=c["err"], science_flux=c["sci"], science_err=c["scierr"])
    src = src.set_column(src.column_names.index("diaObjectId"), "diaObjectId", pa.array(c["oid"]))
    table = dia_object_table(src.take(np.random.default_rng(1).permutation(m)))  # row order must not matter
    assert table.schema == tables.arrow_schema("DiaObject")
    assert table.column("diaObjectId").to_pylist() == sorted(set(c["oid"].tolist()))
    got = table.to_pylist()
    checked = 0
    for row in got:
        here = c["oid"] == row["diaObjectId"]
        assert row["nDiaSources"] == here.sum()
        assert row["firstDiaSourceMjdTai"] == c["t"][here].min()
        assert row["lastDiaSourceMjdTai"] == c["t"][here].max()
        assert row["radecMjdTai"] == pytest.approx(c["t"][here].mean(), rel=1e-12)
        for b in BANDS:
            sel = here & (c["band"] == b) & np.isfinite(c["flux"])
            if not sel.any():
                assert row[f"{b}_psfFluxNdata"] == 0 and row[f"{b}_psfFluxMean"] is None
                continue
            expected = direct_stats(c["flux"][sel], c["err"][sel], c["t"][sel])
            for stem, value in expected.items():
                column = f"{b}_psfFlux{stem}"
                if np.isnan(value):
                    assert row[column] is None, column
                else:
                    is_float32 = tables.arrow_schema("DiaObject").field(column).type == pa.float32()
                    rtol = 1e-6 if is_float32 else 1e-9
                    assert row[column] == pytest.approx(value, rel=rtol, abs=1e-9 * abs(value) + 1e-9), column
                    checked += 1
            sci = here & (c["band"] == b)
            w = 1 / c["scierr"][sci] ** 2
            assert row[f"{b}_scienceFluxMean"] == pytest.approx(np.average(c["sci"][sci], weights=w), rel=1e-12)
            if sci.sum() > 1:
                assert row[f"{b}_scienceFluxSigma"] == pytest.approx(np.std(c["sci"][sci], ddof=1), rel=1e-9)
    assert checked > 1000


def test_mean_position_and_error_across_ra_zero():
    rng = np.random.default_rng(3)
    n = 50
    dec = 45.0
    offsets = rng.normal(0, 0.1, (n, 2)) / 3600
    ra = np.mod(offsets[:, 0] / np.cos(np.radians(dec)), 360.0)  # straddles RA = 0
    src = dia_source_table(ra, dec + offsets[:, 1], [visit_id(k) for k in range(n)], 61000 + np.arange(n), "r",
                           err_arcsec=0.01)
    res = associate(src)
    assert res.dia_objects.num_rows == 1
    obj = res.dia_objects.to_pylist()[0]
    mean_east = offsets[:, 0].mean()
    ra_expected = np.mod(mean_east / np.cos(np.radians(dec)), 360.0)
    assert abs((obj["ra"] - ra_expected + 180) % 360 - 180) * np.cos(np.radians(dec)) * 3600 < 1e-4
    assert (obj["dec"] - dec - offsets[:, 1].mean()) * 3600 == pytest.approx(0, abs=1e-4)
    # the scatter (0.1") dominates the 0.01" errors: raErr = std / sqrt(n), on the sky
    assert obj["raErr"] * 3600 == pytest.approx(np.std(offsets[:, 0], ddof=1) * 3600 / np.sqrt(n), rel=1e-6)
    assert obj["decErr"] * 3600 == pytest.approx(np.std(offsets[:, 1], ddof=1) * 3600 / np.sqrt(n), rel=1e-6)


# ---------------------------------------------------------------- matching rules


def test_one_to_one_keeps_both_matches_where_nearest_greedy_loses_one():
    # objects A (0, 0) and B (0.9", 0); source 1 is 0.1" from A and 0.8" from B, source 2 is
    # 0.8" from A and 1.7" from B: nearest-first greedy gives A to source 1 and leaves source 2
    # unmatched; the maximum-cardinality assignment gives B to source 1 and A to source 2.
    dec = 0.0
    first = dia_source_table([0.0, 0.9 / 3600], dec, visit_id(0), 61000.0, "r")
    res0 = associate(first)
    a_id, b_id = res0.dia_sources.column("diaObjectId").to_pylist()
    second = dia_source_table([0.1 / 3600, -0.8 / 3600 % 360], dec, visit_id(1), 61001.0, "r")
    res1 = associate(second, res0.dia_objects, history=res0.dia_sources)
    assert res1.dia_sources.column("diaObjectId").to_pylist() == [b_id, a_id]
    assert res1.new_ids.size == 0


@pytest.mark.parametrize("seed", range(5))
def test_one_to_one_matching_is_the_global_optimum(seed):
    # random sparse candidate graphs with isolated pairs, stars and larger conflicted components:
    # the matching must have the maximum number of pairs and, among those, the minimum summed
    # cost, as a dense linear_sum_assignment over the whole problem (independent of components)
    rng = np.random.default_rng(seed)
    n_src, n_obj = 60, 50
    pairs = {(int(rng.integers(n_src)), int(rng.integers(n_obj))) for _ in range(90)}
    src, obj = (np.array(v, np.int64) for v in zip(*sorted(pairs)))
    cost = rng.uniform(-5, 5, src.size)
    ms, mo = match_one_to_one(src, obj, cost, n_src, n_obj)
    assert np.unique(ms).size == ms.size and np.unique(mo).size == mo.size
    lookup = {(s, o): c for s, o, c in zip(src, obj, cost)}
    assert all((s, o) in lookup for s, o in zip(ms, mo))
    # big constant per non-candidate cell: any extra real pair beats every cost difference
    dense = np.full((n_src, n_obj), 1e6)
    dense[src, obj] = cost
    rows, cols = linear_sum_assignment(dense)
    real = dense[rows, cols] < 1e6
    assert ms.size == real.sum()
    assert sum(lookup[(s, o)] for s, o in zip(ms, mo)) == pytest.approx(dense[rows[real], cols[real]].sum(), abs=1e-9)


def test_error_aware_cost_prefers_the_likelier_object():
    # the source is 0.2" from a precisely known object (errors 0.02" plus the 0.05" floor: 3.5 sigma)
    # and 0.4" from a poorly known one (0.5": 0.8 sigma); nearest distance would pick the first,
    # the Gaussian likelihood picks the second
    objects = dia_source_table([0.0, 0.6 / 3600], 0.0, visit_id(0), 61000.0, "g", err_arcsec=np.array([0.02, 0.5]))
    res0 = associate(objects)
    _precise, loose = res0.dia_sources.column("diaObjectId").to_pylist()
    src = dia_source_table([0.2 / 3600], 0.0, visit_id(1), 61001.0, "g", err_arcsec=0.02)
    res1 = associate(src, res0.dia_objects, history=res0.dia_sources)
    assert res1.dia_sources.column("diaObjectId").to_pylist() == [loose]


def test_at_most_one_source_per_object_and_visit_and_new_ids():
    objects = dia_source_table([30.0], -10.0, visit_id(0), 61000.0, "i")
    res0 = associate(objects)
    (oid,) = res0.dia_sources.column("diaObjectId").to_pylist()
    assert oid == objects.column("diaSourceId")[0].as_py()  # new object id = first diaSourceId
    # two sources of one visit near the object (0.1" and 0.3"): the nearer one joins it, the other
    # starts a new object whose id is its own diaSourceId; a third source 1.5" away is also new
    src = dia_source_table(30.0 + np.array([0.1, 0.3, 1.5]) / 3600 / np.cos(np.radians(10)), -10.0,
                           visit_id(1), 61001.0, "i")
    res1 = associate(src, res0.dia_objects, history=res0.dia_sources)
    ids = res1.dia_sources.column("diaObjectId").to_pylist()
    sids = src.column("diaSourceId").to_pylist()
    assert ids == [oid, sids[1], sids[2]]
    assert sorted(res1.new_ids.tolist()) == sorted(sids[1:])
    assert sorted(res1.dia_objects.column("diaObjectId").to_pylist()) == sorted([oid, *sids[1:]])
    updated = res1.dia_objects.filter(pa.compute.equal(res1.dia_objects.column("diaObjectId"), oid)).to_pylist()[0]
    assert updated["nDiaSources"] == 2 and updated["lastDiaSourceMjdTai"] == 61001.0


def test_visits_are_associated_in_time_order():
    # the later visit has the smaller visit id: the earlier-in-time source must found the object
    early = dia_source_table([50.0], 0.0, visit_id(5), 61000.0, "r")
    late = dia_source_table([50.0 + 0.1 / 3600], 0.0, visit_id(1), 61002.0, "r")
    res = associate(pa.concat_tables([late, early]))
    ids = res.dia_sources.column("diaObjectId").to_pylist()
    assert ids == [early.column("diaSourceId")[0].as_py()] * 2


def test_bad_input_is_rejected_with_clear_errors():
    src = dia_source_table([1.0], 1.0, visit_id(0), 61000.0, "r")
    with pytest.raises(ValueError, match="radius_arcsec"):
        associate(src, radius_arcsec=0)
    with pytest.raises(ValueError, match="'dec'"):
        associate(src.drop_columns(["dec"]))
    res = associate(src)
    with pytest.raises(ValueError, match="history"):
        associate(dia_source_table([1.0], 1.0, visit_id(1), 61001.0, "r"), res.dia_objects)
    with pytest.raises(ValueError, match="associated twice"):
        associate(src, res.dia_objects, history=res.dia_sources)
    with pytest.raises(ValueError, match="band"):
        dia_object_table(res.dia_sources.set_column(3, "band", pa.array(["q"])))
    with pytest.raises(ValueError, match="diaObjectId 0"):
        dia_object_table(src.set_column(4, "diaObjectId", pa.array([0], pa.int64())))
    err = src.column("decErr")[0].as_py()
    bad_cov = src.set_column(src.column_names.index("ra_dec_Cov"), "ra_dec_Cov", pa.array([2 * err * err]))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        associate(bad_cov)


# ---------------------------------------------------------------- simulated survey


def simulated_dia_sources(seed: int = 11):
    """DiaSources of the simulator's transients and variables over a long survey, plus noise.

    Truth (positions, light curves, cadence, seeing) from skydp.sim's schedule and catalogue; the
    difference flux is the true flux minus the template-season flux (transients: 0, variables: the
    mean-magnitude flux), detected at S/N >= 5 with sigma from a 24.5 mag 5-sigma depth; positions
    scattered with the PSF-fit centroid error sqrt(2) sigma_psf / SNR plus a 10 mas calibration
    floor. 20 false detections per visit are scattered uniformly over the field.
    """
    # the sky is cut to transients, variables and a few bright galaxies (hosts) to keep it quick
    preset = get_preset("survey", visits_per_band={"g": 12, "r": 20, "i": 20, "z": 8}, n_nights=20,
                        n_transients=3000, n_variables=1500, n_movers=0, galaxy_mag_limit=22.0,
                        star_density_scale=0.05)
    rng = np.random.default_rng([seed, 1])
    observations = schedule(preset, rng)
    cat = make_catalog(preset, observations, rng)
    keep = np.isin(cat.kind, [TRANSIENT, VARIABLE])
    fp_radius = focal_plane_radius(preset) * PIXEL_SCALE / 3600.0
    noise = np.random.default_rng(seed)
    sigma_flux = 10 ** (-0.4 * (24.5 - 31.4)) / 5.0
    parts, truth = [], []
    for k, obs in enumerate(observations):
        mjd = obs.mjd_mid
        ra, dec = cat.position_at(mjd)
        sep = _separation(ra, dec, obs.boresight_ra, obs.boresight_dec)
        on = keep & (sep < fp_radius)
        flux = cat.flux_at(obs.band, mjd)[on]
        template = np.where(cat.kind[on] == VARIABLE, cat.flux[on, "ugrizy".index(obs.band)], 0.0)
        measured = flux - template + noise.normal(0, sigma_flux, on.sum())
        snr = np.abs(measured) / sigma_flux
        det = snr >= 5
        idx = np.flatnonzero(on)[det]
        n_fake = 20
        fake_r = fp_radius * np.sqrt(noise.uniform(size=n_fake))
        fake_phi = noise.uniform(0, 2 * np.pi, n_fake)
        f_dec = obs.boresight_dec + fake_r * np.sin(fake_phi)
        f_ra = obs.boresight_ra + fake_r * np.cos(fake_phi) / np.cos(np.radians(f_dec))
        all_ra = np.concatenate([ra[idx], f_ra])
        all_dec = np.concatenate([dec[idx], f_dec])
        all_snr = np.concatenate([snr[det], noise.uniform(5, 6, n_fake)])
        pos_err = np.hypot(np.sqrt(2) * obs.seeing / 2.3548 / all_snr, 0.01)
        all_dec = all_dec + noise.normal(0, pos_err) / 3600
        all_ra = all_ra + noise.normal(0, pos_err) / 3600 / np.cos(np.radians(all_dec))
        n = all_ra.size
        parts.append(dia_source_table(all_ra, all_dec, obs.visit, mjd, obs.band, err_arcsec=pos_err,
                                      psf_flux=np.concatenate([measured[det], noise.normal(0, 5 * sigma_flux, n_fake)]),
                                      psf_err=np.full(n, sigma_flux)))
        truth.append(np.concatenate([cat.id[idx], -1 - k * 1000 - np.arange(n_fake)]))
    isolated = np.ones(len(cat), bool)
    tree = cKDTree(np.stack([cat.ra * np.cos(np.radians(cat.dec)), cat.dec], 1)[keep])
    close = tree.query_pairs(3.0 / 3600, output_type="ndarray")
    isolated[np.flatnonzero(keep)[close.ravel()]] = False
    return pa.concat_tables(parts), np.concatenate(truth), cat.id[keep & isolated]


def _separation(ra, dec, ra0, dec0):
    r1, d1, r0, d0 = map(np.radians, (ra, dec, ra0, dec0))
    c = np.sin(d1) * np.sin(d0) + np.cos(d1) * np.cos(d0) * np.cos(r1 - r0)
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


def purity_completeness(object_ids: np.ndarray, truth: np.ndarray, isolated: np.ndarray) -> tuple[float, float, int]:
    """Completeness: isolated true objects whose DiaSources all share one DiaObject; purity: DiaObjects
    holding a DiaSource of an isolated true object whose DiaSources all come from that object."""
    real = np.isin(truth, isolated)
    n_truth_per_obj = {}
    for oid, tid in zip(object_ids, truth):
        n_truth_per_obj.setdefault(oid, set()).add(tid)
    n_obj_per_truth = {}
    for oid, tid in zip(object_ids[real], truth[real]):
        n_obj_per_truth.setdefault(tid, set()).add(oid)
    complete = np.mean([len(v) == 1 for v in n_obj_per_truth.values()])
    relevant = set(object_ids[real].tolist())
    pure = np.mean([len(n_truth_per_obj[o]) == 1 for o in relevant])
    return float(pure), float(complete), len(n_obj_per_truth)


def test_purity_and_completeness_on_simulated_transients_and_variables():
    sources, truth, isolated = simulated_dia_sources()
    res = associate(sources)
    ids = res.dia_sources.column("diaObjectId").to_numpy()
    purity, completeness, n_true = purity_completeness(ids, truth, isolated)
    assert n_true > 2000 and sources.num_rows > 20000
    assert purity >= 0.99, purity
    assert completeness >= 0.98, completeness
    assert set(np.unique(ids)) == set(res.dia_objects.column("diaObjectId").to_pylist())


def test_incremental_visit_by_visit_equals_from_scratch():
    sources, _, _ = simulated_dia_sources(seed=5)
    visits = sources.column("visit").to_numpy()
    order = sorted(set(visits.tolist()), key=lambda v: sources.filter(pa.compute.equal(sources.column("visit"), v))
                   .column("midpointMjdTai")[0].as_py())
    order = order[:25]  # a third of the survey keeps the test fast
    subset = sources.filter(pa.compute.is_in(sources.column("visit"), pa.array(order)))
    scratch = associate(subset)
    objects, history = None, None
    for v in order:
        res = associate(subset.filter(pa.compute.equal(subset.column("visit"), v)), objects, history=history)
        history = res.dia_sources if history is None else pa.concat_tables([history, res.dia_sources])
        objects = update_dia_objects(objects, res.dia_objects)
    a = dict(zip(scratch.dia_sources.column("diaSourceId").to_pylist(), scratch.dia_sources.column("diaObjectId").to_pylist()))
    b = dict(zip(history.column("diaSourceId").to_pylist(), history.column("diaObjectId").to_pylist()))
    assert a == b
    assert objects.num_rows == scratch.dia_objects.num_rows
    for name in objects.column_names:
        x, y = objects.column(name).to_numpy(zero_copy_only=False), scratch.dia_objects.column(name).to_numpy(zero_copy_only=False)
        np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float), rtol=1e-9, atol=0, equal_nan=True, err_msg=name)
    # the DiaObject table rebuilt from all DiaSources equals the incrementally updated one
    rebuilt = dia_object_table(history)
    assert rebuilt.column("diaObjectId").equals(objects.column("diaObjectId"))



def test_candidate_search_finds_every_pair_in_crowded_places():
    # 40 objects within 1.5" of each other and sources among them: every pair within the radius must
    # be found, also for sources with more neighbours than the k-nearest query returns
    rng = np.random.default_rng(2)
    objects = unit_vectors(10 + rng.normal(0, 0.5, 40) / 3600, 20 + rng.normal(0, 0.5, 40) / 3600)
    sources = unit_vectors(10 + rng.normal(0, 0.5, 15) / 3600, 20 + rng.normal(0, 0.5, 15) / 3600)
    radius = chord(1.0)
    s, o = pairs_within(cKDTree(objects), sources, radius)
    expected = {(i, j) for i in range(15) for j in range(40) if np.linalg.norm(sources[i] - objects[j]) <= radius}
    assert set(zip(s.tolist(), o.tolist())) == expected
    assert max(np.bincount(s)) > 8
