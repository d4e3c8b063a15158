"""The LSST alert Avro schema, as shipped by the ``lsst-alert-packet`` package.

We pin the newest version that package ships (11.1, ``lsst.v11_1.alert``): our field mapping is
written against it, so a newer schema must be adopted deliberately.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import fastavro

ALERT_SCHEMA_VERSION = "11.1"
ALERT_SCHEMA_NAMESPACE = "lsst.v11_1"
ALERT_SCHEMA_NAME = f"{ALERT_SCHEMA_NAMESPACE}.alert"


@dataclass(frozen=True)
class FieldSpec:
    """One field of a record: Avro base type and whether null is allowed."""

    name: str
    type: str
    nullable: bool


def _lsst_alert_packet():
    try:
        import lsst.alert.packet as packet
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "skydp.alerts needs the lsst-alert-packet package (pip install lsst-alert-packet)"
        ) from exc
    return packet


def schema_file() -> Path:
    """Path of ``lsst.v11_1.alert.avsc`` inside the installed lsst-alert-packet."""
    packet = _lsst_alert_packet()
    major, minor = (int(v) for v in ALERT_SCHEMA_VERSION.split("."))
    return Path(packet.get_schema_path(major, minor)) / f"{ALERT_SCHEMA_NAME}.avsc"


@functools.lru_cache(maxsize=1)
def alert_schema() -> dict:
    """The parsed alert schema (fastavro), with the nested record types resolved."""
    definition = _lsst_alert_packet().Schema.from_file(str(schema_file())).definition
    return fastavro.parse_schema(definition)


@functools.lru_cache(maxsize=1)
def fields_outside_unions_schema() -> dict:
    """The alert schema reduced to the fields reached without passing through a union (parsed).

    fastavro's writer picks the branch of every union value by validating it against each
    branch, so values inside unions (every nullable field, the diaObject and both histories) are
    validated while writing; the fields outside unions (the packet's diaSourceId and the diaSource
    record's required fields) are only cast (a float written to a long is truncated silently).
    Validating a packet against this reduced schema before writing closes that gap.
    """
    definition = _lsst_alert_packet().Schema.from_file(str(schema_file())).definition
    return fastavro.parse_schema(_without_unions(definition))


def _without_unions(node: dict) -> dict:
    """Copy of a record schema without its union-typed fields, recursively in nested records."""
    fields = []
    for field in node["fields"]:
        ftype = field["type"]
        if isinstance(ftype, list):
            continue
        if isinstance(ftype, dict) and ftype.get("type") == "record":
            field = {**field, "type": _without_unions(ftype)}
        fields.append(field)
    return {**node, "fields": fields}


@functools.lru_cache(maxsize=None)
def record_fields(record: str) -> tuple[FieldSpec, ...]:
    """Fields of a nested record type of the alert ("diaSource", "diaObject", "diaForcedSource")."""
    found = _find_record(alert_schema(), f"{ALERT_SCHEMA_NAMESPACE}.{record}")
    if found is None:
        raise ValueError(f"alert schema {ALERT_SCHEMA_NAME} has no record type {record!r}")
    specs = []
    for field in found["fields"]:
        ftype = field["type"]
        nullable = isinstance(ftype, list) and "null" in ftype
        base = next(t for t in ftype if t != "null") if isinstance(ftype, list) else ftype
        specs.append(FieldSpec(field["name"], base if isinstance(base, str) else base["type"], nullable))
    return tuple(specs)


def _find_record(node: object, name: str) -> dict | None:
    """Depth-first search of a parsed schema for the named record definition."""
    if isinstance(node, dict):
        if node.get("type") == "record" and node.get("name") == name:
            return node
        children = list(node.values())
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _find_record(child, name)
        if found is not None:
            return found
    return None
