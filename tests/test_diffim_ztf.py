"""Our subtraction on real ZTF alert triplets against the ZTF (IPAC, ZOGY) difference photometry.

Each alert carries 63 x 63 science and template cut-outs (DN, no WCS, sky not subtracted; the
template already resampled to the science grid and scaled to its zero point) and IPAC's
measurements of the candidate at the centre: ``isdiffpos`` (sign of science - template) and
``magap`` (14 px diameter aperture on the difference, zero point ``magzpsci``). We subtract the
template cut-out from the science cut-out with ``subtract_images`` and measure the same aperture.

Setup of the subtraction, and why:
- Both cut-outs get one shared TAN WCS (1.01"/px), so no warp is done: they are on one grid.
- Sky: each cut-out's 3-sigma-clipped median; variance: its clipped pixel variance (no gain is given).
- PSF: estimated on each cut-out, a Gaussian of the median adaptive-moment size of its compact
  sources (a 63 px stamp holds one to six; too few for the pixelized PSF estimator).
- ``flux_ratio=1``: the template is calibrated to the science zero point (subtracting it without any
  matching already reproduces ``magap``), and a stamp's stars cannot fit the scale: its brightest
  source is often the candidate itself, which a free kernel sum scales away.
- ``mode="template"``: the template is the deep co-add (its pixel noise is 4-10x lower); the PSF
  estimates from one or two stars are too rough to choose the direction.
- 7 px kernel: LSST's minimum of 21 px is 4.2" at 0.2"/px; at ZTF's 1"/px the same kernel is ~5 px.
"""

from __future__ import annotations

import gzip
import io
import warnings

import fastavro
import numpy as np
import pytest
import sep
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS
from conftest import shared_data

from skydp.diffim import DiffimConfig, subtract_images
from skydp.exposure import Exposure, Mask, PixelPsf, VisitInfo
from skydp.pipeline.apertures import ApertureSummer
from skydp.pipeline.moments import adaptive_moments
from skydp.pipeline.psf_estimation import gaussian_psf

ZTF = "ztf_alert_triplets"
CENTRE = 31  # 0-based centre pixel of a 63 x 63 cut-out
APERTURE_RADIUS = 7.0  # magap: 14 px diameter
PIXEL_SCALE = 1.01  # arcsec
CONFIG = DiffimConfig(flux_ratio=1.0, mode="template", kernel_min_size=7, kernel_max_size=7)


def _alerts() -> list[dict]:
    records = []
    for path in sorted(shared_data(ZTF).glob("*.avro")):
        with open(path, "rb") as handle:
            records.extend(fastavro.reader(handle))
    return records


def _cutout(alert: dict, name: str) -> np.ndarray:
    with warnings.catch_warnings():  # the stamps' SIMPLE card is not standard-conforming
        warnings.simplefilter("ignore")
        with fits.open(io.BytesIO(gzip.decompress(alert[name]["stampData"]))) as hdul:
            return np.asarray(hdul[0].data, dtype=np.float32)


def _stamp_psf_sigma(image: np.ndarray, std: float) -> float | None:
    """Median adaptive-moment determinant radius (px) of the unflagged sources peaking above 5 sigma
    at least 8 px from the edge; None when there is none."""
    half = 8
    work = np.ascontiguousarray(np.nan_to_num(image), dtype=np.float64)
    objects = sep.extract(work, 3.0, err=std, minarea=5)
    ny, nx = image.shape
    keep = ((objects["flag"] == 0) & (objects["cpeak"] > 5 * std) & (objects["x"] >= half)
            & (objects["x"] < nx - half - 1) & (objects["y"] >= half) & (objects["y"] < ny - half - 1))
    x, y = objects["x"][keep], objects["y"][keep]
    if x.size == 0:
        return None
    cx, cy = np.round(x).astype(int), np.round(y).astype(int)
    stamps = np.array([work[j - half:j + half + 1, i - half:i + half + 1] for i, j in zip(cx, cy)])
    mom = adaptive_moments(stamps, np.ones_like(stamps), np.ones(stamps.shape, bool), x - cx, y - cy,
                           np.ones(x.size))
    sigma = (mom.ixx * mom.iyy - mom.ixy**2) ** 0.25
    sigma = sigma[~mom.flag & np.isfinite(sigma) & (sigma > 0.5)]
    return float(np.median(sigma)) if sigma.size else None


def _exposures(alert: dict) -> tuple[Exposure, Exposure] | None:
    """Science and template exposures on one TAN grid, or None when a cut-out is edge-truncated
    or neither holds a usable source for the PSF (the other's PSF is used when only one has none)."""
    c = alert["candidate"]
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-PIXEL_SCALE / 3600, PIXEL_SCALE / 3600]
    wcs.wcs.crval = [c["ra"], c["dec"]]
    wcs.wcs.crpix = [CENTRE + 1, CENTRE + 1]
    planes = []
    for name in ("cutoutScience", "cutoutTemplate"):
        image = _cutout(alert, name)
        if image.shape != (63, 63):
            return None
        bad = ~np.isfinite(image)
        _, sky, std = sigma_clipped_stats(image[~bad], sigma=3.0)
        planes.append((np.where(bad, np.nan, image - sky).astype(np.float32), bad, std))
    sigmas = [_stamp_psf_sigma(image, std) for image, _, std in planes]
    if sigmas[0] is None and sigmas[1] is None:
        return None
    sigmas = [s if s is not None else next(t for t in sigmas if t is not None) for s in sigmas]
    out = []
    for (image, bad, std), sigma in zip(planes, sigmas):
        mask = Mask.empty(image.shape)
        mask.set("NO_DATA", bad)
        psf: PixelPsf = gaussian_psf(2.3548 * sigma, 25, (CENTRE, CENTRE))
        out.append(Exposure(image, np.full(image.shape, std**2, dtype=np.float32), mask, wcs, psf,
                            info=VisitInfo(instrument="ZTF", band="gri"[c["fid"] - 1])))
    return out[0], out[1]


@pytest.fixture(scope="module")
def measured() -> list[tuple[dict, float]]:
    """(candidate, our aperture flux in DN at the candidate position) for every usable alert."""
    rows = []
    for alert in _alerts():
        made = _exposures(alert)
        if made is None:
            continue
        c = alert["candidate"]
        # the centre pixel 31 is ZTF's 1-based round(xpos): the candidate sits at 31 + the fraction
        x = np.array([CENTRE + c["xpos"] - np.round(c["xpos"])])
        y = np.array([CENTRE + c["ypos"] - np.round(c["ypos"])])
        # the candidate changed: keep it out of the kernel fit (see subtract_images)
        diff = subtract_images(*made, CONFIG, exclude=(x, y)).difference
        ok = np.isfinite(diff.image)
        summer = ApertureSummer(np.where(ok, diff.image, 0).astype(np.float32),
                                np.where(ok, diff.variance, 0).astype(np.float32), ~ok)
        flux, _, flag = summer.fluxes(x, y, (APERTURE_RADIUS,))
        assert not flag[0, 0]
        rows.append((c, float(flux[0, 0])))
    return rows


def test_ztf_sign_and_aperture_magnitude(measured):
    """Every sign agrees with ``isdiffpos``; the aperture magnitude agrees with ``magap`` within
    0.1 mag for at least 60 % of the alerts and for every alert whose IPAC aperture error
    ``sigmagap`` is below 0.05 mag, within the larger of 0.1 mag and 3 sigmagap everywhere, with
    median |dmag| <= 0.06 and median dmag within +-0.03.

    The two differences share the science noise but not the template noise nor the matching
    kernel, so their faint-candidate magnitudes differ by up to about sigmagap (0.1-0.8 mag for most
    alerts). Measured with the candidate excluded from the kernel fit: signs 30/30, 67 % within
    0.1 mag, median |dmag| 0.047, median dmag +0.018 (without the exclusion: 53 %, 0.092, +0.037,
    the kernel absorbing a few per cent of the candidate; plain science - template: 77 %, 0.051, +0.009)."""
    assert len(measured) >= 25
    signs, dmag, sig = [], [], []
    for c, flux in measured:
        signs.append((flux > 0) == (c["isdiffpos"] == "t"))
        dmag.append(c["magzpsci"] - 2.5 * np.log10(abs(flux)) - c["magap"])
        sig.append(c["sigmagap"])
    dmag, sig = np.array(dmag), np.array(sig)
    for d, s in sorted(zip(dmag, sig), key=lambda t: t[1]):
        print(f"sigmagap {s:6.3f}  ours - magap {d:+.3f}")
    print(f"{len(measured)} alerts: signs agree {np.mean(signs):.0%}, median |dmag| {np.median(np.abs(dmag)):.3f}, "
          f"median dmag {np.median(dmag):+.3f}, within 0.1 mag {np.mean(np.abs(dmag) <= 0.1):.0%}")
    assert all(signs)
    precise = sig < 0.05
    assert precise.sum() >= 3 and np.all(np.abs(dmag[precise]) <= 0.1)
    assert np.all(np.abs(dmag) <= np.maximum(0.1, 3 * sig))
    assert np.mean(np.abs(dmag) <= 0.1) >= 0.6
    assert np.median(np.abs(dmag)) <= 0.06
    assert abs(np.median(dmag)) <= 0.03
