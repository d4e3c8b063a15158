"""Difference images that need not be stored: the recipe that made one, and its recreation.

Storing every difference image is costly (Rubin will not keep them in future releases), and
``subtract_images`` is deterministic, so a repository may keep a small JSON recipe instead: the
science image and template patches (repository-relative paths and SHA-256), the tract and patches,
the DiffimConfig, the sky map and template margin, the skydp version, and the path and SHA-256 of the
difference FITS it made. ``recreate_difference`` checks every input against its checksum, subtracts
again through the same code the ETL uses (``DifferenceRecipe.run``: subtraction, then detection,
which sets the DETECTED mask planes of the stored image) and passes the result
through the FITS writer and reader, so the Exposure returned is what reading the stored file gave
(float32 PSF stamps included); its FITS bytes are compared with the recorded checksum.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from skydp.checksums import sha256_of
from skydp.diffim.config import DiffimConfig
from skydp.diffim.dia_sources import detect_dia_sources
from skydp.diffim.subtract import Difference, subtract_images
from skydp.diffim.template import TEMPLATE_MARGIN, template_for
from skydp.exposure import Exposure, read_exposure, write_exposure
from skydp.skymap import DEFAULT_SKYMAP, SkyMap

RECIPE_FORMAT = "skydp.difference_recipe"
RECIPE_VERSION = 1
RECIPE_SUFFIX = ".recipe.json"
SKYMAP_PARAMETERS = ("num_rings", "pixel_scale", "patch_inner", "patch_border", "patches_per_side", "ra_start")


class RecreationError(ValueError):
    """A difference image cannot be read or recreated; the message names the file and the reason."""


class RecreationMismatchWarning(UserWarning):
    """A recreated difference image is not bit-identical to the one the recipe recorded (e.g. after a
    numpy/scipy upgrade); it is still a valid difference image of the same inputs."""


@dataclass(frozen=True)
class RecipeFile:
    """A file a recipe names: its path relative to the repository root ('/' separators) and checksum."""

    path: str
    sha256: str


@dataclass(frozen=True)
class DifferenceRecipe:
    """Everything needed to make one difference image again (see the module docstring)."""

    science: RecipeFile
    templates: tuple[RecipeFile, ...]  # template_coadd patches, in the order of ``patches``
    tract: int
    patches: tuple[int, ...]
    config: DiffimConfig = dataclasses.field(default_factory=DiffimConfig)
    skymap: SkyMap = DEFAULT_SKYMAP
    margin: int = TEMPLATE_MARGIN
    image: RecipeFile | None = None  # the difference FITS made from this recipe
    skydp_version: str = dataclasses.field(default_factory=lambda: importlib.metadata.version("skydp"))

    def __post_init__(self) -> None:
        if len(self.templates) != len(self.patches) or not self.patches:
            raise ValueError(f"DifferenceRecipe: {len(self.patches)} patch id(s) for {len(self.templates)} template(s)")

    def check_inputs(self, root: str | os.PathLike, source: str = "recipe") -> None:
        """Raise RecreationError naming the file if an input under ``root`` is missing or its checksum
        changed; ``source`` names the recipe in the message."""
        self._check(Path(root), self.science, "science image", source)
        for template in self.templates:
            self._check(Path(root), template, "template patch", source)

    def inputs(self, root: str | os.PathLike, source: str = "recipe") -> tuple[Exposure, Exposure]:
        """The checked science image and its template mosaic (see ``check_inputs``)."""
        self.check_inputs(root, source)
        science = read_exposure(Path(root) / self.science.path)
        template = template_for(science, self.tract, self.patches, [Path(root) / t.path for t in self.templates],
                                self.skymap, self.margin)
        return science, template

    def run(self, science: Exposure, template: Exposure) -> tuple[Difference, pa.Table]:
        """Subtract and detect with the recipe's configuration: the difference (whose mask then holds
        the DETECTED planes, as stored) and its DiaSources. The ETL and recreation both call this."""
        difference = subtract_images(science, template, self.config)
        return difference, detect_dia_sources(difference, science, self.config)

    def _check(self, root: Path, item: RecipeFile, role: str, source: str) -> None:
        path = root / item.path
        target = f" of {self.image.path}" if self.image else ""
        if not path.is_file():
            raise RecreationError(f"{source}: {role} {path} is missing: cannot recreate the difference image{target}")
        actual = sha256_of(path)
        if actual != item.sha256:
            raise RecreationError(f"{source}: {role} {path} changed since the difference image{target} was made "
                                  f"(sha256 {actual}, recipe has {item.sha256})")

    def with_image(self, path: str, sha256: str) -> DifferenceRecipe:
        return dataclasses.replace(self, image=RecipeFile(path, sha256))

    def to_json(self) -> str:
        payload = {
            "format": RECIPE_FORMAT, "format_version": RECIPE_VERSION, "skydp_version": self.skydp_version,
            "image": None if self.image is None else dataclasses.asdict(self.image),
            "science": dataclasses.asdict(self.science),
            "template": {"tract": self.tract, "patches": list(self.patches),
                         "files": [dataclasses.asdict(t) for t in self.templates], "margin": self.margin},
            "skymap": {name: getattr(self.skymap, name) for name in SKYMAP_PARAMETERS},
            "config": dataclasses.asdict(self.config),
        }
        return json.dumps(payload, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "recipe") -> DifferenceRecipe:
        try:
            payload = json.loads(text)
            if payload.get("format") != RECIPE_FORMAT or payload.get("format_version") != RECIPE_VERSION:
                raise RecreationError(f"{source}: not a {RECIPE_FORMAT} version {RECIPE_VERSION} file")
            template = payload["template"]
            return cls(science=RecipeFile(**payload["science"]),
                       templates=tuple(RecipeFile(**t) for t in template["files"]),
                       tract=int(template["tract"]), patches=tuple(int(p) for p in template["patches"]),
                       config=_config(payload["config"]), skymap=_skymap(payload["skymap"]),
                       margin=int(template["margin"]),
                       image=None if payload["image"] is None else RecipeFile(**payload["image"]),
                       skydp_version=str(payload["skydp_version"]))
        except RecreationError:
            raise
        except (KeyError, TypeError, ValueError) as err:  # JSONDecodeError is a ValueError
            raise RecreationError(f"{source}: not a readable difference-image recipe ({err!r})") from err


def _config(values: dict[str, Any]) -> DiffimConfig:
    """DiffimConfig from its JSON form (tuples come back as lists)."""
    return DiffimConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _skymap(values: dict[str, Any]) -> SkyMap:
    default = {name: getattr(DEFAULT_SKYMAP, name) for name in SKYMAP_PARAMETERS}
    return DEFAULT_SKYMAP if values == default else SkyMap(**values)


def recipe_path(image_path: str | os.PathLike) -> Path:
    """Where the recipe of a difference FITS lives: beside it, ``<name>.recipe.json``."""
    image_path = Path(image_path)
    return image_path.with_name(image_path.name.removesuffix(".fits") + RECIPE_SUFFIX)


def write_recipe(recipe: DifferenceRecipe, path: str | os.PathLike) -> None:
    Path(path).write_text(recipe.to_json())


def read_recipe(path: str | os.PathLike) -> DifferenceRecipe:
    path = Path(path)
    if not path.is_file():
        raise RecreationError(f"{path}: no difference-image recipe here")
    return DifferenceRecipe.from_json(path.read_text(), source=str(path))


def recreate_difference(recipe: DifferenceRecipe | str | os.PathLike, root: str | os.PathLike) -> Exposure:
    """The difference image a recipe describes, made again from the inputs under ``root``.

    Raises RecreationError naming the file when an input is missing or its checksum changed; warns
    (RecreationMismatchWarning) when the result is not bit-identical to the recorded image.
    """
    source = "recipe" if isinstance(recipe, DifferenceRecipe) else str(recipe)
    if not isinstance(recipe, DifferenceRecipe):
        recipe = read_recipe(recipe)
    difference, _ = recipe.run(*recipe.inputs(root, source))
    with tempfile.TemporaryDirectory(prefix="skydp-recreate-") as tmp:
        path = Path(tmp) / "difference.fits"
        write_exposure(difference.difference, path)  # the reader gives exactly what the stored file gave
        checksum = sha256_of(path)
        exposure = read_exposure(path)
    if recipe.image is not None and checksum != recipe.image.sha256:
        warnings.warn(RecreationMismatchWarning(
            f"{source}: the recreated {recipe.image.path} differs from the original (sha256 {checksum}, "
            f"recorded {recipe.image.sha256}; made by skydp {recipe.skydp_version})"), stacklevel=2)
    return exposure


def load_difference(root: str | os.PathLike, path: str | os.PathLike) -> Exposure:
    """A difference image of the repository at ``root``: ``path`` (relative to root, or absolute) is the
    FITS file or its recipe; the FITS is read when present, else recreated from the recipe beside it."""
    root, path = Path(root), Path(path)
    path = path if path.is_absolute() else root / path
    if path.name.endswith(RECIPE_SUFFIX):
        recorded = read_recipe(path).image
        image_file, recipe_file = (root / recorded.path if recorded else None), path
    else:
        image_file, recipe_file = path, recipe_path(path)
    if image_file is not None and image_file.is_file():
        return read_exposure(image_file)
    if not recipe_file.is_file():
        raise RecreationError(f"{image_file}: difference image absent and no recipe ({recipe_file.name}) to recreate it")
    return recreate_difference(recipe_file, root)
