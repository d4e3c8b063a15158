"""Alert packets to and from Avro container files (one file per visit), with schema validation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import fastavro
from fastavro.validation import ValidationError, validate

from skydp.alerts.schema import ALERT_SCHEMA_NAME, alert_schema, fields_outside_unions_schema

# zlib level 1: 0.4 ms instead of 0.7 ms per alert, files 16% larger (the cutouts' float pixels
# barely compress; most of the gain at any level is the FITS block padding)
_DEFLATE_LEVEL = 1
_REASON_CHARS = 200  # an error message quotes the bad value: cut it (it may be a cutout)


def validate_alert(alert: dict) -> None:
    """Raise ValueError (naming the alert and the failing fields) unless ``alert`` fits the schema.

    The check is fastavro's validator without error collection (a yes/no, ~0.2 ms per packet):
    with ``raise_errors=True`` it builds an error object, JSON-formatted, for every union branch
    a value does not take (~10x slower). Only a failing packet is validated again to name fields.
    """
    if not validate(alert, alert_schema(), raise_errors=False):
        raise _invalid_alert_error(alert)


def _invalid_alert_error(alert: dict) -> ValueError:
    """ValueError naming the fields of ``alert`` that do not fit the schema and why."""
    what = f"alert {alert.get('diaSourceId') if isinstance(alert, dict) else alert!r:.80}"
    try:
        validate(alert, alert_schema(), raise_errors=True)
    except ValidationError as exc:
        # errors of values inside records/arrays are reported by their leaves; unions report each branch
        leaves = [e for e in exc.errors if not isinstance(e.datum, (dict, list))] or list(exc.errors)
        fields = sorted({e.field for e in leaves})
        reasons = sorted({str(e)[:_REASON_CHARS] for e in leaves})
        return ValueError(f"{what} does not fit {ALERT_SCHEMA_NAME}: field(s) {', '.join(fields)}: {'; '.join(reasons)}")
    return ValueError(f"{what} does not fit {ALERT_SCHEMA_NAME}")


def write_alerts(path: str | os.PathLike, alerts: Iterable[dict]) -> int:
    """Validate and write ``alerts`` to an Avro container file (deflate, level 1); returns how many.

    Validation: fastavro's writer validates every value inside a union while choosing its branch
    (see ``fields_outside_unions_schema``), and the fields outside unions are validated here
    first, so each packet is checked once. A bad packet raises ValueError naming its fields.
    The file appears complete or not at all: it is written beside ``path`` and renamed.
    """
    path = Path(path)
    alerts = list(alerts)
    outside_unions = fields_outside_unions_schema()
    for alert in alerts:
        if not validate(alert, outside_unions, raise_errors=False):
            raise _invalid_alert_error(alert)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as fh:
            try:
                fastavro.writer(fh, alert_schema(), alerts, codec="deflate", codec_compression_level=_DEFLATE_LEVEL)
            except (TypeError, ValueError, OverflowError) as exc:
                for alert in alerts:  # name the packet and field the writer refused
                    validate_alert(alert)
                raise ValueError(f"{path}: alerts could not be written as {ALERT_SCHEMA_NAME}: {exc}") from exc
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
