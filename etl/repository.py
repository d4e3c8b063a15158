"""A skydp repository on disk: where images, the registry, catalogs and the database live.

Layout (DESIGN.md)::

    REPO/skydp-repo.json        marker with the layout version and the repository's policies
    REPO/registry.sqlite        processing registry (datasets and runs)
    REPO/images/<type>/...      ingested and produced images
    REPO/hats/<Table>/          HATS catalogs
    REPO/tables/<Table>.parquet Visit, CcdVisit, ImageMetadata
    REPO/catalog.duckdb         DuckDB views and macros
    REPO/logs/                  one log per run
    REPO/tmp/                   staging area for atomic commits
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from skydp.etl.registry import Registry

MARKER = "skydp-repo.json"
LAYOUT_VERSION = 1


class RepositoryError(ValueError):
    """A path is not a usable skydp repository; the message says which and why."""


class Repository:
    """Paths and the registry of one repository."""

    def __init__(self, root: Path):
        self.root = Path(root)
        marker = self.root / MARKER
        if not marker.is_file():
            raise RepositoryError(f"{self.root}: not a skydp repository (no {MARKER}; run `skydp init`)")
        self._settings = json.loads(marker.read_text())
        version = self._settings.get("layout_version")
        if version != LAYOUT_VERSION:
            raise RepositoryError(f"{self.root}: repository layout version {version}, expected {LAYOUT_VERSION}")
        self._registry: Registry | None = None

    @classmethod
    def init(cls, root: Path, drop_difference_images: bool = False) -> Repository:
        """Create an empty repository at ``root`` (which must be absent or an empty directory).

        ``drop_difference_images``: keep only the recipe of each difference image once the stages that
        read its pixels have run; it is recreated on demand (skydp.diffim.recreate).
        """
        root = Path(root)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            if (root / MARKER).exists():
                raise RepositoryError(f"{root}: a skydp repository already exists here")
            raise RepositoryError(f"{root}: exists and is not an empty directory")
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("images", "hats", "tables", "logs", "tmp"):
            (root / sub).mkdir()
        Registry.create(root / "registry.sqlite").close()
        settings = {"layout_version": LAYOUT_VERSION, "drop_difference_images": bool(drop_difference_images)}
        (root / MARKER).write_text(json.dumps(settings) + "\n")
        return cls(root)

    @property
    def drop_difference_images(self) -> bool:
        """Policy: difference images are kept as recipes only (absent key: kept, as before the policy existed)."""
        return bool(self._settings.get("drop_difference_images", False))

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.root / "registry.sqlite")
        return self._registry

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def path(self, relative: str) -> Path:
        return self.root / relative

    def relative(self, path: Path) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def staging_path(self, suffix: str = "") -> Path:
        """A fresh temporary file path inside the repository (same filesystem, so renames are atomic)."""
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", suffix=suffix)
        os.close(fd)
        return Path(name)

    def place(self, staged: Path, relative: str) -> Path:
        """Atomically move a staged file to its final place."""
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        return target

    def clear_staging(self) -> None:
        """Remove leftovers of interrupted writes."""
        staging = self.root / "tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(exist_ok=True)
