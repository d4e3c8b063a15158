"""The template of a visit image: template_coadd patches of one tract mosaicked on the tract grid and
cut to the image's footprint plus a margin. One function, used both by the ETL difference stage and by
the recreation of dropped difference images, so that the two cannot build different templates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from skydp.coadd.mosaic import mosaic_patches
from skydp.exposure import Exposure, read_exposure
from skydp.skymap import DEFAULT_SKYMAP, SkyMap

TEMPLATE_MARGIN = 64  # px of template kept around the detector for the matching kernel and the warp


def template_for(science: Exposure, tract: int, patches: Sequence[int], paths: Sequence[str | Path],
                 skymap: SkyMap = DEFAULT_SKYMAP, margin: int = TEMPLATE_MARGIN) -> Exposure:
    """The template patches ``patches`` of ``tract`` (FITS files ``paths``, in the same order)
    mosaicked on their tract grid and cut to the science image's footprint grown by ``margin`` px."""
    if len(patches) != len(paths) or not patches:
        raise ValueError(f"template_for: {len(patches)} patch id(s) for {len(paths)} template file(s)")
    infos = [skymap.patch_info(tract, p) for p in patches]
    ra, dec = science.corners()
    x, y = infos[0].wcs.world_to_pixel_values(ra, dec)
    x, y = np.asarray(x) + infos[0].xy0[0], np.asarray(y) + infos[0].xy0[1]
    bbox = (int(np.floor(x.min())) - margin, int(np.floor(y.min())) - margin,
            int(np.ceil(x.max())) + margin, int(np.ceil(y.max())) + margin)
    return mosaic_patches([(info, read_exposure(p)) for info, p in zip(infos, paths)], bbox)


def choose_template_tract(corners: tuple[np.ndarray, np.ndarray], available: Mapping[int, Sequence[int]],
                          skymap: SkyMap = DEFAULT_SKYMAP) -> int:
    """The tract whose available template patches (``available``: tract -> patch ids) cover most of
    an image with these corners (ll, ul, ur, lr); among equals the one with more patches, then the
    lower id. A template comes from one tract, whose patches share a pixel grid. Counting patches
    alone, as before, chose a tract that leaves part of the detector without template for ~3.5% of
    random 4k x 4k detectors on the default sky map, where the tract holding the centre covers all."""
    if not available:
        raise ValueError("choose_template_tract: no template patches available")
    return max(sorted(available), key=lambda t: (skymap.coverage(t, available[t], *corners), len(available[t])))
