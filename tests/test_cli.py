"""The command-line surface: help texts, and one clear line (never a traceback) for what is not built."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from skydp.cli import build_parser, main

COMMANDS = ["init", "ingest", "run", "status", "demo", "simulate", "measure", "forced", "diff", "sql", "cone", "export"]


def test_console_script_help_lists_every_command() -> None:
    exe = shutil.which("skydp") or f"{sys.executable} -m skydp.cli"
    out = subprocess.run(f"{exe} --help", shell=True, capture_output=True, text=True, check=True).stdout
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_a_help_text(command: str) -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sub.choices[command].description, command


@pytest.fixture
def small_repo(tmp_path):
    """A repository whose Source catalog holds 500 synthetic rows around (10, -5)."""
    import numpy as np

    from skydp.etl.repository import Repository
    from skydp.store import build_database, write_hats
    from skydp.store.synthetic import synthetic_table

    rng = np.random.default_rng(4)
    ra, dec = 10 + rng.uniform(-0.05, 0.05, 500), -5 + rng.uniform(-0.05, 0.05, 500)
    root = Repository.init(tmp_path / "repo").root
    write_hats("Source", synthetic_table("Source", ra, dec, seed=4), root / "hats")
    build_database(root)
    return root, ra, dec


def test_sql_adql_and_cone_agree_with_a_direct_distance_cut(small_repo, capsys) -> None:
    import numpy as np
    from astropy.coordinates import SkyCoord

    root, ra, dec = small_repo
    inside = SkyCoord(ra, dec, unit="deg").separation(SkyCoord(10.01, -5.0, unit="deg")).deg < 0.02
    adql = ("SELECT sourceId FROM Source WHERE "
            "CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', 10.01, -5.0, 0.02)) = 1")
    assert main(["sql", str(root), "--adql", "--format", "csv", adql]) == 0
    adql_rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert main(["cone", str(root), "Source", "10.01", "-5.0", "0.02", "--columns", "sourceId", "--format", "csv"]) == 0
    cone_rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert sorted(adql_rows) == sorted(cone_rows) and len(cone_rows) == int(np.sum(inside)) > 0


def test_export_copies_catalogs_for_other_tools(small_repo, tmp_path, capsys) -> None:
    import pyarrow.dataset as ds

    root, ra, _ = small_repo
    assert main(["export", str(root), str(tmp_path / "out")]) == 0
    exported = ds.dataset(tmp_path / "out" / "hats" / "Source" / "dataset", format="parquet", partitioning="hive")
    assert exported.count_rows() == len(ra)
    assert main(["export", str(root), str(tmp_path / "out")]) == 2  # never overwrites
