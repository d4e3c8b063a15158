"""Difference images dropped by the repository policy and recreated on demand (issue 8, Deliver 1).

The tiny simulated survey runs through `skydp run` twice, night by night, in a repository that keeps
its difference images and in one made with ``skydp init --drop-difference-images``. The second night
re-measures old visits (new Objects and DiaObjects), which in the dropping repository needs their
recreated difference images. Recreated images must equal the stored ones bit for bit and every
published table must be the same in both repositories.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from table_compare import assert_tables_equal

from skydp.checksums import sha256_of
from skydp.cli import main
from skydp.diffim.recreate import (
    DifferenceRecipe,
    RecipeFile,
    RecreationError,
    RecreationMismatchWarning,
    load_difference,
    read_recipe,
    recipe_path,
    recreate_difference,
)
from skydp.etl import forced
from skydp.etl.pipeline import STAGES
from skydp.etl.repository import Repository
from skydp.etl.runner import RunOptions, RunReport, run
from skydp.exposure import read_exposure
from skydp.sim import simulate
from skydp.store import Catalog

HATS_TABLES = {"Source": ["sourceId"], "Object": ["objectId"], "ForcedSource": ["objectId", "visit", "detector"],
               "DiaSource": ["diaSourceId"], "DiaObject": ["diaObjectId"],
               "ForcedSourceOnDiaObject": ["forcedSourceOnDiaObjectId"]}


def _run(root: Path) -> RunReport:
    report = run(root, STAGES, RunOptions(progress=False))
    assert report.ok, report.failures
    return report


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict:
    """Both repositories after night 1-2 and night 3 runs, and the report of a third, idle run."""
    base = tmp_path_factory.mktemp("recreate")
    sim = simulate(base / "sim", preset="tiny", seed=11, progress=False)
    nights = sorted({p.name.split("_")[1][:8] for p in sim.images})
    batches = [[p for p in sim.images if p.name.split("_")[1][:8] in chosen]
               for chosen in (nights[:-1], nights[-1:])]
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # template coadds lack pointing keys: ExposureMetadataWarning
        for name, flags in (("keep", []), ("drop", ["--drop-difference-images"])):
            root = base / name
            assert main(["init", str(root), *flags]) == 0
            reports = []
            for batch in batches:
                assert main(["ingest", str(root), *map(str, batch)]) == 0
                reports.append(_run(root))
            reports.append(_run(root))
            out[name] = {"root": root, "reports": reports}
    return out


def _difference_rows(root: Path) -> list[dict]:
    with Catalog(root) as catalog:
        return catalog.sql("SELECT visit, detector, path, sha256, s_ra, s_dec FROM ImageMetadata "
                           "WHERE dataset_type = 'difference_image' ORDER BY visit, detector").to_dicts()


@pytest.mark.slow
def test_policy_keeps_only_recipes(repos) -> None:
    keep, drop = repos["keep"]["root"], repos["drop"]["root"]
    assert not Repository(keep).drop_difference_images and Repository(drop).drop_difference_images
    kept, dropped = _difference_rows(keep), _difference_rows(drop)
    assert len(kept) >= 3 and len(dropped) == len(kept)
    assert not list((drop / "images" / "difference_image").rglob("*.fits"))
    fits_bytes = sum((keep / r["path"]).stat().st_size for r in kept)
    recipe_bytes = sum((drop / r["path"]).stat().st_size for r in dropped)
    print(f"\n{len(kept)} difference images: {fits_bytes} bytes of FITS kept, {recipe_bytes} bytes of recipes")
    for k, d in zip(kept, dropped):
        assert (keep / k["path"]).is_file() and k["path"].endswith(".fits")
        assert d["path"] == recipe_path(k["path"]).as_posix() and d["sha256"] == sha256_of(drop / d["path"])
        # the recipe records the very bytes the keeping repository stores
        assert read_recipe(drop / d["path"]).image == RecipeFile(k["path"], k["sha256"])


@pytest.mark.slow
def test_recreated_images_equal_the_stored_ones(repos) -> None:
    keep, drop = repos["keep"]["root"], repos["drop"]["root"]
    rows = _difference_rows(keep)
    with Catalog(drop) as catalog, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", RecreationMismatchWarning)  # checked first: bit-identical or fail
        for row in rows:
            stored = read_exposure(keep / row["path"])
            recreated = catalog.image("difference_image", row["visit"], row["detector"])
            assert np.array_equal(recreated.image, stored.image, equal_nan=True)
            assert np.array_equal(recreated.variance, stored.variance, equal_nan=True)
            assert np.array_equal(recreated.mask.array, stored.mask.array)
            assert recreated.mask.planes == stored.mask.planes
            assert np.array_equal(recreated.psf.stamps, stored.psf.stamps)
            assert recreated.wcs.to_header() == stored.wcs.to_header() and recreated.xy0 == stored.xy0
            assert (recreated.mask.get("DETECTED") | recreated.mask.get("DETECTED_NEGATIVE")).any()
        row = rows[0]
        with Catalog(keep) as kept:
            expected = kept.cutout(row["s_ra"], row["s_dec"], 30, row["visit"], row["detector"], "difference_image")
        got = catalog.cutout(row["s_ra"], row["s_dec"], 30, row["visit"], row["detector"], "difference_image")
        assert got.xy0 == expected.xy0 and np.array_equal(got.image, expected.image, equal_nan=True)


def _hats(root: Path, table: str) -> pa.Table:
    data = ds.dataset(root / "hats" / table / "dataset", format="parquet", partitioning="hive").to_table()
    # partition columns, and the wall-clock time a row was made (different in any two runs)
    data = data.drop_columns([c for c in ("Norder", "Dir", "Npix", "time_processed") if c in data.column_names])
    return data.sort_by([(k, "ascending") for k in HATS_TABLES[table]])


@pytest.mark.slow
def test_catalogs_are_identical_with_and_without_dropping(repos) -> None:
    keep, drop = repos["keep"]["root"], repos["drop"]["root"]
    for table in HATS_TABLES:
        expected = _hats(keep, table)
        assert expected.num_rows > 0, table
        assert_tables_equal(_hats(drop, table), expected, table)
    for table in ("Visit", "CcdVisit"):
        assert_tables_equal(pq.read_table(drop / "tables" / f"{table}.parquet"),
                            pq.read_table(keep / "tables" / f"{table}.parquet"), table)
    # ImageMetadata: the same rows but for the path and checksum of dropped difference images
    columns = [c for c in pq.read_schema(keep / "tables" / "ImageMetadata.parquet").names
               if c not in ("path", "sha256", "created_by_run")]
    assert_tables_equal(pq.read_table(drop / "tables" / "ImageMetadata.parquet", columns=columns),
                        pq.read_table(keep / "tables" / "ImageMetadata.parquet", columns=columns), "ImageMetadata")


@pytest.mark.slow
def test_forced_photometry_on_a_recreated_image_equals_the_stored_result(repos) -> None:
    """forced_dia on a visit whose difference image was dropped (as when new DiaObjects appear on old
    visits) recreates it and measures exactly what the keeping repository measured."""
    keep, drop = repos["keep"]["root"], repos["drop"]["root"]
    with Repository(drop) as repo:
        unit = next(u for u in forced.plan_forced_dia(repo) if u.params["difference"])
    assert not (drop / unit.inputs[1]).exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", RecreationMismatchWarning)
        result = forced.task_forced_dia(drop, unit)
    got = pq.read_table(result.outputs[0].staged)
    result.outputs[0].staged.unlink()
    with Repository(keep) as repo:
        expected = pq.read_table(keep / repo.registry.get(forced.FORCED_DIA_TYPE, unit.data_id).path)
    assert expected.num_rows > 0
    assert_tables_equal(got, expected, "ForcedSourceOnDiaObject")


@pytest.mark.slow
def test_rerun_does_nothing(repos) -> None:
    for name in ("keep", "drop"):
        idle = repos[name]["reports"][-1]
        assert [s.executed for s in idle.stages] == [0] * len(idle.stages), (name, idle.table())
    second = {s.name: s for s in repos["drop"]["reports"][1].stages}
    assert second["drop_differences"].executed >= 1


@pytest.mark.slow
def test_changed_or_missing_input_gives_a_clear_error(repos, tmp_path) -> None:
    drop = repos["drop"]["root"]
    recipe_file = drop / _difference_rows(drop)[0]["path"]
    recipe = read_recipe(recipe_file)
    for item in (recipe.science, *recipe.templates):  # a copy of the inputs, to damage
        (tmp_path / item.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(drop / item.path, tmp_path / item.path)
    science = tmp_path / recipe.science.path
    with open(science, "ab") as f:
        f.write(b"\0" * 2880)
    with pytest.raises(RecreationError, match=re.escape(f"science image {science} changed since")):
        recreate_difference(recipe_file, tmp_path)
    shutil.copy(drop / recipe.science.path, science)
    template = tmp_path / recipe.templates[0].path
    template.unlink()
    with pytest.raises(RecreationError, match=re.escape(f"template patch {template} is missing")):
        recreate_difference(recipe, tmp_path)
    with pytest.raises(RecreationError, match="difference image absent and no recipe"):
        load_difference(tmp_path, recipe.image.path)


def test_recipe_round_trips_through_json() -> None:
    recipe = DifferenceRecipe(RecipeFile("images/visit_image/a.fits", "0" * 64),
                              (RecipeFile("images/template_coadd/b.fits", "1" * 64),
                               RecipeFile("images/template_coadd/c.fits", "2" * 64)), tract=7, patches=(3, 4))
    recipe = recipe.with_image("images/difference_image/d.fits", "3" * 64)
    again = DifferenceRecipe.from_json(recipe.to_json())
    assert again == recipe
    assert json.loads(recipe.to_json())["config"]["basis_sigmas"] == list(recipe.config.basis_sigmas)
    assert recipe_path("x/difference_image_1_det000.fits") == Path("x/difference_image_1_det000.recipe.json")


def test_unreadable_recipe_names_the_file(tmp_path) -> None:
    bad = tmp_path / "d.recipe.json"
    bad.write_text('{"format": "skydp.difference_recipe", "format_version": 1}')
    with pytest.raises(RecreationError, match=re.escape(f"{bad}: not a readable difference-image recipe")):
        read_recipe(bad)
    bad.write_text("{}")
    with pytest.raises(RecreationError, match=re.escape(f"{bad}: not a skydp.difference_recipe version 1 file")):
        load_difference(tmp_path, bad.name)
    with pytest.raises(RecreationError, match="no difference-image recipe"):
        load_difference(tmp_path, "missing.recipe.json")
