"""The processing registry: every dataset the repository holds, and every run that made one.

SQLite, because a registry update must commit atomically together with the file it describes,
readers must see a consistent state while a run writes, and nothing beyond the standard library
is needed for that. One row per dataset: its type, its data id, its path inside the repository,
a checksum, the run that produced it, a status (``ok`` or ``failed``) and the failure reason.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id    INTEGER PRIMARY KEY,
    started   TEXT NOT NULL,
    finished  TEXT,
    command   TEXT NOT NULL,
    status    TEXT NOT NULL DEFAULT 'running'
);
CREATE TABLE IF NOT EXISTS datasets (
    dataset_type TEXT NOT NULL,
    data_id      TEXT NOT NULL,
    path         TEXT,
    sha256       TEXT,
    run_id       INTEGER,
    status       TEXT NOT NULL,
    error        TEXT,
    meta         TEXT,
    PRIMARY KEY (dataset_type, data_id)
);
"""


def canonical_data_id(data_id: dict[str, Any]) -> str:
    """The data id as sorted, compact JSON: the one spelling used as a key."""
    return json.dumps(data_id, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Dataset:
    """One registry row."""

    dataset_type: str
    data_id: dict[str, Any]
    path: str | None
    sha256: str | None
    run_id: int | None
    status: str
    error: str | None
    meta: dict[str, Any]


class Registry:
    """Access to ``REPO/registry.sqlite``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")

    @classmethod
    def create(cls, path: Path) -> Registry:
        registry = cls(path)
        registry._conn.executescript(_SCHEMA)
        return registry

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: all of its writes land together or not at all."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def put(
        self,
        conn: sqlite3.Connection,
        dataset_type: str,
        data_id: dict[str, Any],
        *,
        path: str | None = None,
        sha256: str | None = None,
        run_id: int | None = None,
        status: str = "ok",
        error: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Insert or replace one dataset row (call inside :meth:`transaction`)."""
        conn.execute(
            "INSERT OR REPLACE INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                dataset_type,
                canonical_data_id(data_id),
                path,
                sha256,
                run_id,
                status,
                error,
                json.dumps(meta or {}, sort_keys=True),
            ),
        )

    def get(self, dataset_type: str, data_id: dict[str, Any]) -> Dataset | None:
        row = self._conn.execute(
            "SELECT * FROM datasets WHERE dataset_type = ? AND data_id = ?",
            (dataset_type, canonical_data_id(data_id)),
        ).fetchone()
        return _to_dataset(row) if row else None

    def find(self, dataset_type: str | None = None, status: str | None = None) -> list[Dataset]:
        """Datasets of one type and/or status, in a stable (type, data id) order."""
        clauses, params = [], []
        if dataset_type is not None:
            clauses.append("dataset_type = ?")
            params.append(dataset_type)
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._conn.execute(
            f"SELECT * FROM datasets {where} ORDER BY dataset_type, data_id", params
        ).fetchall()
        return [_to_dataset(r) for r in rows]

    def forget_unplanned(self, dataset_types: tuple[str, ...], planned: list[dict[str, Any]]) -> int:
        """Drop rows of these types whose data id no plan produces any more (their inputs changed so
        that the unit vanished, e.g. a template that no longer covers a visit); returns how many."""
        keep = {canonical_data_id(d) for d in planned}
        gone = [(t, d) for t in dataset_types for (d,) in
                self._conn.execute("SELECT data_id FROM datasets WHERE dataset_type = ?", (t,)).fetchall()
                if d not in keep]
        with self.transaction() as conn:
            conn.executemany("DELETE FROM datasets WHERE dataset_type = ? AND data_id = ?", gone)
        return len(gone)

    def start_run(self, command: str, started: str) -> int:
        with self.transaction() as conn:
            cur = conn.execute("INSERT INTO runs (started, command) VALUES (?, ?)", (started, command))
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, finished: str, status: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE runs SET finished = ?, status = ? WHERE run_id = ?", (finished, status, run_id)
            )


def _to_dataset(row: tuple) -> Dataset:
    dataset_type, data_id, path, sha256, run_id, status, error, meta = row
    return Dataset(dataset_type, json.loads(data_id), path, sha256, run_id, status, error, json.loads(meta or "{}"))
