"""skydp.tables: arrow schemas, DuckDB DDL and docs/tables.md are generated from the YAMLs alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO_ROOT

from skydp import tables

SCHEMA_DIR = REPO_ROOT / "schema"
DOCS = REPO_ROOT / "docs" / "tables.md"

# DuckDB's own name for each Felis datatype, as DESCRIBE reports it (independent of skydp.tables).
DUCKDB_DESCRIBE = {
    "boolean": "BOOLEAN", "byte": "TINYINT", "short": "SMALLINT", "int": "INTEGER", "long": "BIGINT",
    "float": "FLOAT", "double": "DOUBLE", "char": "VARCHAR", "string": "VARCHAR", "text": "VARCHAR",
    "timestamp": "TIMESTAMP",
}


def _schema_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "schema"
    copy.mkdir()
    for f in SCHEMA_DIR.glob("*.yaml"):
        shutil.copy(f, copy / f.name)
    return copy


def _edit_columns(path: Path, edit) -> None:
    document = yaml.safe_load(path.read_text())
    edit(document["tables"][0]["columns"])
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def _describe(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, tuple[str, str]]:
    rows = con.execute(f'DESCRIBE "{table}"').fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}  # name -> (type, null "YES"/"NO")


def test_added_column_reaches_arrow_duckdb_and_docs(tmp_path: Path) -> None:
    copy = _schema_copy(tmp_path)
    new = {
        "name": "testAddedFlux",
        "@id": "#Source.testAddedFlux",
        "datatype": "float",
        "nullable": False,
        "ivoa:unit": "nJy",
        "description": "A column that exists only in this test.",
    }
    _edit_columns(copy / "Source.yaml", lambda cols: cols.append(new))
    schemas = tables.load_schemas(copy)

    field = schemas.arrow_schema("Source").field("testAddedFlux")
    assert field.type == pa.float32() and not field.nullable
    assert field.metadata[b"unit"] == b"nJy"
    assert field.metadata[b"description"] == b"A column that exists only in this test."

    con = duckdb.connect()
    con.execute(schemas.duckdb_create("Source"))
    assert _describe(con, "Source")["testAddedFlux"] == ("FLOAT", "NO")

    row = "| `testAddedFlux` | float | nJy | no | A column that exists only in this test. |"
    assert row in schemas.docs_markdown()
    # ...and the installed definitions are untouched.
    assert "testAddedFlux" not in tables.column_names("Source")


def test_docs_file_is_up_to_date() -> None:
    assert DOCS.read_text(encoding="utf-8") == tables.docs_markdown(), (
        "docs/tables.md is stale: run `python -m skydp.tables --docs docs/tables.md`"
    )


def test_docs_command_writes_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "tables.md"
    assert tables.main(["--docs", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text == tables.docs_markdown()
    for name in tables.table_names():
        assert f"\n## {name}\n" in text
    assert "| `psfFlux` | double | nJy | yes |" in text  # Source.psfFlux


def test_installed_package_data_is_the_repository_schema() -> None:
    repo = tables.load_schemas(SCHEMA_DIR)
    assert repo.table_names() == tables.table_names()
    for name in tables.table_names():
        assert repo.arrow_schema(name).equals(tables.arrow_schema(name), check_metadata=True)


@pytest.mark.parametrize("table", tables.table_names())
def test_duckdb_ddl_matches_felis_types(table: str) -> None:
    con = duckdb.connect()
    con.execute(tables.duckdb_create(table))
    described = _describe(con, table)
    expected = {
        c.name: (DUCKDB_DESCRIBE[c.datatype], "YES" if c.nullable else "NO") for c in tables.columns(table)
    }
    assert list(described) == list(expected)
    assert described == expected
    # DuckDB accepts rows built to the arrow schema, and hands back the same arrow types.
    arrow = tables.empty_table(table)
    con.register("incoming", arrow)
    con.execute(f'INSERT INTO "{table}" SELECT * FROM incoming')
    back = pa.table(con.sql(f'SELECT * FROM "{table}"'))
    for ours, theirs in zip(arrow.schema, back.schema, strict=True):
        if pa.types.is_string(ours.type):
            text_types = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
            assert any(is_text(theirs.type) for is_text in text_types), ours.name
        else:
            assert theirs.type == ours.type, ours.name


def test_duckdb_primary_key_enforced() -> None:
    con = duckdb.connect()
    con.execute(tables.duckdb_create("CcdVisit"))
    con.execute("INSERT INTO CcdVisit (ccdVisitId, visitId, detector, band) VALUES (1, 10, 3, 'g')")
    with pytest.raises(duckdb.ConstraintException):
        con.execute("INSERT INTO CcdVisit (ccdVisitId, visitId, detector, band) VALUES (2, 10, 3, 'r')")


def _visit_rows() -> dict:
    return {
        "band": np.array(["g", "r", "i"]),
        "visit": [2026032400012, 2026032400013, 2026032400014],
        "physical_filter": ["g_6", "r_57", "i_39"],
        "ra": np.array([10.5, 11.25, 12.0]),
        "expMidpt": np.array(
            ["2026-03-25T01:02:03.250", "2026-03-25T01:05:00", "2026-03-25T01:08:00"], dtype="datetime64[us]"
        ),
    }


def test_to_arrow_orders_casts_and_fills_nulls() -> None:
    out = tables.to_arrow("Visit", _visit_rows())
    assert out.schema.equals(tables.arrow_schema("Visit"), check_metadata=True)
    assert out.column_names == tables.column_names("Visit")
    assert out.column("visit").to_pylist() == [2026032400012, 2026032400013, 2026032400014]
    assert out.column("band").to_pylist() == ["g", "r", "i"]
    assert out.column("airmass").null_count == 3
    assert out.column("expMidpt").type == pa.timestamp("us")
    assert str(out.column("expMidpt")[0].as_py()) == "2026-03-25 01:02:03.250000"


def test_to_arrow_float_narrowing_keeps_nan_and_masked_becomes_null() -> None:
    flux = np.ma.masked_array([1234.5678, np.nan, 3.0], mask=[False, False, True])
    out = tables.to_arrow("ForcedSource", {
        "objectId": np.array([1, 2, 3]), "visit": np.array([7, 7, 7]), "detector": np.array([0, 1, 2]),
        "band": ["r"] * 3, "coord_ra": np.zeros(3), "coord_dec": np.zeros(3),
        "midpointMjdTai": np.full(3, 61000.5), "psfFlux": flux,
    })
    psf = out.column("psfFlux")
    assert psf.type == pa.float32()
    assert psf[0].as_py() == pytest.approx(1234.5678, rel=1e-7)
    assert np.isnan(psf[1].as_py()) and psf.null_count == 1 and not psf[2].is_valid


def test_to_arrow_accepts_arrow_table_input() -> None:
    first = tables.to_arrow("Visit", _visit_rows())
    reordered = first.select(list(reversed(first.column_names))).drop_columns(["airmass"])
    assert tables.to_arrow("Visit", reordered).equals(first)


def test_to_arrow_errors_name_the_column() -> None:
    rows = _visit_rows()
    with pytest.raises(ValueError, match="unknown column.*'colour'"):
        tables.to_arrow("Visit", {**rows, "colour": [1, 2, 3]})
    with pytest.raises(ValueError, match="non-nullable.*'physical_filter'"):
        tables.to_arrow("Visit", {k: v for k, v in rows.items() if k != "physical_filter"})
    with pytest.raises(ValueError, match="'band' is not nullable"):
        tables.to_arrow("Visit", {**rows, "band": ["g", None, "i"]})
    with pytest.raises(ValueError, match="different lengths"):
        tables.to_arrow("Visit", {**rows, "ra": [1.0, 2.0]})
    with pytest.raises(ValueError, match="'detector' cannot be stored as int32"):
        tables.to_arrow("Source", {"detector": np.array([2**40])})
    with pytest.raises(ValueError, match="'visit' cannot be stored as int64"):
        tables.to_arrow("Visit", {**rows, "visit": [1.5, 2.0, 3.0]})
    with pytest.raises(ValueError, match="mapping of column arrays or a pyarrow.Table"):
        tables.to_arrow("Visit", [1, 2, 3])


def test_unknown_table_is_named() -> None:
    funcs = (tables.columns, tables.column_names, tables.arrow_schema, tables.empty_table, tables.duckdb_create)
    for func in funcs:
        with pytest.raises(ValueError, match="unknown table 'Sources'"):
            func("Sources")
    with pytest.raises(ValueError, match="unknown table 'Sources'"):
        tables.to_arrow("Sources", {})


def test_empty_table_and_parquet_keep_units(tmp_path: Path) -> None:
    empty = tables.empty_table("DiaObject")
    assert empty.num_rows == 0
    assert empty.schema.equals(tables.arrow_schema("DiaObject"), check_metadata=True)
    pq.write_table(empty, tmp_path / "d.parquet")
    read = pq.read_schema(tmp_path / "d.parquet")
    assert read.field("g_psfFluxMaxSlope").metadata[b"unit"] == b"nJy/d"
    assert read.field("diaObjectId").nullable is False


def test_loader_rejects_names_differing_only_in_case(tmp_path: Path) -> None:
    copy = _schema_copy(tmp_path)
    dup = {"name": "PSFFLUX", "@id": "#Source.PSFFLUX", "datatype": "double", "description": "dup"}
    _edit_columns(copy / "Source.yaml", lambda cols: cols.append(dup))
    with pytest.raises(ValueError, match=r"Source\.yaml.*'psfFlux' and 'PSFFLUX'.*differ only in case"):
        tables.load_schemas(copy)


def test_loader_rejects_unsupported_datatype_and_misnamed_file(tmp_path: Path) -> None:
    copy = _schema_copy(tmp_path)
    _edit_columns(copy / "Visit.yaml", lambda cols: cols[0].update(datatype="binary"))
    with pytest.raises(ValueError, match=r"Visit\.yaml.*Visit\.visit.*unsupported datatype 'binary'"):
        tables.load_schemas(copy)
    shutil.copy(SCHEMA_DIR / "Visit.yaml", copy / "Visit.yaml")
    shutil.copy(SCHEMA_DIR / "Visit.yaml", copy / "Exposure.yaml")
    with pytest.raises(ValueError, match=r"Exposure\.yaml.*named 'Visit'.*'Exposure'"):
        tables.load_schemas(copy)
    with pytest.raises(ValueError, match="does not exist"):
        tables.load_schemas(tmp_path / "nowhere")
