"""Simulation presets: survey geometry, cadence, sky content and detector effects in one dataclass.

``tiny`` is for unit tests (seconds), ``demo`` is what ``skydp demo`` processes (>= 8 r and 3 g and
3 i visits on one 2k x 2k detector, templates from the first, best-seeing third of each band), and
``survey`` is the benchmark scale (4k x 4k detectors in a 3 x 3 focal plane, ugrizy).
Use ``get_preset(name, **overrides)`` to change a field, e.g. ``get_preset("tiny", snaps=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from skydp.sim.bands import BANDS


@dataclass(frozen=True)
class Preset:
    """Everything that defines one simulated survey (apart from the random seed).

    Densities are per square degree over the field; star and galaxy number counts follow the
    power laws documented in ``skydp.sim.sky``, scaled by ``star_density_scale`` (1 = a field at
    high Galactic latitude like the ECDFS; tiny uses a dense field so that tests have many bright
    isolated stars).
    """

    name: str
    detector_shape: tuple[int, int]  # (nx, ny) pixels
    focal_plane: tuple[int, int] = (1, 1)  # detectors in (columns, rows)
    detector_gap: int = 100  # pixels between neighbouring detectors
    visits_per_band: dict[str, int] = field(default_factory=dict)
    n_nights: int = 5
    night_spacing_days: int = 2
    templates_first: bool = False  # best-seeing third of each band observed first (a template season)
    snaps: bool = False  # two 15 s snaps per visit (SNAP=0/1 files) instead of one 30 s exposure
    field_ra: float = 53.1  # ECDFS, a Rubin DP1 field observed in November
    field_dec: float = -28.1
    first_day_obs: int = 20261115
    dither_radius_deg: float = 0.01
    max_rotation_deg: float = 90.0
    distortion_px: float = 3.0  # radial (SIP) distortion at the farthest detector corner, pixels
    star_density_scale: float = 1.0
    galaxy_mag_limit: float = 27.0  # r band
    n_variables: int = 10
    n_transients: int = 10
    n_movers: int = 2
    cosmic_rate: float = 0.05  # cosmic rays per cm^2 per second (10 um pixels)
    epoch_mag_limit: float | None = None  # static objects fainter (r) than this get no truth_epochs rows

    def __post_init__(self) -> None:
        nx, ny = self.detector_shape
        if nx < 64 or ny < 64:
            raise ValueError(f"preset {self.name!r}: detector_shape {self.detector_shape} smaller than 64 px")
        if self.focal_plane[0] < 1 or self.focal_plane[1] < 1:
            raise ValueError(f"preset {self.name!r}: focal_plane {self.focal_plane} needs >= 1 detector")
        unknown = set(self.visits_per_band) - set(BANDS)
        if unknown:
            raise ValueError(f"preset {self.name!r}: unknown bands {sorted(unknown)} in visits_per_band")
        if not any(n > 0 for n in self.visits_per_band.values()):
            raise ValueError(f"preset {self.name!r}: visits_per_band has no visits")
        if self.n_nights < 1:
            raise ValueError(f"preset {self.name!r}: n_nights must be >= 1")

    @property
    def n_detectors(self) -> int:
        return self.focal_plane[0] * self.focal_plane[1]

    @property
    def n_visits(self) -> int:
        return sum(self.visits_per_band.values())


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        detector_shape=(512, 512),
        visits_per_band={"g": 2, "r": 4},
        n_nights=3,
        dither_radius_deg=0.002,
        distortion_px=2.0,
        star_density_scale=20.0,
        n_variables=4,
        n_transients=4,
        n_movers=2,
        cosmic_rate=0.6,
    ),
    "demo": Preset(
        name="demo",
        detector_shape=(2048, 2048),
        visits_per_band={"g": 3, "r": 8, "i": 3},
        n_nights=8,
        templates_first=True,
        dither_radius_deg=0.005,
        max_rotation_deg=20.0,
        distortion_px=3.0,
        star_density_scale=2.0,
        n_variables=20,
        n_transients=25,
        n_movers=4,
        cosmic_rate=0.2,
        # in ECDFS, centred on one patch of the default sky map (tract 5063, patch 55), so the demo
        # builds one coadd per band; the tiny preset keeps a tract corner, where patches overlap
        field_ra=52.962,
        field_dec=-27.409,
    ),
    "survey": Preset(
        name="survey",
        detector_shape=(4096, 4096),
        focal_plane=(3, 3),
        visits_per_band={"u": 1, "g": 3, "r": 6, "i": 6, "z": 3, "y": 1},
        n_nights=10,
        templates_first=True,
        dither_radius_deg=0.05,
        distortion_px=5.0,
        n_variables=200,
        n_transients=200,
        n_movers=20,
        epoch_mag_limit=25.0,
    ),
}


def get_preset(name: str | Preset, **overrides: object) -> Preset:
    """The named preset (or a given Preset) with ``overrides`` applied; unknown names raise ValueError."""
    if isinstance(name, Preset):
        preset = name
    elif name in PRESETS:
        preset = PRESETS[name]
    else:
        raise ValueError(f"unknown simulation preset {name!r}: expected one of {sorted(PRESETS)}")
    known = {f.name for f in fields(Preset)}
    bad = set(overrides) - known
    if bad:
        raise ValueError(f"unknown preset parameter(s) {sorted(bad)}")
    return replace(preset, **overrides) if overrides else preset
