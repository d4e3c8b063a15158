"""simulate(): determinism, presets, snaps, the PSF switch, time-variable truth and bad input."""

from __future__ import annotations

import filecmp
import hashlib

import numpy as np
import polars as pl
import pytest
from astropy.io import fits

from skydp.exposure import read_exposure
from skydp.sim import PRESETS, get_preset, simulate
from skydp.sim.observing import schedule
from skydp.sim.sky import TRANSIENT, make_catalog, template_season_end

SMALL = get_preset("tiny", visits_per_band={"g": 1, "r": 1}, n_nights=2)


def _digest(result) -> dict[str, str]:
    files = list(result.images) + result.truth_files
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_same_seed_gives_identical_bytes_whatever_jobs(tmp_path):
    one = simulate(tmp_path / "a", SMALL, seed=5, jobs=1)
    two = simulate(tmp_path / "b", SMALL, seed=5, jobs=2)
    assert len(one.images) == 2
    assert _digest(one) == _digest(two)
    other = simulate(tmp_path / "c", SMALL, seed=6)
    assert not filecmp.cmp(one.truth_objects, other.truth_objects, shallow=False)
    assert all(not filecmp.cmp(a, b, shallow=False) for a, b in zip(one.images, other.images))


def test_rerun_into_the_same_directory_replaces_the_previous_simulation(tmp_path):
    first = simulate(tmp_path, SMALL, seed=1)
    again = simulate(tmp_path, get_preset(SMALL, visits_per_band={"r": 1}), seed=1)
    left = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert left == sorted(p.name for p in again.images) and len(left) == 1 < len(first.images)


def test_presets_give_the_promised_visits_and_geometry():
    for name, preset in PRESETS.items():
        obs = schedule(preset, np.random.default_rng(0))
        counts = {b: len({o.visit for o in obs if o.band == b}) for b in "ugrizy"}
        assert counts == {b: preset.visits_per_band.get(b, 0) for b in "ugrizy"}, name
        assert all(0.5 <= o.seeing <= 1.4 and 1.0 <= o.airmass < 2.0 for o in obs), name
        assert len({o.visit for o in obs}) == preset.n_visits
    demo = PRESETS["demo"]
    assert demo.detector_shape == (2048, 2048) and demo.n_detectors == 1
    assert demo.visits_per_band["r"] >= 8 and sorted(demo.visits_per_band.values())[-3] >= 3
    survey = PRESETS["survey"]
    assert survey.detector_shape == (4096, 4096) and survey.n_detectors == 9
    assert set(survey.visits_per_band) == set("ugrizy")


def test_demo_has_transients_absent_from_the_best_seeing_visits():
    preset = PRESETS["demo"]
    rng = np.random.default_rng([0, 1])
    obs = schedule(preset, rng)
    cat = make_catalog(preset, obs, rng)
    r_obs = [o for o in obs if o.band == "r"]
    best = sorted(r_obs, key=lambda o: o.seeing)[: len(r_obs) // 3]
    assert max(o.mjd for o in best) <= template_season_end(preset, obs)
    tr = cat.kind == TRANSIENT
    off_in_templates = np.all([cat.flux_at("r", o.mjd_mid)[tr] == 0 for o in best], axis=0)
    on_later = np.any([cat.flux_at("r", o.mjd_mid)[tr] > 0 for o in r_obs if o not in best], axis=0)
    assert (off_in_templates & on_later).sum() >= 5


def test_no_psf_leaves_the_psf_hdu_out(tmp_path):
    result = simulate(tmp_path, get_preset(SMALL, visits_per_band={"r": 1}), seed=2, write_psf=False)
    with fits.open(result.images[0]) as hdul:
        names = [h.name for h in hdul]
    assert "PSF" not in names and "PSF_GRID" not in names
    assert read_exposure(result.images[0]).psf is None


def test_snaps_are_two_15s_exposures_of_one_visit(tmp_path):
    result = simulate(tmp_path, get_preset("tiny", visits_per_band={"r": 1}, snaps=True), seed=2)
    assert [p.name.endswith(f"_snap{s}.fits") for p, s in zip(result.images, (0, 1))] == [True, True]
    a, b = (read_exposure(p) for p in result.images)
    assert (a.info.snap, b.info.snap) == (0, 1) and a.info.visit == b.info.visit
    assert a.info.exptime == b.info.exptime == 15.0
    assert (b.info.mjd - a.info.mjd) * 86400 == pytest.approx(17.0, abs=1e-3)
    with fits.open(result.images[1]) as hdul:
        assert hdul[0].header["SNAP"] == 1
    # independent noise, same sky: the difference is pure noise of variance va + vb
    free = ~(np.isnan(a.image) | (a.mask.array != 0) | (b.mask.array != 0))
    z = (a.image - b.image)[free] / np.sqrt(a.variance + b.variance)[free]
    assert np.median(np.abs(z)) == pytest.approx(0.6745, rel=0.05)


def test_time_variable_truth(tmp_path):
    preset = get_preset("tiny", n_transients=80, n_movers=4)
    result = simulate(tmp_path, preset, seed=4)
    objects = pl.read_parquet(result.truth_objects)
    epochs = pl.read_parquet(result.truth_epochs).join(objects, on="id", suffix="_cat")
    assert set(objects["type"]) == {"star", "galaxy", "variable", "transient", "mover"}
    tr = objects.filter(pl.col("type") == "transient")
    assert tr["host_id"].null_count() not in (0, tr.height)
    hosts = objects.filter(pl.col("id").is_in(tr["host_id"].drop_nulls().implode()))
    assert set(hosts["type"]) == {"galaxy"}
    te = epochs.filter(pl.col("type") == "transient")
    before = te.filter(pl.col("mjd") < pl.col("t_explosion"))
    after = te.filter(pl.col("mjd") >= pl.col("t_explosion"))
    assert before.height and after.height
    assert (before["flux"] == 0).all() and not before["drawn"].any() and (after["flux"] > 0).all()
    # a mover seen in several exposures is at a different sky position in each
    movers = epochs.filter(pl.col("type") == "mover").group_by("id").agg(pl.col("ra").n_unique(), pl.len())
    assert (movers.filter(pl.col("len") > 1)["ra"] > 1).all()
    # static objects keep their catalogue flux and position
    st = epochs.filter(pl.col("type") == "star")
    expect = np.where(st["band"] == "r", st["flux_r"], st["flux_g"])
    assert np.allclose(st["flux"], expect) and np.allclose(st["ra"], st["ra_cat"])


def test_bad_input_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="unknown simulation preset 'huge'"):
        simulate(tmp_path, "huge")
    with pytest.raises(ValueError, match="seed"):
        simulate(tmp_path, "tiny", seed=-1)
    with pytest.raises(ValueError, match="jobs"):
        simulate(tmp_path, "tiny", jobs=0)
    with pytest.raises(ValueError, match="unknown bands"):
        get_preset("tiny", visits_per_band={"q": 2})
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        simulate(tmp_path, "tiny")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_demo_preset_images_show_transients_after_the_template_season(tmp_path):
    result = simulate(tmp_path, "demo", seed=0, jobs=2)
    visits = pl.read_parquet(result.visits)
    counts = dict(visits.group_by("band").len().iter_rows())
    assert counts["r"] >= 8 and counts["g"] >= 3 and counts["i"] >= 3
    exp = read_exposure(result.images[0])
    assert exp.shape == (2048, 2048) and exp.psf is not None
    epochs = pl.read_parquet(result.truth_epochs).join(pl.read_parquet(result.truth_objects), on="id")
    r_visits = visits.filter(pl.col("band") == "r").sort("seeing")
    best = r_visits["visit"][: r_visits.height // 3].implode()
    tr = epochs.filter((pl.col("type") == "transient") & (pl.col("band") == "r"))
    absent = tr.filter(pl.col("visit").is_in(best)).group_by("id").agg((pl.col("flux") == 0).all().alias("off"))
    present = tr.filter(~pl.col("visit").is_in(best)).group_by("id").agg(pl.col("drawn").any().alias("on"))
    both = absent.join(present, on="id").filter(pl.col("off") & pl.col("on"))
    assert both.height >= 3
