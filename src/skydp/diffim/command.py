"""``skydp diff SCIENCE.fits TEMPLATE.fits -o DIFF.fits``: difference any pair of images with WCSs."""

from __future__ import annotations

from pathlib import Path

from skydp.diffim.config import DiffimConfig
from skydp.diffim.subtract import subtract_images
from skydp.exposure import read_exposure, write_exposure


def run_diff_cli(science: str | Path, template: str | Path, out: str | Path, dia_sources: str | Path | None = None,
                 config: DiffimConfig | None = None) -> str:
    """Write science - template (visit-image FITS contract) to ``out``; with ``dia_sources``, also the
    DiaSource table (Parquet) detected on it. Returns a one-line summary for the terminal.

    The template is warped onto the science grid when their WCSs differ. Images without a PSF HDU get
    one estimated from their stars, images without a variance plane are rejected (ValueError naming
    the file).
    """
    sci = read_exposure(science)
    tmp = read_exposure(template)
    try:
        diff = subtract_images(sci, tmp, config)
    except ValueError as exc:
        raise ValueError(f"skydp diff {science} {template}: {exc}") from exc
    summary = (f"{science} - {template}: convolved the {diff.convolved}, kernel sum {diff.kernel.kernel_sum:.4f}, "
               f"{len(diff.kernel.star_x)} kernel stars")
    if dia_sources is not None:
        import pyarrow.parquet as pq

        from skydp.diffim.dia_sources import detect_dia_sources

        table = detect_dia_sources(diff, sci, config)
        pq.write_table(table, dia_sources)
        summary += f", {table.num_rows} DiaSources -> {dia_sources}"
    write_exposure(diff.difference, out)
    return summary + f" -> {out}"
