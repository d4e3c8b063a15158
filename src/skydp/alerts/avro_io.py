"""Alert packets to and from Avro container files (one file per visit), with schema validation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import fastavro
from fastavro.validation import ValidationError, validate

from skydp.alerts.schema import ALERT_SCHEMA_NAME, alert_schema


def validate_alert(alert: dict) -> None:
    """Raise ValueError (naming the alert and the failing fields) unless ``alert`` fits the schema."""
    try:
        validate(alert, alert_schema(), raise_errors=True)
    except ValidationError as exc:
        raise ValueError(f"alert {alert.get('diaSourceId')} does not fit {ALERT_SCHEMA_NAME}: {exc}") from exc


def write_alerts(path: str | os.PathLike, alerts: Iterable[dict]) -> int:
    """Validate and write ``alerts`` to an Avro container file (deflate); returns how many.

    The file appears complete or not at all: it is written beside ``path`` and renamed.
    """
    path = Path(path)
    alerts = list(alerts)
    for alert in alerts:
        validate_alert(alert)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as fh:
            fastavro.writer(fh, alert_schema(), alerts, codec="deflate")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return len(alerts)


def read_alerts(path: str | os.PathLike) -> list[dict]:
    """Alert packets of an Avro container file (ours or real LSST alerts), with the writer's schema."""
    try:
        with open(path, "rb") as fh:
            return list(fastavro.reader(fh))
    except (ValueError, EOFError, fastavro.read.SchemaResolutionError) as exc:
        raise ValueError(f"{path}: not a readable Avro alert file ({exc})") from exc
