"""Ingest: validate visit-image files against the contract and register them in a repository.

Every file is checked completely before anything is written: a file that fails gets one line
naming it and the reason, and leaves the repository untouched; the files that pass are copied
(or linked) into ``images/input/`` and registered, one transaction per file, so a crash leaves
either the whole ingest of a file or none of it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astropy.io import fits

from skydp.checksums import sha256_of
from skydp.etl.repository import Repository
from skydp.exposure import Exposure, ExposureFormatError, read_exposure

INPUT_TYPE = "input_image"
REQUIRED_PRIMARY_KEYS = ("VISIT", "DETECTOR", "BAND", "DAY_OBS", "MJD-OBS", "EXPTIME")


@dataclass
class IngestReport:
    """What an ingest did: registered data ids and rejected files with reasons."""

    ingested: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # already ingested, identical bytes


def data_id_of(exposure: Exposure) -> dict[str, int]:
    """The (visit, detector, snap) key of an input image; snap is -1 for a single exposure."""
    info = exposure.info
    return {"visit": int(info.visit), "detector": int(info.detector), "snap": -1 if info.snap is None else int(info.snap)}


def exposure_metadata(exposure: Exposure) -> dict[str, Any]:
    """Visit and detector metadata recorded at ingest (the Visit and CcdVisit columns known before processing)."""
    info = exposure.info
    corner_ra, corner_dec = exposure.corners()
    x0, y0, x1, y1 = exposure.bbox
    ra_c, dec_c = exposure.pixel_to_sky(0.5 * (x0 + x1 - 1), 0.5 * (y0 + y1 - 1))
    meta: dict[str, Any] = {
        "instrument": info.instrument,
        "band": info.band,
        "physical_filter": info.physical_filter,
        "day_obs": int(info.day_obs),
        "mjd": float(info.mjd),
        "exptime": float(info.exptime),
        "airmass": float(info.airmass),
        "boresight_ra": float(info.boresight_ra),
        "boresight_dec": float(info.boresight_dec),
        "rotpa": float(info.rotpa),
        "ra": float(ra_c),
        "dec": float(dec_c),
        "pixel_scale": float(exposure.pixel_scale()),
        "width": int(exposure.width),
        "height": int(exposure.height),
    }
    for name, ra, dec in zip(("llc", "ulc", "urc", "lrc"), corner_ra, corner_dec):
        meta[f"{name}ra"] = float(ra)
        meta[f"{name}dec"] = float(dec)
    return meta


def _check_contract(path: Path) -> None:
    """Checks of the visit-image contract that the general exposure reader does not make."""
    with fits.open(path, memmap=False) as hdus:
        header = hdus[0].header
        missing = [k for k in REQUIRED_PRIMARY_KEYS if k not in header]
        if missing:
            raise ExposureFormatError(f"{path}: not a visit image: primary header lacks {', '.join(missing)}")
        names = {h.name for h in hdus[1:]}
        for hdu in ("IMAGE", "MASK", "VARIANCE"):
            if hdu not in names:
                raise ExposureFormatError(f"{path}: not a visit image: no {hdu} HDU")


def validate(path: Path) -> Exposure:
    """Read and check one file; raises ExposureFormatError naming the file and the reason."""
    path = Path(path)
    if not path.is_file():
        raise ExposureFormatError(f"{path}: no such file")
    exposure = read_exposure(path)
    _check_contract(path)
    return exposure


def input_path(data_id: dict[str, int], day_obs: int) -> str:
    snap = "" if data_id["snap"] < 0 else f"_snap{data_id['snap']}"
    return f"images/input/{day_obs}/{data_id['visit']}/input_{data_id['visit']}_det{data_id['detector']:03d}{snap}.fits"


def ingest(repo: Repository, paths: Iterable[Path], *, link: bool = False, skip_existing: bool = False) -> IngestReport:
    """Validate ``paths`` and register the good ones; bad ones are reported, never partially stored.

    ``skip_existing`` quietly skips a file whose data id is registered with the same checksum
    (re-ingesting an incoming directory every night); a different file under a registered data id
    is always rejected.
    """
    report = IngestReport()
    accepted: list[tuple[Path, dict[str, int], dict[str, Any]]] = []
    seen: dict[str, Path] = {}
    for path in map(Path, paths):
        try:
            exposure = validate(path)
            data_id = data_id_of(exposure)
            key = f"{data_id['visit']}/{data_id['detector']}/{data_id['snap']}"
            if key in seen:
                raise ExposureFormatError(
                    f"{path}: duplicate of {seen[key]} (visit {data_id['visit']}, detector {data_id['detector']}, snap {data_id['snap']})"
                )
            existing = repo.registry.get(INPUT_TYPE, data_id)
            if existing is not None and skip_existing and existing.sha256 == sha256_of(path):
                report.skipped.append(path)
                continue
            if existing is not None:
                raise ExposureFormatError(
                    f"{path}: visit {data_id['visit']}, detector {data_id['detector']}, snap {data_id['snap']} is already ingested ({existing.path})"
                )
            seen[key] = path
            accepted.append((path, data_id, exposure_metadata(exposure)))
        except ExposureFormatError as err:
            report.rejected.append((path, str(err)))
    for path, data_id, meta in accepted:
        relative = input_path(data_id, meta["day_obs"])
        checksum = sha256_of(path)
        staged = repo.staging_path(".fits")
        if link:
            staged.unlink()
            os.symlink(path.resolve(), staged)
        else:
            shutil.copyfile(path, staged)
        target = repo.place(staged, relative)
        try:
            with repo.registry.transaction() as conn:
                repo.registry.put(conn, INPUT_TYPE, data_id, path=relative, sha256=checksum, meta=meta)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        report.ingested.append(data_id)
    return report
