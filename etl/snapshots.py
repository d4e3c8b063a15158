"""Read-only snapshots of the published catalogs, made of hard links.

The DuckDB views point into a snapshot, never at ``hats/`` and ``tables/`` themselves, so a reader
holding the database open keeps seeing one consistent version while the next run rewrites the
catalogs: hard links keep the old files alive, and a snapshot is deleted only after a newer
database has replaced the one that used it, one generation later.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SNAPSHOTS = "snapshots"
CONTENTS = ("hats", "tables")
KEEP = 2  # the current snapshot and the one the previous database may still be serving


def make_snapshot(root: Path, name: str) -> Path:
    """Hard-link every file of ``hats/`` and ``tables/`` into ``snapshots/<name>`` (atomically)."""
    target = root / SNAPSHOTS / name
    tmp = target.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for top in CONTENTS:
        for path in sorted((root / top).rglob("*")):
            if path.is_file():
                link = tmp / path.relative_to(root)
                link.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, link)
    (tmp / "hats").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def prune_snapshots(root: Path, current: str) -> None:
    """Delete all but the ``KEEP`` most recent snapshots (``current`` always stays)."""
    base = root / SNAPSHOTS
    snapshots = sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    keep = {current} | {p.name for p in snapshots[:KEEP]}
    for path in snapshots:
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
