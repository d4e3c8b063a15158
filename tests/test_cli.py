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


def test_command_not_built_yet_says_so_in_one_line(capsys) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    pending = [c for c, p in sub.choices.items() if getattr(p.get_default("func"), "__name__", "") == "run"]
    for command in pending:
        argv = {"diff": ["diff", "a.fits", "b.fits"], "cone": ["cone", "r", "T", "1", "2", "3"],
                "sql": ["sql", "r", "select 1"], "export": ["export", "r", "o"], "demo": ["demo"]}.get(command, [command, "x"])
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not built yet" in err[0] and "Traceback" not in err[0]
