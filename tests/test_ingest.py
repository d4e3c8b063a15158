"""`skydp init` / `skydp ingest`: contract validation, registration, and bad input leaving the repository untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from contract_files import wcs_header, write_visit_file

from skydp.cli import main
from skydp.etl.ingest import INPUT_TYPE
from skydp.etl.repository import Repository


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the hash of its bytes."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    assert main(["init", str(root)]) == 0
    return root


def test_init_refuses_existing_repository(repo: Path, capsys) -> None:
    assert main(["init", str(repo)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_ingest_registers_visit_and_detector_metadata(repo: Path, tmp_path: Path) -> None:
    good = write_visit_file(tmp_path / "good.fits", visit=2026032400007, detector=3)
    assert main(["ingest", str(repo), str(good)]) == 0
    with Repository(repo) as r:
        (ds,) = r.registry.find(INPUT_TYPE)
        stored = repo / ds.path
        assert stored.read_bytes() == good.read_bytes()
    assert ds.data_id == {"visit": 2026032400007, "detector": 3, "snap": -1}
    meta = ds.meta
    assert meta["band"] == "r" and meta["exptime"] == 30.0 and meta["mjd"] == 61123.1
    assert meta["pixel_scale"] == pytest.approx(0.2, rel=1e-6)
    # The image centre is CRVAL; the four corners are 32 px * 0.2" * sqrt(2) away from it.
    assert meta["ra"] == pytest.approx(150.0, abs=1e-5) and meta["dec"] == pytest.approx(2.0, abs=1e-5)
    for corner in ("llc", "ulc", "urc", "lrc"):
        dra = (meta[f"{corner}ra"] - 150.0) * np.cos(np.radians(2.0))
        ddec = meta[f"{corner}dec"] - 2.0
        assert np.hypot(dra, ddec) * 3600 == pytest.approx(32 * 0.2 * np.sqrt(2), rel=1e-3)


def test_ingest_link_makes_a_symlink(repo: Path, tmp_path: Path) -> None:
    good = write_visit_file(tmp_path / "good.fits")
    assert main(["ingest", str(repo), "--link", str(good)]) == 0
    with Repository(repo) as r:
        (ds,) = r.registry.find(INPUT_TYPE)
    assert (repo / ds.path).is_symlink() and (repo / ds.path).resolve() == good.resolve()


def _truncated(tmp: Path) -> list[Path]:
    path = write_visit_file(tmp / "truncated.fits")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return [path]


def _not_fits(tmp: Path) -> list[Path]:
    path = tmp / "notes.fits"
    path.write_text("this is not a FITS file\n")
    return [path]


def _bad_wcs(tmp: Path) -> list[Path]:
    header = wcs_header()
    header["CTYPE1"], header["CTYPE2"] = "RA---XYZ", "DEC--XYZ"
    return [write_visit_file(tmp / "badwcs.fits", wcs=header)]


def _duplicate_in_batch(tmp: Path) -> list[Path]:
    return [write_visit_file(tmp / "a.fits", seed=1), write_visit_file(tmp / "b.fits", seed=2)]


BAD_CASES = {
    "truncated": (_truncated, "truncated"),
    "not FITS": (_not_fits, "FITS file"),
    "missing IMAGE": (lambda t: [write_visit_file(t / "noimage.fits", drop=("IMAGE",))], "IMAGE"),
    "missing VARIANCE": (lambda t: [write_visit_file(t / "novar.fits", drop=("VARIANCE",))], "VARIANCE"),
    "unparseable WCS": (_bad_wcs, "WCS"),
    "band outside ugrizy": (lambda t: [write_visit_file(t / "band.fits", band="q")], "band"),
    "all-NaN image": (lambda t: [write_visit_file(t / "nan.fits", image=np.full((64, 64), np.nan))], "NaN"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_rejected_and_repository_untouched(case: str, repo: Path, tmp_path: Path, capsys) -> None:
    make, reason = BAD_CASES[case]
    (bad,) = make(tmp_path)
    before = snapshot(repo)
    assert main(["ingest", str(repo), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert str(bad) in err[0] and reason.lower() in err[0].lower(), err[0]
    assert "Traceback" not in err[0]
    assert snapshot(repo) == before


def test_duplicate_visit_detector_snap_is_rejected(repo: Path, tmp_path: Path, capsys) -> None:
    first = write_visit_file(tmp_path / "first.fits", snap=0)
    assert main(["ingest", str(repo), str(first)]) == 0
    capsys.readouterr()
    before = snapshot(repo)
    again = write_visit_file(tmp_path / "again.fits", snap=0, seed=5)
    assert main(["ingest", str(repo), str(again)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(again) in err[0] and "already ingested" in err[0]
    assert snapshot(repo) == before
    # The other snap of the same visit and detector is a different exposure and is accepted.
    other_snap = write_visit_file(tmp_path / "snap1.fits", snap=1)
    assert main(["ingest", str(repo), str(other_snap)]) == 0


def test_duplicate_within_one_batch_keeps_the_first(repo: Path, tmp_path: Path, capsys) -> None:
    a, b = _duplicate_in_batch(tmp_path)
    assert main(["ingest", str(repo), str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(b) in err[0] and "duplicate" in err[0]
    with Repository(repo) as r:
        assert len(r.registry.find(INPUT_TYPE)) == 1


def test_one_bad_file_does_not_stop_the_others(repo: Path, tmp_path: Path, capsys) -> None:
    good = write_visit_file(tmp_path / "good.fits")
    (bad,) = _not_fits(tmp_path)
    assert main(["ingest", str(repo), str(bad), str(good)]) == 2
    with Repository(repo) as r:
        assert len(r.registry.find(INPUT_TYPE)) == 1


def test_not_a_repository(tmp_path: Path, capsys) -> None:
    good = write_visit_file(tmp_path / "good.fits")
    assert main(["ingest", str(tmp_path / "nowhere"), str(good)]) == 2
    assert "not a skydp repository" in capsys.readouterr().err
