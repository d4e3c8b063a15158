"""The Felis YAMLs in schema/: valid Felis, DP1 names/types/units, our own descriptions, complete.

The expected column lists below are written out by hand from
../shared/reference/lsst_schema.md section 2 (and the schema brief), so a column dropped from a
YAML makes a test fail; they are not derived from the YAMLs themselves.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from conftest import REPO_ROOT, SHARED_REFERENCE

from skydp import tables

SCHEMA_DIR = REPO_ROOT / "schema"
BANDS = "ugrizy"
APERTURES_SOURCE = ["03", "06", "09", "12", "17", "25", "35", "50", "70"]
APERTURES_OBJECT = ["03", "06", "09", "12", "17", "25"]


def _per_band(stems: list[str]) -> list[str]:
    return [f"{b}_{s}" for b in BANDS for s in stems]


def _apertures(radii: list[str], prefix: str = "") -> list[str]:
    return [f"{prefix}ap{r}{s}" for r in radii for s in ("Flux", "FluxErr", "Flux_flag")]


# lsst_schema.md 2.1 (Source core).
SOURCE_CORE = [
    "sourceId", "visit", "detector", "band", "physical_filter", "parentSourceId",
    "coord_ra", "coord_dec", "ra", "dec", "raErr", "decErr", "ra_dec_Cov",
    "x", "y", "xErr", "yErr", "psfFlux", "psfFluxErr", "psfFlux_flag", "calibFlux", "calibFluxErr",
    *_apertures(APERTURES_SOURCE),
    "gaussianFlux", "gaussianFluxErr", "gaussianFlux_flag",
    "ixx", "iyy", "ixy", "ixxPSF", "iyyPSF", "ixyPSF",
    "extendedness", "extendedness_flag", "sizeExtendedness", "sky", "skyErr",
    "footprintArea_value", "deblend_nChild",
    "pixelFlags_edge", "pixelFlags_bad", "pixelFlags_saturated", "pixelFlags_saturatedCenter",
    "pixelFlags_cr", "pixelFlags_crCenter", "pixelFlags_interpolated", "pixelFlags_interpolatedCenter",
    "pixelFlags_suspect", "pixelFlags_nodata", "pixelFlags_offimage",
    "centroid_flag", "psfFlux_apCorr", "sky_source",
]

# lsst_schema.md 2.2 (Object global + per band), plus the brief's kron/gaussian/blendedness/isPrimary.
OBJECT_CORE = [
    "objectId", "coord_ra", "coord_dec", "coord_raErr", "coord_decErr", "tract", "patch",
    "parentObjectId", "refBand", "refExtendedness", "refSizeExtendedness",
    "x", "y", "xErr", "yErr", "shape_xx", "shape_yy", "shape_xy", "footprintArea",
    "deblend_nChild", "detect_isIsolated", "detect_isPrimary",
    *_per_band([
        "psfFlux", "psfFluxErr", "psfFlux_flag", "psfMag", "psfMagErr",
        "calibFlux", "calibFluxErr", *_apertures(APERTURES_OBJECT),
        "free_psfFlux", "free_psfFluxErr", "extendedness", "sizeExtendedness",
        "ixx", "iyy", "ixy", "ixxPSF", "iyyPSF", "ixyPSF",
        "centroid_x", "centroid_y", "centroid_xErr", "centroid_yErr", "inputCount",
        "pixelFlags_nodata", "pixelFlags_cr", "pixelFlags_interpolated", "pixelFlags_saturated",
        "pixelFlags_saturatedCenter", "pixelFlags_clipped", "pixelFlags_sensor_edge", "epoch",
        "kronFlux", "kronFluxErr", "kronRad", "gaussianFlux", "gaussianFluxErr", "blendedness",
    ]),
]

FORCED_PIXEL_FLAGS = [
    f"pixelFlags_{f}" for f in (
        "bad", "cr", "crCenter", "edge", "interpolated", "interpolatedCenter", "nodata",
        "saturated", "saturatedCenter", "suspect", "suspectCenter",
    )
]

# lsst_schema.md 2.3 plus the recommended extras.
FORCEDSOURCE_CORE = [
    "objectId", "parentObjectId", "coord_ra", "coord_dec", "visit", "detector", "band", "tract", "patch",
    "psfFlux", "psfFluxErr", "psfFlux_flag", "psfDiffFlux", "psfDiffFluxErr", "psfDiffFlux_flag",
    *FORCED_PIXEL_FLAGS, "diff_PixelFlags_nodataCenter", "invalidPsfFlag",
    "midpointMjdTai", "psfMag", "psfMagErr",
]

# lsst_schema.md 2.6 plus the synthetic key and the time.
FORCEDSOURCEONDIAOBJECT_CORE = [
    "forcedSourceOnDiaObjectId", "diaObjectId", "parentObjectId", "coord_ra", "coord_dec",
    "visit", "detector", "band", "tract", "patch",
    "psfFlux", "psfFluxErr", "psfFlux_flag", "psfDiffFlux", "psfDiffFluxErr", "psfDiffFlux_flag",
    *FORCED_PIXEL_FLAGS, "diff_PixelFlags_nodataCenter", "invalidPsfFlag", "midpointMjdTai",
]

# lsst_schema.md 2.4 plus the APDB extras. DP1 has no Center variant of edge, bad or offimage.
DIASOURCE_CORE = [
    "diaSourceId", "visit", "detector", "band", "diaObjectId", "ssObjectId", "parentDiaSourceId",
    "midpointMjdTai", "ra", "dec", "raErr", "decErr", "ra_dec_Cov", "coord_ra", "coord_dec",
    "x", "y", "xErr", "yErr", "psfFlux", "psfFluxErr", "psfChi2", "psfNdata", "psfFlux_flag",
    "apFlux", "apFluxErr", "apFlux_flag", "snr", "scienceFlux", "scienceFluxErr",
    "ixx", "iyy", "ixy", "ixxPSF", "iyyPSF", "ixyPSF", "extendedness",
    "isDipole", "dipoleFitAttempted", "dipoleMeanFlux", "dipoleFluxDiff", "dipoleLength",
    "dipoleAngle", "dipoleChi2", "reliability", "bboxSize", "time_processed",
    "pixelFlags", "pixelFlags_edge", "pixelFlags_bad", "pixelFlags_saturated", "pixelFlags_cr",
    "pixelFlags_interpolated", "pixelFlags_suspect", "pixelFlags_nodata", "pixelFlags_offimage",
    "pixelFlags_saturatedCenter", "pixelFlags_crCenter", "pixelFlags_interpolatedCenter",
    "pixelFlags_suspectCenter", "pixelFlags_nodataCenter", "pixelFlags_streak",
    "isNegative", "templateFlux", "templateFluxErr",
]

# lsst_schema.md 2.5: the 22 DP1 per-band stems plus the APDB globals.
DIAOBJECT_CORE = [
    "diaObjectId", "ra", "dec", "nDiaSources", "radecMjdTai", "raErr", "decErr", "ra_dec_Cov",
    "firstDiaSourceMjdTai", "lastDiaSourceMjdTai",
    *_per_band([
        "psfFluxMean", "psfFluxMeanErr", "psfFluxNdata", "psfFluxSigma", "psfFluxChi2",
        "psfFluxMin", "psfFluxMax", "psfFluxMAD", "psfFluxSkew",
        "psfFluxPercentile05", "psfFluxPercentile25", "psfFluxPercentile50",
        "psfFluxPercentile75", "psfFluxPercentile95", "psfFluxMaxSlope", "psfFluxErrMean",
        "psfFluxLinearSlope", "psfFluxLinearIntercept", "psfFluxStetsonJ",
        "scienceFluxMean", "scienceFluxMeanErr", "scienceFluxSigma",
    ]),
]

# lsst_schema.md 2.7 (all 15).
VISIT_CORE = [
    "visit", "physical_filter", "band", "ra", "dec", "skyRotation", "azimuth", "altitude",
    "zenithDistance", "airmass", "expTime", "expMidpt", "expMidptMJD", "obsStart", "obsStartMJD",
]

# lsst_schema.md 2.8.
CCDVISIT_CORE = [
    "ccdVisitId", "visitId", "detector", "band", "physical_filter", "ra", "dec", "expTime",
    "darkTime", "expMidpt", "expMidptMJD", "obsStart", "obsStartMJD", "skyRotation",
    "zenithDistance", "pixelScale", "xSize", "ySize",
    "llcra", "llcdec", "ulcra", "ulcdec", "urcra", "urcdec", "lrcra", "lrcdec",
    "zeroPoint", "psfSigma", "seeing", "skyBg", "skyNoise", "nPsfStar",
    "astromOffsetMean", "astromOffsetStd", "magLim", "effTime",
]

# Schema brief: ObsCore-like list of every stored image.
IMAGEMETADATA_CORE = [
    "imageId", "dataset_type", "visit", "detector", "tract", "patch", "band", "physical_filter",
    "path", "calib_level", "dataproduct_type", "s_ra", "s_dec", "s_region",
    "llcra", "llcdec", "ulcra", "ulcdec", "urcra", "urcdec", "lrcra", "lrcdec",
    "t_min", "t_max", "t_exptime", "s_pixel_scale", "s_xel1", "s_xel2", "sha256", "created_by_run",
]

CORE = {
    "Source": SOURCE_CORE,
    "Object": OBJECT_CORE,
    "ForcedSource": FORCEDSOURCE_CORE,
    "ForcedSourceOnDiaObject": FORCEDSOURCEONDIAOBJECT_CORE,
    "DiaSource": DIASOURCE_CORE,
    "DiaObject": DIAOBJECT_CORE,
    "Visit": VISIT_CORE,
    "CcdVisit": CCDVISIT_CORE,
    "ImageMetadata": IMAGEMETADATA_CORE,
}

# Columns that identify a row or its partition: never null.
KEYS = {
    "Source": ["sourceId", "visit", "detector", "band", "coord_ra", "coord_dec"],
    "Object": ["objectId", "tract", "patch", "coord_ra", "coord_dec"],
    "ForcedSource": ["objectId", "visit", "detector", "band", "coord_ra", "coord_dec"],
    "ForcedSourceOnDiaObject": ["forcedSourceOnDiaObjectId", "diaObjectId", "visit", "detector", "band",
                                "coord_ra", "coord_dec"],
    "DiaSource": ["diaSourceId", "visit", "detector", "band", "coord_ra", "coord_dec"],
    "DiaObject": ["diaObjectId", "ra", "dec"],
    "Visit": ["visit", "band"],
    "CcdVisit": ["ccdVisitId", "visitId", "detector", "band"],
    "ImageMetadata": ["imageId", "dataset_type", "band", "path", "calib_level"],
}

# Our table -> the DP1 table it is compared with (ImageMetadata shares its ObsCore position columns
# with DP1 CoaddPatches).
DP1_TABLE = {name: name for name in CORE if name != "ImageMetadata"} | {"ImageMetadata": "CoaddPatches"}

# Deliberate unit differences from dp1.yaml, each because the DP1 unit is wrong for values in
# nJy-calibrated images. The test checks DP1 still declares exactly the listed unit, so this list
# cannot silently hide another difference.  (table, column): (DP1 unit, our unit)
DP1_UNIT_CORRECTIONS = {
    # DP1 says "count" but the same table's dipoleFluxDiff is in nJy and the values are calibrated.
    ("DiaSource", "dipoleMeanFlux"): ("count", "nJy"),
    ("DiaSource", "dipoleMeanFluxErr"): ("count", "nJy"),
    # Our visit images are in nJy, so the background statistics are too.
    ("CcdVisit", "skyBg"): ("adu", "nJy"),
    ("CcdVisit", "skyNoise"): ("adu", "nJy"),
}

YAML_FILES = sorted(SCHEMA_DIR.glob("*.yaml"))


@pytest.fixture(scope="module")
def dp1_tables() -> dict[str, dict]:
    """DP1 table name -> its Felis table mapping."""
    path = SHARED_REFERENCE / "sdm_schemas" / "dp1.yaml"
    if not path.exists():
        pytest.skip(f"DP1 reference schema not found at {path}")
    return {t["name"]: t for t in yaml.safe_load(path.read_text())["tables"]}


@pytest.fixture(scope="module")
def dp1(dp1_tables: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """DP1 table name -> column name -> column mapping."""
    return {name: {c["name"]: c for c in t["columns"]} for name, t in dp1_tables.items()}


def _unit(column: dict) -> str:
    """A column's unit; absent, null and "" all mean "no unit" (dp1.yaml omits ivoa:unit then)."""
    return column.get("ivoa:unit") or ""


def test_one_yaml_per_table() -> None:
    assert sorted(p.stem for p in YAML_FILES) == sorted(CORE)
    assert sorted(tables.table_names()) == sorted(CORE)


def test_felis_validate_passes() -> None:
    """`felis validate` with every @id given explicitly (no generated ids) and descriptions required."""
    pytest.importorskip("felis")
    felis = Path(sys.executable).with_name("felis")
    felis = felis if felis.exists() else shutil.which("felis")
    assert felis, "lsst-felis is importable but its felis command is not installed"
    cmd = [str(felis), "--no-id-generation", "validate", "--check-description", *map(str, YAML_FILES)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Successfully validated") == len(YAML_FILES), result.stderr


@pytest.mark.parametrize("table", sorted(CORE))
def test_core_columns_present(table: str) -> None:
    missing = [n for n in CORE[table] if n not in tables.column_names(table)]
    assert not missing, f"{table} lacks core columns {missing}"


@pytest.mark.parametrize("table", ["Visit", "ForcedSource", "ForcedSourceOnDiaObject"])
def test_all_dp1_columns_present(dp1: dict, table: str) -> None:
    missing = [n for n in dp1[table] if n not in tables.column_names(table)]
    assert not missing, f"{table} lacks DP1 columns {missing}"


@pytest.mark.parametrize("table", sorted(CORE))
def test_shared_columns_match_dp1(dp1: dict, table: str) -> None:
    """Same name, datatype and unit as DP1 for every column DP1 also has (see DP1_UNIT_CORRECTIONS)."""
    reference = dp1[DP1_TABLE[table]]
    by_lower = {n.lower(): n for n in reference}
    problems = []
    for col in tables.columns(table):
        dp1_name = by_lower.get(col.name.lower())
        if dp1_name is None:
            continue
        if dp1_name != col.name:
            problems.append(f"{col.name}: DP1 spells it {dp1_name}")
            continue
        ref = reference[dp1_name]
        if col.datatype != ref["datatype"]:
            problems.append(f"{col.name}: datatype {col.datatype} != DP1 {ref['datatype']}")
        expected_unit = _unit(ref)
        correction = DP1_UNIT_CORRECTIONS.get((table, col.name))
        if correction is not None:
            assert expected_unit == correction[0], f"DP1 {table}.{col.name} unit is now {expected_unit!r}"
            expected_unit = correction[1]
        if col.unit != expected_unit:
            problems.append(f"{col.name}: unit {col.unit!r} != DP1 {expected_unit!r}")
    assert not problems, f"{table} differs from dp1.yaml: " + "; ".join(problems)


def _normalised(text: str | None) -> str:
    return " ".join(str(text or "").split()).lower()


@pytest.mark.parametrize("table", sorted(CORE))
def test_descriptions_are_our_own(dp1: dict, table: str) -> None:
    """dp1.yaml is GPL-3.0: every description must be non-empty and differ from DP1's for that column."""
    reference = dp1[DP1_TABLE[table]]
    problems = []
    for col in tables.columns(table):
        ours = _normalised(col.description)
        if not ours:
            problems.append(f"{col.name}: empty description")
        elif col.name in reference and ours == _normalised(reference[col.name].get("description")):
            problems.append(f"{col.name}: description copied from dp1.yaml")
        elif ours.startswith("skydp:"):
            problems.append(f"{col.name}: leftover 'skydp:' prefix")
    assert not problems, f"{table}: " + "; ".join(problems)


def test_table_descriptions_are_our_own(dp1_tables: dict) -> None:
    for table in CORE:
        ours = _normalised(tables.table(table).description)
        assert ours, f"{table} has no table description"
        assert ours != _normalised(dp1_tables[DP1_TABLE[table]].get("description")), table


@pytest.mark.parametrize("table", sorted(CORE))
def test_keys_not_nullable(table: str) -> None:
    nullable = {c.name for c in tables.columns(table) if c.nullable}
    assert not nullable & set(KEYS[table])
    assert not nullable & set(tables.table(table).primary_key)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.stem)
def test_names_unique_case_insensitively_in_yaml(path: Path) -> None:
    """Checked on the raw YAML, independently of the loader's own check."""
    names = [c["name"] for c in yaml.safe_load(path.read_text())["tables"][0]["columns"]]
    lowered = [n.lower() for n in names]
    assert len(set(lowered)) == len(lowered), [n for n in names if lowered.count(n.lower()) > 1]


@pytest.mark.parametrize("table", sorted(CORE))
def test_no_unsigned_or_nanosecond_types(table: str) -> None:
    for field in tables.arrow_schema(table):
        assert not pa.types.is_unsigned_integer(field.type), field
        if pa.types.is_timestamp(field.type):
            assert field.type.unit == "us", field


def test_every_column_has_description_and_fluxes_are_njy() -> None:
    for table in tables.table_names():
        for col in tables.columns(table):
            assert col.description, f"{table}.{col.name} has no description"
            is_flux = col.name.endswith(("Flux", "FluxErr")) and not col.name.endswith("instFlux")
            if is_flux and col.datatype in ("float", "double"):
                assert col.unit == "nJy", f"{table}.{col.name} is a flux in {col.unit!r}"
