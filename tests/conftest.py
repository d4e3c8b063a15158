"""Shared pytest configuration: the --slow switch and the location of the real reference data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The suite runs as `pytest -n 2` on two cores: each worker already has a core, and BLAS threads
# on top of that only spin-wait against the other worker (in CI the whole-ETL fixtures ran 3-5x
# slower than alone). A plugin has imported numpy in this process already; the xdist workers,
# started after this file is read, inherit the variables.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SKYDP_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
SHARED_REFERENCE = SHARED_DATA.parent / "reference"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def shared_data(*parts: str) -> Path:
    """Path inside ../shared/data; skips the calling test when that data is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real reference data not found at {path}")
    return path
