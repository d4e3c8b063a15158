"""Query translation with sqlglot: DuckDB SQL using the skydp macros -> Spark SQL, ADQL -> DuckDB SQL.

``translate_to_spark`` expands every scalar macro (ang_sep, in_cone, healpix_nest, ab_mag, ...)
from the definitions in sql/*.sql themselves, so Spark computes exactly the DuckDB formulas, and
rewrites the table macros ``cone(...)``, ``xmatch(...)`` and ``xmatch_rows(...)`` (which rely on DuckDB-only features:
query_table, COLUMNS(lambda), unnest) into plain Spark subqueries.  When a cone's centre and radius
are numeric constants, it is pruned on Spark too: the HEALPix pixels covering the cone (healpy
query_disc, inclusive) become a filter on the Norder/Npix partition columns and on ``_healpix_29``
ranges (Parquet row-group statistics), before the exact distance cut.

``translate_adql`` turns the ADQL subset TOP, CONTAINS(POINT, CIRCLE|BOX) = 1 and
DISTANCE(POINT, POINT) into DuckDB SQL over the same macros.
"""

from __future__ import annotations

import functools
import math
import operator

import healpy as hp
import numpy as np
import sqlglot
from sqlglot import exp

from skydp import tables
from skydp.store.database import sql_files
from skydp.store.layout import HEALPIX_COLUMN, HEALPIX_ORDER, position_columns

_MAX_CONE_PIXELS = 64  # pruning resolution: the finest order whose covering stays this small


class TranslationError(ValueError):
    """A query the translator cannot turn into the target dialect (message says why)."""


def _parse(query: str, dialect: str) -> list[exp.Expression]:
    try:
        return [e for e in sqlglot.parse(query, read=dialect) if e is not None]
    except sqlglot.errors.ParseError as err:
        raise TranslationError(f"query is not valid {dialect or 'SQL'}: {err}") from err


# ---------------------------------------------------------------------------------------------
# Scalar macros: parsed from sql/*.sql and expanded at each call.

@functools.cache
def _raw_macros() -> dict[str, tuple[list[str], exp.Expression]]:
    """name -> (parameters, body) of every scalar CREATE MACRO in sql/*.sql."""
    out = {}
    for script in sql_files():
        for stmt in _parse(script, "duckdb"):
            udf = stmt.this
            if (isinstance(stmt, exp.Create) and stmt.args.get("kind") == "MACRO"
                    and isinstance(udf, exp.UserDefinedFunction)
                    and not isinstance(stmt.expression, exp.Query)):
                out[udf.this.name.lower()] = ([p.name for p in udf.expressions], stmt.expression)
    return out


def _is_simple(node: exp.Expression) -> bool:
    """A column, a lambda variable or a constant: cheap to repeat where a macro uses it twice."""
    while isinstance(node, (exp.Paren, exp.Cast)):
        node = node.this
    return isinstance(node, (exp.Column, exp.Literal)) or _constant(node) is not None


class _Expander:
    """Expands scalar macro calls.  A macro body names a parameter several times (the DuckDB macros
    rely on DuckDB's common-subexpression elimination), so pasting a complex argument into each
    place grows healpix_nest to ~200 kB of SQL, which Spark cannot parse.  A complex argument used
    more than once is therefore bound once to a Spark lambda variable:
    ``element_at(transform(array(arg), v -> body), 1)``, keeping the expansion linear in size."""

    def __init__(self) -> None:
        self.counter = 0

    def call(self, name: str, args: list[exp.Expression]) -> exp.Expression:
        params, body = _raw_macros()[name]
        if len(args) != len(params):
            raise TranslationError(f"{name}() takes {len(params)} arguments ({', '.join(params)}), got {len(args)}")
        uses = {p: 0 for p in params}
        for col in body.find_all(exp.Column):
            if not col.table and col.name in uses:
                uses[col.name] += 1
        values, bound = {}, []
        for p, a in zip(params, args):
            if uses[p] > 1 and not _is_simple(a):
                self.counter += 1
                var = f"_skydp_v{self.counter}"
                bound.append((var, a))
                values[p] = exp.column(var)
            else:
                values[p] = a

        def repl(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Column) and not node.table and node.name in values:
                return exp.paren(values[node.name].copy(), copy=False)
            return node

        out = self.expand(body.copy().transform(repl, copy=False))
        for var, arg in reversed(bound):
            lam = exp.Lambda(this=out, expressions=[exp.to_identifier(var)])
            out = exp.Anonymous(this="element_at", expressions=[
                exp.Anonymous(this="transform", expressions=[exp.Array(expressions=[arg]), lam]),
                exp.Literal.number(1)])
        return exp.paren(out, copy=False)

    def expand(self, tree: exp.Expression) -> exp.Expression:
        def repl(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Anonymous) and node.name.lower() in _raw_macros():
                return self.call(node.name.lower(), [self.expand(a) for a in node.expressions])
            return node

        return tree.transform(repl, copy=False)


def expand_macros(tree: exp.Expression) -> exp.Expression:
    """``tree`` with every scalar skydp macro call replaced by its SQL body (in place)."""
    return _Expander().expand(tree)


# ---------------------------------------------------------------------------------------------
# Table macros for Spark.

def _constant(node: exp.Expression) -> float | None:
    """Value of a numeric constant expression (literals, + - * /, unary minus), else None."""
    ops = {exp.Add: operator.add, exp.Sub: operator.sub, exp.Mul: operator.mul, exp.Div: operator.truediv}
    if isinstance(node, exp.Literal) and not node.is_string:
        return float(node.this)
    if isinstance(node, (exp.Paren, exp.Neg)):
        inner = _constant(node.this)
        return None if inner is None else (-inner if isinstance(node, exp.Neg) else inner)
    if type(node) in ops:
        a, b = _constant(node.this), _constant(node.expression)
        if a is None or b is None or (isinstance(node, exp.Div) and b == 0):
            return None
        return ops[type(node)](a, b)
    return None


def _table_arg(node: exp.Expression, macro: str) -> str:
    if not (isinstance(node, exp.Literal) and node.is_string):
        raise TranslationError(f"{macro}(): the table must be a string literal, got {node.sql('duckdb')}")
    return node.this


def _positions(table: str) -> tuple[str, str]:
    """Position columns as the DuckDB macros pick them (_skydp_ra_col: ra/dec for unknown tables)."""
    try:
        return position_columns(table)
    except (KeyError, ValueError):
        return "ra", "dec"


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def cone_pixel_ranges(ra: float, dec: float, radius: float) -> list[tuple[int, int]]:
    """Inclusive order-29 ``_healpix_29`` ranges of the HEALPix pixels that cover a cone (deg),
    at the finest order with at most _MAX_CONE_PIXELS covering pixels (healpy query_disc, inclusive)."""
    vec = hp.ang2vec(ra, dec, lonlat=True)
    rad = math.radians(min(radius, 180.0))
    pixels, order = np.arange(12), 0
    for k in range(1, HEALPIX_ORDER + 1):
        pix = hp.query_disc(1 << k, vec, rad, inclusive=True, nest=True)
        if len(pix) > _MAX_CONE_PIXELS:
            break
        pixels, order = np.sort(pix), k
    shift = 2 * (HEALPIX_ORDER - order)
    breaks = np.flatnonzero(np.diff(pixels) != 1)
    starts = pixels[np.concatenate([[0], breaks + 1])]
    ends = pixels[np.concatenate([breaks, [len(pixels) - 1]])]
    return [(int(s) << shift, ((int(e) + 1) << shift) - 1) for s, e in zip(starts, ends)]


def _prune_sql(ranges: list[tuple[int, int]]) -> str:
    """Partition filter (Norder/Npix only, so Spark prunes directories) and row-group filter."""
    leaf_lo = "shiftleft(CAST(Npix AS BIGINT), 2 * (29 - Norder))"
    leaf_hi = "shiftleft(CAST(Npix AS BIGINT) + 1, 2 * (29 - Norder))"
    parts = " OR ".join(f"({leaf_lo} <= {hi} AND {leaf_hi} > {lo})" for lo, hi in ranges)
    rows = " OR ".join(f"{HEALPIX_COLUMN} BETWEEN {lo} AND {hi}" for lo, hi in ranges)
    return f"({parts}) AND ({rows})"


def _cone_sql(args: list[exp.Expression]) -> str:
    """Spark form of cone(tbl, ra0, dec0, radius): the table's columns (no partition columns)."""
    if len(args) != 4:
        raise TranslationError("cone(table, ra, dec, radius) takes 4 arguments")
    table = _table_arg(args[0], "cone")
    if table not in tables.table_names():
        raise TranslationError(f"cone(): unknown table {table!r}")
    ra_col, dec_col = position_columns(table)
    ra0, dec0, radius = (a.sql("duckdb") for a in args[1:])
    cols = ", ".join(_quote(c) for c in [*tables.column_names(table), HEALPIX_COLUMN])
    where = f"in_cone({_quote(ra_col)}, {_quote(dec_col)}, {ra0}, {dec0}, {radius})"
    values = [_constant(a) for a in args[1:]]
    if all(v is not None and math.isfinite(v) for v in values) and abs(values[1]) <= 90 and values[2] > 0:
        where = f"{_prune_sql(cone_pixel_ranges(*values))} AND {where}"
    return f"SELECT {cols} FROM {_quote(table)} WHERE {where}"


def _scan_numbered(table: str, columns: str) -> str:
    """The rows of ``table`` numbered from 0 in Spark's scan order (monotonically_increasing_id)."""
    return (f"SELECT row_number() OVER (ORDER BY monotonically_increasing_id()) - 1 AS _row, {columns} "
            f"FROM {_quote(table)}")


def _xmatch_rows_sql(args: list[exp.Expression], macro: str = "xmatch_rows") -> str:
    """Spark form of xmatch_rows(left, right, radius): the same zone join as sql/20_spatial.sql.
    Rows are numbered in Spark's scan order, which equals DuckDB's only when both read a table in
    the same order (e.g. one file)."""
    if len(args) != 3:
        raise TranslationError(f"{macro}(left, right, radius) takes 3 arguments")
    left, right = _table_arg(args[0], macro), _table_arg(args[1], macro)
    (lra, ldec), (rra, rdec) = _positions(left), _positions(right)
    r = f"({args[2].sql('duckdb')})"
    return f"""
    WITH l AS ({_scan_numbered(left, f"{_quote(lra)} AS _ra, {_quote(ldec)} AS _dec")}),
    r AS ({_scan_numbered(right, f"{_quote(rra)} AS _ra, {_quote(rdec)} AS _dec")}),
    rz AS (SELECT *, _xm_zone(_dec, {r}) AS _z FROM r),
    rb AS (SELECT *, _xm_wrap(CAST(floor(_ra * _xm_nbuckets(_z, {r}) / 360) AS BIGINT), _xm_nbuckets(_z, {r})) AS _b
           FROM rz),
    lz AS (
        SELECT *, _xm_halfwidth(abs(_dec), {r}) AS _w,
               explode(sequence(_xm_zone(_dec - {r}, {r}), _xm_zone(_dec + {r}, {r}))) AS _z
        FROM l),
    ln AS (SELECT *, _xm_nbuckets(_z, {r}) AS _n FROM lz),
    lb AS (
        SELECT _row, _ra, _dec, _z,
               explode(sequence(CAST(floor((_ra - _w) * _n / 360) AS BIGINT),
                                CAST(floor((_ra + _w) * _n / 360) AS BIGINT))) AS _bucket, _n
        FROM ln),
    cand AS (
        SELECT lb._row AS _left_row, rb._row AS _right_row, ang_sep(lb._ra, lb._dec, rb._ra, rb._dec) AS sep
        FROM lb JOIN rb ON rb._z = lb._z AND rb._b = _xm_wrap(lb._bucket, lb._n)
        WHERE rb._dec BETWEEN lb._dec - {r} AND lb._dec + {r})
    SELECT _left_row, min_by(_right_row, sep) AS _right_row, min(sep) AS sep
    FROM cand WHERE sep <= {r} GROUP BY _left_row"""


def _xmatch_sql(args: list[exp.Expression]) -> str:
    """Spark form of xmatch(left, right, radius): xmatch_rows with the right row as a struct."""
    right = _table_arg(args[1], "xmatch") if len(args) == 3 else ""
    return f"""
    SELECT m._left_row, w.match, m.sep
    FROM ({_xmatch_rows_sql(args, "xmatch")}) m
    JOIN ({_scan_numbered(right, "struct(*) AS match")}) w ON w._row = m._right_row"""


_TABLE_MACROS = {"cone": _cone_sql, "xmatch": _xmatch_sql, "xmatch_rows": _xmatch_rows_sql}


def _replace_table_macros(tree: exp.Expression) -> exp.Expression:
    def repl(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Anonymous):
            name = node.this.name.lower()
            if name in _TABLE_MACROS:
                sub = sqlglot.parse_one(_TABLE_MACROS[name](list(node.this.expressions)), read="spark")
                alias = node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(f"_{name}"))
                return exp.Subquery(this=sub, alias=alias)
        return node

    return tree.transform(repl, copy=False)


def _spark_fixes(tree: exp.Expression) -> exp.Expression:
    """DuckDB semantics the Spark dialect does not map by itself: fmod -> % (Java's floating
    remainder is C fmod), and decimal literals -> DOUBLE (Spark would do DECIMAL arithmetic,
    e.g. 1.0/3600 rounded to 6 places; DuckDB divides in double), log10, list indexing."""
    def repl(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Anonymous) and node.name.lower() == "fmod" and len(node.expressions) == 2:
            return exp.paren(exp.Mod(this=node.expressions[0], expression=node.expressions[1]), copy=False)
        if (isinstance(node, exp.Literal) and not node.is_string and not node.this.isdigit()
                and not isinstance(node.parent, exp.DataType)):
            return exp.cast(exp.Literal.string(node.this), "DOUBLE")
        if isinstance(node, exp.Log) and _constant(node.this) == 10.0 and node.expression is not None:
            return exp.Anonymous(this="log10", expressions=[node.expression])  # Spark's log(b, x) is ln x / ln b
        if (isinstance(node, exp.Bracket) and len(node.expressions) == 1
                and not (isinstance(node.expressions[0], exp.Literal) and node.expressions[0].is_string)):
            # DuckDB's list[i] counts from 1 like Spark's element_at (INT index); Spark's [i] from 0
            return exp.Anonymous(this="element_at", expressions=[node.this, exp.cast(node.expressions[0], "INT")])
        return node

    return tree.transform(repl, copy=False)


def translate_to_spark(query: str) -> str:
    """Spark SQL for a DuckDB query (one statement) that may use the skydp macros.

    Table names stay as they are: run it where the tables are registered as Spark views
    (skydp.store.spark.register_tables).  Raises TranslationError (a ValueError) for invalid SQL or
    a wrong macro call."""
    statements = _parse(query, "duckdb")
    if len(statements) != 1:
        raise TranslationError(f"expected one SQL statement, got {len(statements)}")
    tree = _replace_table_macros(statements[0])
    tree = _spark_fixes(expand_macros(tree))
    return tree.sql("spark")


# ---------------------------------------------------------------------------------------------
# ADQL subset -> DuckDB.

def _point(node: exp.Expression, what: str) -> tuple[exp.Expression, exp.Expression]:
    if not (isinstance(node, exp.Anonymous) and node.name.upper() == "POINT"):
        raise TranslationError(f"{what}: expected POINT('ICRS', ra, dec), got {node.sql('tsql')}")
    args = _frame_args(node, 2)
    return args[0], args[1]


def _frame_args(node: exp.Anonymous, n: int) -> list[exp.Expression]:
    """Arguments of an ADQL geometry after its coordinate frame ('ICRS' or '')."""
    args = list(node.expressions)
    if len(args) == n + 1:
        frame = args.pop(0)
        if not (isinstance(frame, exp.Literal) and frame.is_string and frame.this.upper() in ("ICRS", "")):
            raise TranslationError(f"{node.name}: only the ICRS frame is supported, got {frame.sql('tsql')}")
    if len(args) != n:
        raise TranslationError(f"{node.name} takes a frame and {n} numbers, got {node.sql('tsql')}")
    return args


def _contains_sql(node: exp.Contains) -> exp.Expression:
    ra, dec = _point(node.this, "CONTAINS")
    region = node.expression
    name = region.name.upper() if isinstance(region, exp.Anonymous) else ""
    if name == "CIRCLE":
        ra0, dec0, r = _frame_args(region, 3)
        return exp.Anonymous(this="in_cone", expressions=[ra, dec, ra0, dec0, r])
    if name == "BOX":
        ra0, dec0, w, h = (exp.paren(a) for a in _frame_args(region, 4))
        ra_p, dec_p = exp.paren(ra), exp.paren(dec)
        # a longitude/latitude range: |dec - dec0| <= h/2 and the wrapped ra offset <= w/2
        return sqlglot.parse_one(
            f"{dec_p.sql('duckdb')} BETWEEN {dec0.sql('duckdb')} - {h.sql('duckdb')} / 2 "
            f"AND {dec0.sql('duckdb')} + {h.sql('duckdb')} / 2 "
            f"AND abs(((({ra_p.sql('duckdb')} - {ra0.sql('duckdb')}) % 360 + 540) % 360) - 180) "
            f"<= {w.sql('duckdb')} / 2", read="duckdb")
    raise TranslationError(f"CONTAINS: region must be CIRCLE or BOX, got {region.sql('tsql')}")


def _adql_to_duckdb(tree: exp.Expression) -> exp.Expression:
    def repl(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.EQ):
            sides = (node.this, node.expression)
            for a, b in (sides, sides[::-1]):
                if isinstance(a, exp.Contains) and _constant(b) in (0.0, 1.0):
                    pred = exp.paren(_contains_sql(a), copy=False)
                    return pred if _constant(b) == 1.0 else exp.not_(pred)
        if isinstance(node, exp.Contains):
            raise TranslationError("CONTAINS(...) must be compared with 1 or 0")
        if isinstance(node, exp.Anonymous) and node.name.upper() == "DISTANCE":
            args = list(node.expressions)
            if len(args) == 2:
                args = [*_point(args[0], "DISTANCE"), *_point(args[1], "DISTANCE")]
            if len(args) != 4:
                raise TranslationError("DISTANCE takes two POINTs (or ra1, dec1, ra2, dec2)")
            return exp.Anonymous(this="ang_sep", expressions=args)
        if isinstance(node, exp.Ordered):
            node.set("nulls_first", False)  # ADQL leaves it open: keep DuckDB's NULLS LAST, not T-SQL's
        if isinstance(node, exp.Anonymous) and node.name.upper() in ("POINT", "CIRCLE", "BOX", "POLYGON"):
            raise TranslationError(f"{node.name.upper()} is only supported inside CONTAINS/DISTANCE")
        return node

    return tree.transform(repl, copy=False)


def translate_adql(query: str) -> str:
    """DuckDB SQL (using the skydp macros) for an ADQL query: TOP n, CONTAINS(POINT('ICRS', ra, dec),
    CIRCLE('ICRS', ra0, dec0, r)) = 1, CONTAINS(POINT, BOX('ICRS', ra0, dec0, width, height)) = 1
    (a range of width in ra, not scaled by cos(dec), and height in dec, centred on ra0/dec0), and
    DISTANCE(POINT, POINT) in degrees.  Raises TranslationError (a ValueError) otherwise."""
    statements = _parse(query, "tsql")  # T-SQL's grammar has ADQL's TOP and CONTAINS
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise TranslationError("expected one ADQL SELECT statement")
    return _adql_to_duckdb(statements[0]).sql("duckdb")


__all__ = ["TranslationError", "cone_pixel_ranges", "expand_macros", "translate_adql", "translate_to_spark"]
