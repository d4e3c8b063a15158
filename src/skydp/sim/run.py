"""``simulate()``: schedule, true sky, every detector of every exposure drawn (in parallel), truth.

Randomness is split so that results never depend on ``jobs`` or on the order of work: the schedule
and the sky come from ``(seed, 1)``, each image from ``(seed, visit, detector, snap)`` and each
detector's defects from ``(seed, 2, detector)``. Images are written by the worker that draws them, so
only truth rows travel back to the parent.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skydp.exposure import Exposure, Mask, PixelPsf, VisitInfo, write_exposure
from skydp.sim import truth
from skydp.sim.observing import Observation, schedule
from skydp.sim.presets import Preset, get_preset
from skydp.progress import ProgressBar
from skydp.sim.render import Rendered, render
from skydp.sim.sky import SkyCatalog, make_catalog

INSTRUMENT = "LSSTCam-sim"
TRUTH_FILES = ("truth_objects.parquet", "truth_epochs.parquet", "visits.parquet", "truth_cosmics.parquet")


@dataclass
class SimulationResult:
    """Paths written by ``simulate`` (images in schedule order, detector by detector)."""

    outdir: Path
    preset: Preset
    seed: int
    images: list[Path] = field(default_factory=list)

    @property
    def truth_objects(self) -> Path:
        return self.outdir / "truth_objects.parquet"

    @property
    def truth_epochs(self) -> Path:
        return self.outdir / "truth_epochs.parquet"

    @property
    def visits(self) -> Path:
        return self.outdir / "visits.parquet"

    @property
    def truth_cosmics(self) -> Path:
        return self.outdir / "truth_cosmics.parquet"

    @property
    def truth_files(self) -> list[Path]:
        return [self.truth_objects, self.truth_epochs, self.visits, self.truth_cosmics]


def image_name(visit: int, detector: int, snap: int | None) -> str:
    """File name of one image: visit_<visit>_det<detector:03d>[_snap<snap>].fits."""
    suffix = "" if snap is None else f"_snap{snap}"
    return f"visit_{visit}_det{detector:03d}{suffix}.fits"


def to_exposure(rendered: Rendered, obs: Observation, detector: int) -> Exposure:
    """The visit-image Exposure of a rendered detector."""
    mask = Mask.empty(rendered.image.shape)
    for plane, where in rendered.masks.items():
        mask.set(plane, where)
    psf = None if rendered.psf_stamps is None else PixelPsf(rendered.psf_stamps, rendered.psf_x, rendered.psf_y)
    info = VisitInfo(
        instrument=INSTRUMENT, visit=obs.visit, detector=detector, band=obs.band,
        physical_filter=f"{obs.band}_sim", day_obs=obs.day_obs, mjd=obs.mjd, exptime=obs.exptime,
        airmass=obs.airmass, boresight_ra=obs.boresight_ra, boresight_dec=obs.boresight_dec,
        rotpa=obs.rotpa, snap=obs.snap,
    )
    return Exposure(rendered.image, rendered.variance, mask, rendered.wcs, psf, (0, 0), info)


# state of a worker process, set once by _init_worker
_STATE: dict[str, object] = {}


def _init_worker(preset: Preset, observations: list[Observation], cat: SkyCatalog, seed: int,
                 write_psf: bool, image_dir: Path) -> None:
    _STATE.update(preset=preset, observations=observations, cat=cat, seed=seed, write_psf=write_psf,
                  image_dir=image_dir)


def _draw_one(task: tuple[int, int]) -> dict[str, dict]:
    """Draw and write one image; return its truth rows."""
    index, detector = task
    obs: Observation = _STATE["observations"][index]
    rendered = render(_STATE["preset"], obs, detector, _STATE["cat"], _STATE["seed"], _STATE["write_psf"])
    name = image_name(obs.visit, detector, obs.snap)
    write_exposure(to_exposure(rendered, obs, detector), Path(_STATE["image_dir"]) / name)
    snap = -1 if obs.snap is None else obs.snap
    n = len(rendered.epochs["id"])
    common = {"visit": obs.visit, "detector": detector, "snap": snap}
    epochs = {**{k: np.full(n, v) for k, v in common.items()}, "band": np.full(n, obs.band),
              "mjd": np.full(n, obs.mjd_mid), **rendered.epochs}
    m = len(rendered.cosmics["x"])
    cosmics = {**{k: np.full(m, v) for k, v in common.items()}, **rendered.cosmics}
    visit_row = {
        **common, "band": obs.band, "physical_filter": f"{obs.band}_sim", "day_obs": obs.day_obs,
        "seq_num": obs.seq_num, "mjd": obs.mjd, "exptime": obs.exptime, "airmass": obs.airmass,
        "boresight_ra": obs.boresight_ra, "boresight_dec": obs.boresight_dec, "rotpa": obs.rotpa,
        "image": f"images/{name}", **rendered.conditions,
    }
    return {"epochs": epochs, "cosmics": cosmics, "visit": {k: np.array([v]) for k, v in visit_row.items()}}


def _prepare_outdir(outdir: Path) -> Path:
    """Create OUTDIR/images; clear a previous simulation there; refuse a directory holding other files."""
    image_dir = outdir / "images"
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"simulation output {outdir} exists and is not a directory")
    if outdir.exists() and any(outdir.iterdir()):
        if not (outdir / "visits.parquet").exists():
            raise ValueError(f"simulation output {outdir} is not empty and holds no previous simulation; "
                             "choose an empty or new directory")
        for old in image_dir.glob("visit_*.fits"):
            old.unlink()
        for name in TRUTH_FILES:
            (outdir / name).unlink(missing_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    return image_dir


def simulate(
    outdir: str | os.PathLike,
    preset: str | Preset = "tiny",
    seed: int = 0,
    jobs: int = 1,
    write_psf: bool = True,
    progress: bool | None = None,
) -> SimulationResult:
    """Simulate the survey ``preset`` into ``outdir`` (images/ and the truth tables).

    The same preset and seed give byte-identical files whatever ``jobs`` is. ``progress=None``
    shows a bar only when stderr is a terminal.
    """
    preset = get_preset(preset)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    outdir = Path(outdir)
    image_dir = _prepare_outdir(outdir)

    rng = np.random.default_rng([int(seed), 1])
    observations = schedule(preset, rng)
    cat = make_catalog(preset, observations, rng)
    tasks = [(i, d) for i in range(len(observations)) for d in range(preset.n_detectors)]
    state = (preset, observations, cat, int(seed), write_psf, image_dir)

    results: list[dict | None] = [None] * len(tasks)
    with ProgressBar(len(tasks), f"images ({preset.name})", progress) as bar:
        if jobs == 1:
            _init_worker(*state)
            for k, task in enumerate(tasks):
                results[k] = _draw_one(task)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=state) as pool:
                futures = {pool.submit(_draw_one, task): k for k, task in enumerate(tasks)}
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()

    truth.write_objects(cat, outdir / "truth_objects.parquet")
    truth.write_rows([r["epochs"] for r in results], truth.EPOCH_SCHEMA, outdir / "truth_epochs.parquet")
    truth.write_rows([r["visit"] for r in results], truth.VISIT_SCHEMA, outdir / "visits.parquet")
    truth.write_rows([r["cosmics"] for r in results], truth.COSMIC_SCHEMA, outdir / "truth_cosmics.parquet")
    images = [image_dir / image_name(observations[i].visit, d, observations[i].snap) for i, d in tasks]
    return SimulationResult(outdir=outdir, preset=preset, seed=int(seed), images=images)
