"""A coadd on disk: the Exposure file with its per-pixel input count as an extra INPUTCOUNT HDU,
and its table of inputs as Parquet beside it (list columns do not fit a FITS table cleanly)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
from astropy.io import fits

from skydp.coadd.stack import Coadd
from skydp.exposure import read_exposure, write_exposure

INPUT_COUNT_HDU = "INPUTCOUNT"


def write_coadd(coadd: Coadd, image_path: str | os.PathLike, inputs_path: str | os.PathLike) -> None:
    """Write the coadd Exposure (with INPUTCOUNT) and its inputs table."""
    count = fits.ImageHDU(coadd.input_count.astype(np.int16), name=INPUT_COUNT_HDU)
    write_exposure(coadd.exposure, image_path, extra_hdus=[count])
    pq.write_table(coadd.inputs, inputs_path)


def read_coadd(image_path: str | os.PathLike, inputs_path: str | os.PathLike) -> Coadd:
    """Inverse of ``write_coadd``."""
    exposure = read_exposure(image_path)
    with fits.open(image_path) as hdus:
        if INPUT_COUNT_HDU not in hdus:
            raise ValueError(f"{image_path}: no {INPUT_COUNT_HDU} HDU; not a coadd written by write_coadd")
        count = hdus[INPUT_COUNT_HDU].data.astype(np.int32)
    return Coadd(exposure=exposure, input_count=count, inputs=pq.read_table(inputs_path))
