"""What a processing stage is: a plan of units of work over data ids, and a task per unit.

A unit's fingerprint hashes the stage version with the checksums of everything it reads; a unit
is up to date when the registry holds its output with that fingerprint. Tasks are pure: they read
inputs and write only staged files, returning what they made; the runner commits the files and
the registry rows together, so a killed task leaves nothing visible behind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skydp.etl.repository import Repository


@dataclass(frozen=True)
class Unit:
    """One piece of work: a data id, the inputs it reads, and their checksums.

    ``params`` carries what the plan decided from the registry (a template's visits, the objects a
    detector covers) so that the task need not query it; it is part of the fingerprint.
    """

    data_id: dict[str, Any]
    inputs: tuple[str, ...]  # repository-relative paths
    checksums: tuple[str, ...]
    day_obs: int | None = None  # the night it belongs to, for `skydp run --since`
    params: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self, stage_version: str) -> str:
        items: list[Any] = [stage_version, self.data_id, list(self.checksums)]
        if self.params:
            items.append(self.params)
        payload = json.dumps(items, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class Output:
    """A staged file and the registry row that will describe it once committed."""

    dataset_type: str
    data_id: dict[str, Any]
    staged: Path
    relative: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskResult:
    """What a task made, or why it failed."""

    outputs: list[Output] = field(default_factory=list)
    error: str | None = None
    rows: dict[str, int] = field(default_factory=dict)  # rows added per table
    seconds: float = 0.0


@dataclass(frozen=True)
class Stage:
    """A named step: ``plan`` lists all units it could run; ``task`` runs one in any process.

    ``task(root, unit)`` receives the repository root (not a Repository, so it pickles to a worker
    or a Spark executor) and must write only under ``root/tmp``.
    """

    name: str
    version: str
    output_type: str  # the dataset type whose registry row marks a unit done
    plan: Callable[[Repository], list[Unit]]
    task: Callable[[Path, Unit], TaskResult]
    per_detector: bool = False  # runs in the process pool / on Spark
    other_outputs: tuple[str, ...] = ()  # further dataset types a task writes under the unit's data id
