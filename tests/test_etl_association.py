"""The association stage run night by night equals one association of everything, while each
visit reads only the history near it and writes only the DiaObjects it touches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_association import dia_source_table

from skydp.association import associate
from skydp.checksums import sha256_of
from skydp.etl import association
from skydp.etl.association import DIA_OBJECT_UPDATE_TYPE, current_dia_objects
from skydp.etl.differencing import DETECTION_TYPE
from skydp.etl.repository import Repository
from skydp.etl.runner import run
from skydp.etl.sky_box import SkyBox, read_in_box

FIELDS = ((10.0, -30.0), (200.0, 5.0))  # two pointings far apart (ra, dec), deg
NIGHTS = ((20261101, 2), (20261102, 2))  # (day_obs, visits per field)


def _visits() -> list[tuple[int, float, tuple[float, float]]]:
    """(visit id, MJD, field centre) in time order: each night observes both fields."""
    out, seq = [], 0
    for night, (day_obs, n) in enumerate(NIGHTS):
        for k in range(n):
            for f, centre in enumerate(FIELDS):
                seq += 1
                out.append((int(f"{day_obs}{seq:05d}"), 61000.0 + night + 0.01 * (2 * k + f), centre))
    return out


def _detections(visit: int, mjd: float, centre: tuple[float, float], rng: np.random.Generator) -> pa.Table:
    """200 persistent sources of the field (found with probability 0.7, 0.05" scatter) and 20 new
    ones, spread over 0.1 deg so the boxes of the history reads hit the edges of the field."""
    base = np.random.default_rng(int(centre[0]))  # the field's fixed sources
    ra0 = centre[0] + base.uniform(-0.1, 0.1, 200) / np.cos(np.radians(centre[1]))
    dec0 = centre[1] + base.uniform(-0.1, 0.1, 200)
    seen = rng.random(200) < 0.7
    ra = np.concatenate([ra0[seen], centre[0] + rng.uniform(-0.1, 0.1, 20)])
    dec = np.concatenate([dec0[seen], centre[1] + rng.uniform(-0.1, 0.1, 20)])
    jitter = 0.05 / 3600
    return dia_source_table(ra + rng.normal(0, jitter, ra.size) / np.cos(np.radians(dec)),
                            dec + rng.normal(0, jitter, ra.size), visit, mjd, "r",
                            psf_flux=rng.normal(1000, 100, ra.size))


def _ingest_night(repo: Repository, visits: list, rng: np.random.Generator) -> list[pa.Table]:
    """Write each visit's detections and register them as the differencing stage would."""
    made = []
    with repo.registry.transaction() as conn:
        for visit, mjd, centre in visits:
            table = _detections(visit, mjd, centre, rng)
            relative = f"catalogs/dia_detections/{visit}.parquet"
            repo.path(relative).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, repo.path(relative))
            repo.registry.put(conn, DETECTION_TYPE, {"visit": visit, "detector": 0}, path=relative,
                              sha256=sha256_of(repo.path(relative)))
            made.append(table)
    return made


def test_night_by_night_equals_all_at_once(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo")
    rng = np.random.default_rng(5)
    visits = _visits()
    first_night = len(FIELDS) * NIGHTS[0][1]
    detections = _ingest_night(repo, visits[:first_night], rng)
    assert run(repo.root, [association.STAGE]).ok
    detections += _ingest_night(repo, visits[first_night:], rng)
    report = run(repo.root, [association.STAGE])
    assert report.ok
    stage = report.stages[0]
    assert (stage.up_to_date, stage.executed) == (first_night, len(visits) - first_night)

    updates = sorted(repo.registry.find(DIA_OBJECT_UPDATE_TYPE, status="ok"), key=lambda d: d.data_id["visit"])
    nightly = current_dia_objects([repo.path(d.path) for d in updates]).sort_by("diaObjectId")
    at_once = associate(pa.concat_tables(detections))
    assert nightly.equals(at_once.dia_objects.sort_by("diaObjectId"))
    sources = pa.concat_tables([pq.read_table(repo.path(association.dia_source_path(v))) for v, _, _ in visits])
    expected = at_once.dia_sources.select(["diaSourceId", "diaObjectId"]).sort_by("diaSourceId")
    assert sources.select(["diaSourceId", "diaObjectId"]).sort_by("diaSourceId").equals(expected)
    # each update holds exactly the DiaObjects of its visit's DiaSources
    for d in updates:
        touched = pq.read_table(repo.path(association.dia_source_path(d.data_id["visit"])))["diaObjectId"]
        assert sorted(pq.read_table(repo.path(d.path))["diaObjectId"].to_pylist()) == sorted(set(touched.to_pylist()))


def test_sky_box_reads_only_nearby_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    paths = []
    for k, (ra, dec) in enumerate(FIELDS):
        t = dia_source_table(ra + rng.uniform(-0.1, 0.1, 50), dec + rng.uniform(-0.1, 0.1, 50), 2026110100001 + k,
                             61000.0, "r")
        paths.append(tmp_path / f"{k}.parquet")
        pq.write_table(t, paths[-1])
    box = SkyBox.around(np.array([FIELDS[1][0]]), np.array([FIELDS[1][1]]), 360.0)
    near = read_in_box(paths, box)
    assert near.num_rows > 0 and set(near["visit"].to_pylist()) == {2026110100002}
    d_ra = (near["ra"].to_numpy() - FIELDS[1][0]) * np.cos(np.radians(FIELDS[1][1]))
    assert np.all(np.abs(d_ra) <= 0.1 + 1e-9) and np.all(np.abs(near["dec"].to_numpy() - FIELDS[1][1]) <= 0.1 + 1e-9)
    assert read_in_box(paths, None).num_rows == 100 and read_in_box([], box) is None


@pytest.mark.parametrize(("ra", "dec", "ra_filtered"), [
    ([359.99, 0.01], [0.0, 0.0], False),  # crosses RA 0: dec only
    ([120.0], [89.5], False),  # near the pole: dec only
    ([120.0, 121.0], [10.0, 11.0], True),
])
def test_sky_box_edges(ra: list, dec: list, ra_filtered: bool) -> None:
    box = SkyBox.around(np.array(ra), np.array(dec), 36.0)
    assert box.dec_min == pytest.approx(min(dec) - 0.01) and box.dec_max == pytest.approx(min(max(dec) + 0.01, 90))
    assert (box.ra_min is not None) == ra_filtered
    if ra_filtered:
        assert box.ra_min < min(ra) and box.ra_max > max(ra)
    assert SkyBox.around(np.array([np.nan]), np.array([0.0]), 1.0) is None
