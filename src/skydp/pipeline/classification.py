"""Star/galaxy classification columns shared by Source and Object measurement."""

from __future__ import annotations

import numpy as np


def classify(cols: dict[str, np.ndarray], ratio: float) -> None:
    """Add extendedness and sizeExtendedness (with their flags) to measurement columns, in place.

    extendedness follows base_ClassificationExtendedness with GaussianFlux as the model flux: 1 when
    ``ratio * gaussianFlux >= psfFlux`` (psfFlux/gaussianFlux below ``ratio``), NaN when either flux
    is flagged. sizeExtendedness follows base_ClassificationSizeExtendedness: 1 - exp(-chi2/2) with
    chi2 = (T - T_psf)^2 / T_psf for the traces T of the source's and the PSF's second moments.
    """
    psf, gauss = cols["psfFlux"], cols["gaussianFlux"]
    ok = np.isfinite(psf) & np.isfinite(gauss) & ~cols["psfFlux_flag"] & ~cols["gaussianFlux_flag"]
    cols["extendedness"] = np.where(ok, (ratio * gauss >= psf).astype(float), np.nan)
    cols["extendedness_flag"] = ~ok
    trace = cols["ixx"] + cols["iyy"]
    trace_psf = cols["ixxPSF"] + cols["iyyPSF"]
    with np.errstate(invalid="ignore", divide="ignore"):
        size = 1.0 - np.exp(-0.5 * (trace - trace_psf) ** 2 / trace_psf)
    size_ok = np.isfinite(size)
    cols["sizeExtendedness"] = np.where(size_ok, size, np.nan)
    cols["sizeExtendedness_flag"] = ~size_ok
