"""The `skydp` command line.

Exit codes: 0 success; 1 a processing failure or a command that is not built yet; 2 bad input
(a file, a parameter or a repository that fails validation); 3 the repository is busy.
Errors are one line naming the input and the reason; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_BUSY = 1, 2, 3


def one_line(message: object) -> str:
    """A message squeezed onto one line (library errors may quote multi-line text)."""
    return " ".join(str(message).split())


def _cmd_init(args: argparse.Namespace) -> int:
    from skydp.etl.repository import Repository

    Repository.init(args.repo, drop_difference_images=args.drop_difference_images).close()
    policy = " (difference images kept as recipes, recreated on demand)" if args.drop_difference_images else ""
    print(f"initialised skydp repository at {args.repo}{policy}")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from skydp.etl.ingest import ingest
    from skydp.etl.repository import Repository

    with Repository(args.repo) as repo:
        report = ingest(repo, args.paths, link=args.link, skip_existing=args.skip_existing)
    for _path, reason in report.rejected:
        print(f"skydp ingest: rejected {one_line(reason)}", file=sys.stderr)
    skipped = f", skipped {len(report.skipped)} already ingested" if report.skipped else ""
    print(f"ingested {len(report.ingested)} image(s), rejected {len(report.rejected)}{skipped}")
    return EXIT_BAD_INPUT if report.rejected else 0


def _cmd_status(args: argparse.Namespace) -> int:
    from skydp.etl.repository import Repository

    with Repository(args.repo) as repo:
        datasets = repo.registry.find()
    counts: dict[tuple[str, str], int] = {}
    for d in datasets:
        counts[(d.dataset_type, d.status)] = counts.get((d.dataset_type, d.status), 0) + 1
    print(f"{'dataset type':<24} {'status':<8} {'count':>7}")
    for (dtype, status), n in sorted(counts.items()):
        print(f"{dtype:<24} {status:<8} {n:>7}")
    failed = [d for d in datasets if d.status == "failed"]
    for d in failed:
        print(f"FAILED {d.dataset_type} {d.data_id}: {d.error}")
    return EXIT_FAILURE if failed else 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from skydp.sim import simulate

    result = simulate(args.outdir, preset=args.preset, seed=args.seed, jobs=args.jobs, write_psf=not args.no_psf)
    print(f"wrote {len(result.images)} visit image(s) and truth tables to {result.outdir}")
    return 0


def _cmd_measure(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from skydp.exposure import read_exposure
    from skydp.pipeline import SingleVisitConfig, process_visit_image

    config = SingleVisitConfig(threshold=args.threshold, min_area=args.min_area, deblend=not args.no_deblend)
    result = process_visit_image(read_exposure(args.image), config)
    pq.write_table(result.sources, args.output)
    n_sky = sum(result.sources.column("sky_source").to_pylist())
    print(f"{args.image}: {result.sources.num_rows - n_sky} sources (+{n_sky} sky sources) -> {args.output}")
    return 0


def _cmd_forced(args: argparse.Namespace) -> int:
    from skydp.forced.command import run_forced_cli

    status = run_forced_cli(args.image, args.radec, args.output)
    print(f"{args.image}: forced PSF photometry at the positions of {args.radec} -> {args.output}")
    return status


def _cmd_diff(args: argparse.Namespace) -> int:
    from skydp.diffim.command import run_diff_cli

    print(run_diff_cli(args.science, args.template, args.output, dia_sources=args.dia_sources))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from skydp.etl.lock import RepositoryBusy
    from skydp.etl.pipeline import STAGES
    from skydp.etl.runner import RunOptions, run

    options = RunOptions(jobs=args.jobs, executor=args.executor, retry_failed=args.retry_failed,
                         since=args.since, progress=False if args.quiet else None)
    try:
        report = run(args.repo, STAGES, options, command=" ".join(sys.argv))
    except RepositoryBusy as err:
        print(f"skydp run: {err}", file=sys.stderr)
        return EXIT_BUSY
    if not args.quiet:
        print(report.table())
        for failure in report.failures:
            print(f"FAILED {one_line(failure)}", file=sys.stderr)
    print(report.one_line())
    return 0 if report.ok else EXIT_FAILURE


def _cmd_demo(args: argparse.Namespace) -> int:
    from skydp.etl.demo import run_demo, summary_text

    result = run_demo(args.repo, jobs=args.jobs, seed=args.seed)
    print(summary_text(result))
    for failure in result.report.failures:
        print(f"FAILED {one_line(failure)}", file=sys.stderr)
    return 0 if result.report.ok else EXIT_FAILURE


def _print_frame(frame, fmt: str, output: Path | None) -> None:
    """Show a polars DataFrame as a table, or write it as CSV / JSON / Parquet."""
    import polars as pl

    if fmt == "parquet":
        if output is None:
            raise ValueError("--format parquet needs -o/--output FILE")
        frame.write_parquet(output)
    elif fmt == "csv":
        frame.write_csv(output) if output else sys.stdout.write(frame.write_csv())
    elif fmt == "json":
        frame.write_json(output) if output else print(frame.write_json())
    else:
        with pl.Config(tbl_rows=50, tbl_cols=20, fmt_str_lengths=60):
            print(frame)


def _cmd_sql(args: argparse.Namespace) -> int:
    import polars as pl

    from skydp.store import Catalog, translate_adql

    query = translate_adql(args.query) if args.adql else args.query
    if args.engine == "spark":
        from skydp.store.spark import run_spark_sql

        _print_frame(pl.from_arrow(run_spark_sql(args.repo, query)), args.format, args.output)
        return 0
    with Catalog(args.repo) as catalog:
        _print_frame(catalog.sql(query), args.format, args.output)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import shutil

    from skydp.etl.repository import Repository

    with Repository(args.repo) as repo:
        for part in ("hats", "tables"):
            shutil.copytree(repo.path(part), args.outdir / part, dirs_exist_ok=False)
    print(f"exported HATS catalogs and tables to {args.outdir} (Spark: spark.read.parquet('{args.outdir}/hats/Source/dataset'))")
    return 0


def _cmd_cone(args: argparse.Namespace) -> int:
    from skydp.store import Catalog

    columns = args.columns.split(",") if args.columns else None
    with Catalog(args.repo) as catalog:
        _print_frame(catalog.cone(args.table, args.ra, args.dec, args.radius, columns=columns), args.format, args.output)
    return 0


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table")
    p.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skydp",
        description="Survey images to LSST-style catalogs (HATS Parquet + DuckDB).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("init", "create an empty repository", _cmd_init)
    p.add_argument("repo", type=Path, help="repository directory (absent or empty)")
    p.add_argument("--drop-difference-images", action="store_true",
                   help="delete each difference image once forced photometry and alerts have read it, keeping "
                        "a small recipe from which it is recreated on demand (bit-identical)")

    p = add("ingest", "validate visit-image FITS files and register them in a repository", _cmd_ingest)
    p.add_argument("repo", type=Path)
    p.add_argument("paths", type=Path, nargs="+", help="visit-image FITS files")
    p.add_argument("--link", action="store_true", help="symlink the files instead of copying them")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip files already ingested with identical bytes (for a nightly incoming directory)")

    p = add("status", "list datasets per type and status, and every failure with its reason", _cmd_status)
    p.add_argument("repo", type=Path)

    p = add("run", "run every processing stage for what is new in a repository", _cmd_run)
    p.add_argument("repo", type=Path)
    p.add_argument("--jobs", type=int, default=1, help="detectors processed in parallel")
    p.add_argument("--executor", choices=("local", "spark"), default="local",
                   help="where per-detector tasks run (spark needs the [spark] extra)")
    p.add_argument("--retry-failed", action="store_true", help="run failed units again")
    p.add_argument("--since", type=int, metavar="DAY_OBS", help="only inputs from nights >= DAY_OBS (YYYYMMDD)")
    p.add_argument("--quiet", action="store_true", help="no progress or table; one summary line (for cron)")

    p = add("demo", "simulate a small survey, run the whole ETL and show sample queries", _cmd_demo)
    p.add_argument("--repo", type=Path, default=Path("skydp-demo"),
                   help="directory for the simulation and the repository (reused when run again)")
    p.add_argument("--jobs", type=int, default=2, help="detectors processed in parallel")
    p.add_argument("--seed", type=int, default=0, help="simulation seed")

    p = add("simulate", "simulate an LSST-like survey: visit images plus truth tables", _cmd_simulate)
    p.add_argument("outdir", type=Path)
    p.add_argument("--preset", choices=("tiny", "demo", "survey"), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="detectors drawn in parallel")
    p.add_argument("--no-psf", action="store_true", help="leave the PSF HDU out of the images")

    p = add("measure", "single-visit processing of one image into a Source table (Parquet)", _cmd_measure)
    p.add_argument("image", type=Path, help="visit-image FITS file, or a plain image with a WCS")
    p.add_argument("-o", "--output", type=Path, required=True, help="output Parquet file")
    p.add_argument("--threshold", type=float, default=5.0, help="detection threshold in sigma of the PSF-smoothed noise")
    p.add_argument("--min-area", type=int, default=1, help="minimum pixels above threshold")
    p.add_argument("--no-deblend", action="store_true", help="do not split blended footprints")

    p = add("forced", "forced PSF photometry at given sky positions on one image", _cmd_forced)
    p.add_argument("image", type=Path, help="any exposure FITS (visit image, coadd, alert cutout, plain image with a WCS)")
    p.add_argument("--radec", type=Path, required=True, help="CSV with columns ra, dec (degrees) and optionally id")
    p.add_argument("-o", "--output", type=Path, required=True, help="output Parquet file (rows in CSV order)")

    p = add("diff", "PSF-matched difference of a science image and a template", _cmd_diff)
    p.add_argument("science", type=Path, help="science exposure FITS with a WCS and variance")
    p.add_argument("template", type=Path, help="template exposure FITS with a WCS (warped onto the science grid)")
    p.add_argument("-o", "--output", type=Path, required=True, help="difference image FITS (visit-image contract)")
    p.add_argument("--dia-sources", type=Path, help="also write the DiaSources detected on it (Parquet)")

    p = add("sql", "run a SQL query (DuckDB dialect with skydp's spatial macros) on a repository", _cmd_sql)
    p.add_argument("repo", type=Path)
    p.add_argument("query")
    p.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb",
                   help="spark translates the query (macros expanded) and runs it on local Spark")
    p.add_argument("--adql", action="store_true", help="the query is ADQL (TOP, CONTAINS/CIRCLE, DISTANCE, BOX)")
    _add_output_options(p)

    p = add("cone", "cone search of one table: rows within RADIUS degrees of (RA, DEC)", _cmd_cone)
    p.add_argument("repo", type=Path)
    p.add_argument("table")
    p.add_argument("ra", type=float, help="degrees")
    p.add_argument("dec", type=float, help="degrees")
    p.add_argument("radius", type=float, help="degrees")
    p.add_argument("--columns", help="comma-separated columns (default: all)")
    _add_output_options(p)

    p = add("export", "copy a repository's HATS catalogs and tables to a directory for Spark and other tools",
            _cmd_export)
    p.add_argument("repo", type=Path)
    p.add_argument("outdir", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:
        if args.debug:
            raise
        print(f"skydp {args.command}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
