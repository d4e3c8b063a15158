"""Single-visit code on real data: SExtractor's own catalogue (sep_emmi_sextractor) and the LSST
pipeline's DETECTED plane on an HSC calexp (lsst_afw_hsc_calexp)."""

from __future__ import annotations

import warnings

import numpy as np
from astropy.io import fits
from scipy import ndimage

from conftest import shared_data
from skydp.exposure import read_exposure
from skydp.pipeline import process_visit_image
from skydp.pipeline.apertures import ApertureSummer
from skydp.pipeline.background import estimate_background
from skydp.pipeline.detection import detect
from test_pipeline_scene import truth_match


def test_sextractor_equivalent_detection_and_apertures():
    """default.sex settings: BACK_SIZE 64, BACK_FILTERSIZE 3, 3x3 normalised filter, 1.5 sigma of the
    global RMS, minarea 5, no deblending (DEBLEND_MINCONT 1), FLUX_APER diameter 10 px."""
    folder = shared_data("sep_emmi_sextractor")
    image = fits.getdata(folder / "image.fits").astype(np.float32)
    cat = np.loadtxt(folder / "image.cat", comments="#")
    sx, sy, flux_aper = cat[:, 1] - 1.0, cat[:, 2] - 1.0, cat[:, 12]  # 1-based -> 0-based

    bkg = estimate_background(image, np.zeros(image.shape, bool), mesh=64, filter_size=3)
    back = bkg.image()
    ref_back = fits.getdata(folder / "back.fits")
    print(f"background vs SExtractor back.fits: max |diff| / rms = "
          f"{np.max(np.abs(back - ref_back)) / np.median(bkg.rms):.4f}")
    sub = image - back
    rms = float(np.median(bkg.rms))  # SExtractor thresholds against the global background RMS
    conv = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32)
    filtered = ndimage.correlate(sub, conv / conv.sum(), mode="constant")
    found = detect(filtered / rms, 1.5, min_area=5, grow_radius=0.0, deblend=False, deblend_nthresh=32,
                   deblend_cont=1.0)
    # isophotal barycentres on the unfiltered image within each footprint (SExtractor X_IMAGE)
    labels = np.arange(1, len(found.x) + 1)
    weights = np.where(found.segmap > 0, sub, 0)
    cy, cx = np.array(ndimage.center_of_mass(weights, found.segmap, labels)).T
    m = truth_match(cx, cy, sx, sy, radius=1.0)
    frac = np.mean(m >= 0)
    offset = np.hypot(cx[m[m >= 0]] - sx[m >= 0], cy[m[m >= 0]] - sy[m >= 0])
    print(f"SExtractor objects matched within 1 px: {frac:.3f} ({np.sum(m >= 0)}/{len(sx)}), "
          f"ours {len(cx)}; median centroid offset {np.median(offset):.4f} px")
    assert frac >= 0.95
    assert np.median(offset) <= 0.1

    ok = m >= 0
    summer = ApertureSummer(sub, np.full(image.shape, rms**2, np.float32), np.zeros(image.shape, bool))
    flux, _, flag = summer.fluxes(sx[ok], sy[ok], (5.0,))
    ratio = flux[:, 0] / flux_aper[ok]
    print(f"r=5 aperture / FLUX_APER: median {np.median(ratio):.5f}, n={ok.sum()}")
    assert abs(np.median(ratio) - 1) <= 0.01


def test_hsc_calexp_detected_regions_are_recovered():
    path = shared_data("lsst_afw_hsc_calexp", "HSC-0908120-056-small.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exposure = read_exposure(path)
    result = process_visit_image(exposure)
    lsst_detected = exposure.mask.get("DETECTED")
    regions, n = ndimage.label(lsst_detected, structure=np.ones((3, 3), bool))
    area = np.bincount(regions.ravel())
    big = np.flatnonzero(area >= 5)
    big = big[big > 0]
    t = result.sources
    real = ~t["sky_source"].to_numpy(zero_copy_only=False)
    ix = np.floor(t["x"].to_numpy()[real] - exposure.xy0[0] + 0.5).astype(int)
    iy = np.floor(t["y"].to_numpy()[real] - exposure.xy0[1] + 0.5).astype(int)
    inside = (ix >= 0) & (ix < exposure.width) & (iy >= 0) & (iy < exposure.height)
    hit = np.isin(big, regions[iy[inside], ix[inside]])
    print(f"LSST DETECTED regions (area >= 5 px): {len(big)}; containing one of our {real.sum()} "
          f"detections: {hit.mean():.3f}; our DETECTED px {result.exposure.mask.get('DETECTED').sum()} "
          f"vs LSST {lsst_detected.sum()}")
    assert len(big) >= 10
    assert hit.mean() >= 0.90
    # the input's LSST planes are kept (NO_DATA is bit 9 in HSC files)
    assert result.exposure.mask.planes["NO_DATA"] == 9
