"""Combine the two snap exposures of one visit and detector (as Rubin's SnapCombineTask)."""

from __future__ import annotations

import numpy as np

from skydp.exposure import Exposure


def combine_snaps(snaps: list[Exposure]) -> Exposure:
    """Sum images and variances and OR the masks of the snaps of one visit+detector.

    The result carries the first snap's WCS and PSF, the summed exposure time and the start
    time of the earliest snap; ``info.snap`` becomes None.
    """
    if not snaps:
        raise ValueError("combine_snaps: no exposures given")
    if len(snaps) == 1:
        return snaps[0].copy()
    first = snaps[0]
    for snap in snaps[1:]:
        if snap.shape != first.shape or tuple(snap.xy0) != tuple(first.xy0):
            raise ValueError(
                f"combine_snaps: snap {snap.info.snap} has shape {snap.shape} xy0 {snap.xy0}, "
                f"snap {first.info.snap} has {first.shape} xy0 {first.xy0}"
            )
        if (snap.info.visit, snap.info.detector) != (first.info.visit, first.info.detector):
            raise ValueError(
                "combine_snaps: snaps belong to different visit/detector: "
                f"{(first.info.visit, first.info.detector)} and {(snap.info.visit, snap.info.detector)}"
            )
    out = first.copy()
    out.image = np.sum([s.image for s in snaps], axis=0, dtype=np.float32)
    if any(s.variance is None for s in snaps):
        out.variance = None
    else:
        out.variance = np.sum([s.variance for s in snaps], axis=0, dtype=np.float32)
    for snap in snaps[1:]:
        for name in snap.mask.planes:
            out.mask.add_plane(name)
        for name, bit in snap.mask.planes.items():
            out.mask.array |= ((snap.mask.array >> bit) & 1).astype(np.int32) << out.mask.planes[name]
    out.info.exptime = float(sum(s.info.exptime for s in snaps))
    out.info.mjd = float(min(s.info.mjd for s in snaps))
    out.info.snap = None
    return out
