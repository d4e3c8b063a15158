"""`skydp demo`: simulate the demo survey, ingest it, run the ETL, then show what landed.

The simulation goes to ``DIR/simulation`` and the repository to ``DIR/repo`` (images are linked,
not copied). Running the demo again on the same directory re-runs the ETL, which then has nothing
to do: the second run is a live check of idempotence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from skydp.etl.ingest import ingest
from skydp.etl.pipeline import STAGES
from skydp.etl.repository import MARKER, Repository
from skydp.etl.runner import RunOptions, RunReport, run
from skydp.sim import simulate
from skydp.store import Catalog

CATALOG_TABLES = ("Visit", "CcdVisit", "ImageMetadata", "Source", "Object", "ForcedSource",
                  "DiaSource", "DiaObject", "ForcedSourceOnDiaObject")

# (title, SQL) shown after the run; each works in the duckdb shell on REPO/catalog.duckdb as well.
SAMPLE_QUERIES = (
    ("Cone search: Sources within 20\" of the centre of the first image",
     """SELECT sourceId, visit, band, round(coord_ra, 6) AS ra, round(coord_dec, 6) AS dec,
               round(psfFlux, 1) AS psfFlux, round(ab_mag(psfFlux), 3) AS mag
        FROM cone('Source', (SELECT s_ra FROM ImageMetadata ORDER BY imageId LIMIT 1),
                            (SELECT s_dec FROM ImageMetadata ORDER BY imageId LIMIT 1), 20 / 3600.0)
        ORDER BY psfFlux DESC LIMIT 10"""),
    ("Light curve: every detection within 0.5\" of the brightest unsaturated r-band star",
     """WITH star AS (
            SELECT coord_ra, coord_dec FROM Source
            WHERE band = 'r' AND extendedness = 0 AND NOT pixelFlags_saturated AND NOT sky_source
            ORDER BY psfFlux DESC LIMIT 1)
        SELECT s.visit, s.band, round(v.expMidptMJD, 5) AS mjd, round(s.psfFlux, 1) AS psfFlux,
               round(s.psfFluxErr, 1) AS psfFluxErr, round(ab_mag(s.psfFlux), 3) AS mag
        FROM Source s JOIN Visit v USING (visit), star
        WHERE in_cone(s.coord_ra, s.coord_dec, star.coord_ra, star.coord_dec, 0.5 / 3600.0)
        ORDER BY mjd"""),
    ("Join to image metadata: per visit image, its seeing, depth, source count and file",
     """SELECT visit, detector, band, round(seeing, 3) AS seeing_arcsec, round(magLim, 2) AS magLim,
               count(*) AS nSource, any_value(visit_image_path) AS visit_image
        FROM SourceImage WHERE NOT sky_source
        GROUP BY visit, detector, band, seeing, magLim ORDER BY visit, detector"""),
    ("Deep Objects: the brightest primary point sources and their colours from the coadds",
     """SELECT objectId, refBand, round(coord_ra, 6) AS ra, round(coord_dec, 6) AS dec,
               round(ab_mag(r_psfFlux), 3) AS r, round(ab_mag(g_psfFlux) - ab_mag(r_psfFlux), 3) AS g_r,
               round(ab_mag(r_psfFlux) - ab_mag(i_psfFlux), 3) AS r_i, r_inputCount
        FROM Object WHERE detect_isPrimary AND refExtendedness = 0 AND isfinite(g_psfFlux + r_psfFlux + i_psfFlux)
          AND r_psfFlux > 0 AND NOT r_pixelFlags_saturatedCenter
        ORDER BY r_psfFlux DESC LIMIT 8"""),
    ("Time domain: the most variable DiaObjects (r-band chi2) and their forced light-curve length",
     """SELECT o.diaObjectId, o.nDiaSources, round(o.r_psfFluxMean, 1) AS r_meanDiffFlux,
               round(o.r_psfFluxChi2, 1) AS r_chi2, round(o.r_psfFluxStetsonJ, 2) AS r_stetsonJ,
               count(f.visit) AS nForced
        FROM DiaObject o LEFT JOIN ForcedSourceOnDiaObject f USING (diaObjectId)
        GROUP BY ALL ORDER BY r_chi2 DESC NULLS LAST LIMIT 8"""),
)


@dataclass
class DemoResult:
    repo: Path
    report: RunReport
    seconds: float


def run_demo(directory: Path, *, jobs: int = 2, seed: int = 0, progress: bool | None = None) -> DemoResult:
    """Simulate (once), ingest new images, and run every stage."""
    start = time.perf_counter()
    directory = Path(directory)
    simulation, root = directory / "simulation", directory / "repo"
    if not (simulation / "visits.parquet").exists():
        simulate(simulation, preset="demo", seed=seed, jobs=jobs, progress=progress)
    if not (root / MARKER).exists():
        Repository.init(root).close()
    with Repository(root) as repo:
        ingest(repo, sorted((simulation / "images").glob("*.fits")), link=True, skip_existing=True)
    report = run(root, STAGES, RunOptions(jobs=jobs, progress=progress), command="skydp demo")
    return DemoResult(root, report, time.perf_counter() - start)


def summary_text(result: DemoResult) -> str:
    """Row counts of every table, the stage summary, and the sample queries with their results."""
    import polars as pl

    lines = [f"skydp demo: repository {result.repo} ({result.seconds:.0f} s)", "", result.report.table(), ""]
    with Catalog(result.repo) as catalog:
        counts = {t: catalog.sql(f'SELECT count(*) AS n FROM "{t}"')["n"][0] for t in CATALOG_TABLES}
        lines.append("rows per table: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
        for title, query in SAMPLE_QUERIES:
            with pl.Config(tbl_rows=20, tbl_cols=12, fmt_str_lengths=70, tbl_hide_dataframe_shape=True):
                lines += ["", f"-- {title}", " ".join(query.split()), str(catalog.sql(query))]
    lines += ["", f"Query it yourself: duckdb -readonly {result.repo / 'catalog.duckdb'}",
              f"or in Python: skydp.store.Catalog('{result.repo}').sql('SELECT ...')"]
    return "\n".join(lines)
