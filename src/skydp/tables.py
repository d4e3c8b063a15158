"""Catalog table definitions, read from the Felis YAMLs in ``schema/`` (the single source of truth).

Everything else about a table is generated from those files here: pyarrow schemas (with unit and
description in each field's metadata, so Parquet files carry them), DuckDB ``CREATE TABLE``
statements and the Markdown reference ``docs/tables.md``
(``python -m skydp.tables --docs docs/tables.md`` rewrites it).

The module-level functions use the YAMLs installed with the package (``skydp._schema``);
``load_schemas(directory)`` reads another directory of Felis files, e.g. a modified copy.
"""

from __future__ import annotations

import argparse
import functools
import importlib.resources
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

__all__ = [
    "Column",
    "TableDef",
    "SchemaSet",
    "load_schemas",
    "table_names",
    "table",
    "columns",
    "column_names",
    "arrow_schema",
    "empty_table",
    "to_arrow",
    "duckdb_create",
    "docs_markdown",
    "main",
]

# Felis datatype -> (Arrow type, DuckDB type). Felis "unicode" and "binary" are not used by our
# tables and are rejected. Timestamps are microsecond and time-zone naive: DP1 declares TAI
# timestamps with precision 6, and TAI is not UTC, so no time zone is attached.
_TYPES: dict[str, tuple[pa.DataType, str]] = {
    "boolean": (pa.bool_(), "BOOLEAN"),
    "byte": (pa.int8(), "TINYINT"),
    "short": (pa.int16(), "SMALLINT"),
    "int": (pa.int32(), "INTEGER"),
    "long": (pa.int64(), "BIGINT"),
    "float": (pa.float32(), "FLOAT"),
    "double": (pa.float64(), "DOUBLE"),
    "char": (pa.string(), "VARCHAR"),
    "string": (pa.string(), "VARCHAR"),
    "text": (pa.string(), "VARCHAR"),
    "timestamp": (pa.timestamp("us"), "TIMESTAMP"),
}


@dataclass(frozen=True)
class Column:
    """One column of a table, as declared in its Felis YAML."""

    name: str
    datatype: str  # Felis datatype, a key of _TYPES
    unit: str  # IVOA/FITS unit string as in the YAML; "" when the column has none
    nullable: bool
    description: str
    length: int | None = None  # Felis length of char/string columns (informative only)

    @property
    def arrow_type(self) -> pa.DataType:
        return _TYPES[self.datatype][0]

    @property
    def duckdb_type(self) -> str:
        return _TYPES[self.datatype][1]

    def arrow_field(self) -> pa.Field:
        """Arrow field with the unit and description in its metadata."""
        metadata = {b"unit": self.unit.encode(), b"description": self.description.encode()}
        return pa.field(self.name, self.arrow_type, nullable=self.nullable, metadata=metadata)


@dataclass(frozen=True)
class TableDef:
    """A table: its name, description, columns in order, and primary-key column names."""

    name: str
    description: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]


def _parse_table(source: str, document: Any, expected_name: str) -> TableDef:
    """Build a TableDef from one parsed Felis document; ValueError names ``source`` on bad input."""
    if not isinstance(document, dict) or not isinstance(document.get("tables"), list):
        raise ValueError(f"{source}: not a Felis schema document (no 'tables' list)")
    if len(document["tables"]) != 1:
        raise ValueError(f"{source}: expected exactly one table, found {len(document['tables'])}")
    spec = document["tables"][0]
    name = spec.get("name")
    if name != expected_name:
        raise ValueError(f"{source}: table is named {name!r}, but the file name says {expected_name!r}")
    cols = []
    seen: dict[str, str] = {}
    for raw in spec.get("columns") or []:
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: column entry {raw!r} of {name} is not a mapping")
        col_name = raw.get("name")
        datatype = raw.get("datatype")
        if not col_name:
            raise ValueError(f"{source}: a column of {name} has no name")
        if datatype not in _TYPES:
            raise ValueError(
                f"{source}: column {name}.{col_name} has unsupported datatype {datatype!r}"
                f" (supported: {', '.join(_TYPES)})"
            )
        if col_name.lower() in seen:
            raise ValueError(
                f"{source}: column names {seen[col_name.lower()]!r} and {col_name!r} in {name}"
                " differ only in case"
            )
        seen[col_name.lower()] = col_name
        cols.append(
            Column(
                name=col_name,
                datatype=datatype,
                unit=raw.get("ivoa:unit") or "",
                nullable=bool(raw.get("nullable", True)),
                description=" ".join(str(raw.get("description") or "").split()),
                length=raw.get("length"),
            )
        )
    if not cols:
        raise ValueError(f"{source}: table {name} has no columns")
    pk_refs = spec.get("primaryKey") or []
    pk_refs = [pk_refs] if isinstance(pk_refs, str) else pk_refs
    prefix = f"#{name}."
    primary_key = tuple(ref.removeprefix(prefix) for ref in pk_refs)
    names = {c.name for c in cols}
    for key in primary_key:
        if key not in names:
            raise ValueError(f"{source}: primary key {key!r} is not a column of {name}")
    return TableDef(name, " ".join(str(spec.get("description") or "").split()), tuple(cols), primary_key)


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


class SchemaSet:
    """The tables read from one directory of Felis YAMLs, and everything generated from them."""

    def __init__(self, tables: Mapping[str, TableDef]) -> None:
        self._tables = dict(tables)
        self._arrow = {
            name: pa.schema(
                [c.arrow_field() for c in t.columns],
                metadata={b"table": name.encode(), b"description": t.description.encode()},
            )
            for name, t in self._tables.items()
        }

    def table_names(self) -> list[str]:
        return list(self._tables)

    def table(self, table: str) -> TableDef:
        try:
            return self._tables[table]
        except KeyError:
            known = ", ".join(self._tables)
            raise ValueError(f"unknown table {table!r}; known tables: {known}") from None

    def columns(self, table: str) -> list[Column]:
        return list(self.table(table).columns)

    def column_names(self, table: str) -> list[str]:
        return [c.name for c in self.table(table).columns]

    def arrow_schema(self, table: str) -> pa.Schema:
        self.table(table)
        return self._arrow[table]

    def empty_table(self, table: str) -> pa.Table:
        return self.arrow_schema(table).empty_table()

    def to_arrow(self, table: str, data: Mapping[str, Any] | pa.Table) -> pa.Table:
        """Cast and order ``data`` to the exact schema of ``table``.

        A missing nullable column becomes all nulls; a missing non-nullable column, an unknown
        column, unequal lengths, a value that does not fit the column type (e.g. an int64 beyond
        int32 range) or a null in a non-nullable column raises ValueError naming the column.
        NaN stays NaN (it is a value, not a null).
        """
        schema = self.arrow_schema(table)
        if isinstance(data, pa.Table):
            if len(set(data.column_names)) != data.num_columns:
                raise ValueError(f"{table}: input has duplicate column names {data.column_names}")
            source: dict[str, Any] = {n: data.column(n) for n in data.column_names}
        elif isinstance(data, Mapping):
            source = dict(data)
        else:
            raise ValueError(
                f"{table}: data must be a mapping of column arrays or a pyarrow.Table,"
                f" not {type(data).__name__}"
            )
        unknown = [n for n in source if schema.get_field_index(n) < 0]
        if unknown:
            raise ValueError(f"{table}: unknown column(s) {', '.join(map(repr, unknown))}")
        converted = {n: _as_arrow(table, schema.field(n), v) for n, v in source.items()}
        lengths = {n: len(a) for n, a in converted.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{table}: columns have different lengths: {lengths}")
        n_rows = next(iter(lengths.values()), 0)
        arrays = []
        for field in schema:
            if field.name in converted:
                array = converted[field.name]
                if not field.nullable and array.null_count:
                    raise ValueError(
                        f"{table}: column {field.name!r} is not nullable but has {array.null_count} null(s)"
                    )
            elif field.nullable:
                array = pa.nulls(n_rows, field.type)
            else:
                raise ValueError(f"{table}: required (non-nullable) column {field.name!r} is missing")
            arrays.append(array)
        return pa.Table.from_arrays(arrays, schema=schema)

    def from_rows(self, table: str, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
        """``to_arrow`` for a list of row dicts; a key absent from a row is a null there."""
        if not rows:
            return self.empty_table(table)
        names = sorted({key for row in rows for key in row})
        return self.to_arrow(table, {n: [row.get(n) for row in rows] for n in names})

    def duckdb_create(self, table: str) -> str:
        """``CREATE TABLE`` statement for DuckDB, with NOT NULL and the primary key."""
        t = self.table(table)
        lines = [
            f'    "{c.name}" {c.duckdb_type}{"" if c.nullable else " NOT NULL"}' for c in t.columns
        ]
        if t.primary_key:
            lines.append("    PRIMARY KEY (" + ", ".join(f'"{k}"' for k in t.primary_key) + ")")
        return f'CREATE TABLE "{t.name}" (\n' + ",\n".join(lines) + "\n);\n"

    def docs_markdown(self) -> str:
        """Markdown reference of every table and column (the content of docs/tables.md)."""
        out = [
            "# Catalog tables",
            "",
            "<!-- Generated from schema/*.yaml by `python -m skydp.tables --docs docs/tables.md`;"
            " do not edit by hand. -->",
            "",
            "Column names, datatypes and units of columns shared with Rubin Data Preview 1 follow"
            " `lsst/sdm_schemas` `dp1.yaml` (v1.3.1); descriptions are skydp's own."
            " Types are Felis datatypes: boolean, short (int16), int (int32), long (int64),"
            " float (float32), double (float64), char/string (UTF-8 text), timestamp"
            " (microseconds, no time zone). Fluxes are in nJy (AB mag = 31.4 - 2.5 log10 flux),"
            " angles in degrees, times MJD TAI.",
            "",
            "| table | columns | primary key | description |",
            "|---|---|---|---|",
        ]
        for t in self._tables.values():
            key = ", ".join(t.primary_key) or "–"
            link = f"[{t.name}](#{t.name.lower()})"
            out.append(f"| {link} | {len(t.columns)} | {key} | {_markdown_cell(t.description)} |")
        for t in self._tables.values():
            out += ["", f"## {t.name}", "", t.description, ""]
            if t.primary_key:
                out += ["Primary key: " + ", ".join(f"`{k}`" for k in t.primary_key) + ".", ""]
            out += ["| column | type | unit | nullable | description |", "|---|---|---|---|---|"]
            for c in t.columns:
                dtype = f"{c.datatype}({c.length})" if c.length else c.datatype
                out.append(
                    f"| `{c.name}` | {dtype} | {c.unit} | {'yes' if c.nullable else 'no'} |"
                    f" {_markdown_cell(c.description)} |"
                )
        return "\n".join(out) + "\n"


def _as_arrow(table: str, field: pa.Field, values: Any) -> pa.Array | pa.ChunkedArray:
    """Convert one input column to ``field.type`` with pyarrow's safe cast."""
    try:
        if isinstance(values, np.ma.MaskedArray):
            array = pa.array(np.ma.getdata(values), mask=np.ma.getmaskarray(values))
        elif isinstance(values, (pa.Array, pa.ChunkedArray)):
            array = values
        else:
            array = pa.array(values)
        return array.cast(field.type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError) as err:
        raise ValueError(
            f"{table}: column {field.name!r} cannot be stored as {field.type}: {err}"
        ) from err


def load_schemas(directory: str | Path | Traversable | None = None) -> SchemaSet:
    """Read every ``*.yaml`` in ``directory`` (default: the installed ``skydp._schema``)."""
    if directory is not None and not Path(directory).is_dir():
        raise ValueError(f"schema directory {directory} does not exist")
    root: Traversable = (
        importlib.resources.files("skydp._schema") if directory is None else Path(directory)
    )
    files = sorted((f for f in root.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    if not files:
        raise ValueError(f"no *.yaml table definitions found in {root}")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C build of the safe loader
    tables = {}
    for f in files:
        try:
            document = yaml.load(f.read_text(encoding="utf-8"), Loader=loader)
        except yaml.YAMLError as err:
            raise ValueError(f"{f}: invalid YAML: {err}") from err
        t = _parse_table(str(f), document, f.name.removesuffix(".yaml"))
        tables[t.name] = t
    return SchemaSet(tables)


@functools.cache
def _installed() -> SchemaSet:
    return load_schemas()


def table_names() -> list[str]:
    """Names of all catalog tables."""
    return _installed().table_names()


def table(name: str) -> TableDef:
    """Definition of one table; ValueError for an unknown name."""
    return _installed().table(name)


def columns(table: str) -> list[Column]:
    """Columns of ``table`` in order."""
    return _installed().columns(table)


def column_names(table: str) -> list[str]:
    """Column names of ``table`` in order."""
    return _installed().column_names(table)


def arrow_schema(table: str) -> pa.Schema:
    """Exact pyarrow schema of ``table`` (unit and description in field metadata)."""
    return _installed().arrow_schema(table)


def empty_table(table: str) -> pa.Table:
    """Zero-row pyarrow table with the exact schema of ``table``."""
    return _installed().empty_table(table)


def to_arrow(table: str, data: Mapping[str, Any] | pa.Table) -> pa.Table:
    """Cast and order ``data`` to the exact schema of ``table`` (see SchemaSet.to_arrow)."""
    return _installed().to_arrow(table, data)


def from_rows(table: str, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts) of ``table`` as an Arrow table with its exact schema (see SchemaSet.from_rows)."""
    return _installed().from_rows(table, rows)


def duckdb_create(table: str) -> str:
    """DuckDB ``CREATE TABLE`` statement for ``table``."""
    return _installed().duckdb_create(table)


def docs_markdown() -> str:
    """Markdown reference of all tables (the content of docs/tables.md)."""
    return _installed().docs_markdown()


def main(argv: list[str] | None = None) -> int:
    """``python -m skydp.tables --docs PATH``: write the generated table reference."""
    parser = argparse.ArgumentParser(prog="python -m skydp.tables", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--docs", type=Path, required=True, help="write the Markdown table reference here"
    )
    args = parser.parse_args(argv)
    args.docs.write_text(docs_markdown(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
