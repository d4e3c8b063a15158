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

Agreement with ``magap`` is read against the expected scatter of what the two differences do not
share (our stamp-fitted kernel and sky, the noise filtering, magap's own recipe), estimated per alert
from the cut-outs themselves (see the test's docstring).
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
from scipy.special import erf

from skydp.diffim import DiffimConfig, subtract_images
from skydp.diffim.kernel_basis import AlardLuptonBasis
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


def _ipac_difference(alert: dict) -> np.ndarray:
    """IPAC's difference cut-out as science - template (flipped for isdiffpos 'f', whose stamp is
    template - science) minus its 3-sigma-clipped median: the sky recipe with which a 7 px aperture
    on this stamp best reproduces ``magap`` (28/30 within 0.1 mag, robust scatter 0.027 mag)."""
    image = _cutout(alert, "cutoutDifference").astype(np.float64)
    image = image if alert["candidate"]["isdiffpos"] == "t" else -image
    return image - sigma_clipped_stats(image[np.isfinite(image)], sigma=3.0)[1]


def _sum_circle(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact 7 px aperture sums (sep) at 0-based positions; NaN pixels count as 0."""
    work = np.ascontiguousarray(np.nan_to_num(image), dtype=np.float64)
    return sep.sum_circle(work, np.asarray(x, float), np.asarray(y, float), APERTURE_RADIUS, subpix=0)[0]


def _kernel_flux_error(science: Exposure, template: Exposure, kernel_basis: AlardLuptonBasis, x: float,
                       y: float) -> float:
    """Standard error (DN) that the kernel fit puts into the candidate's aperture flux.

    The cut-out fit is reference = template (x) K + b with K = B'_0 + sum_k c_k B'_k (kernel sum fixed)
    and a constant b, on the whole stamp less the kernel border and the candidate disc. This is that
    least-squares problem re-posed independently of ``subtract_images`` (no noise correction or pixel
    clipping), used only for its covariance: the flux derivatives g_k = aperture sum of B'_k (x) T and
    of b, and var F = g^T Cov g with Cov the inverse normal matrix times max(1, chi^2/dof).
    """
    h = kernel_basis.half
    tmpl = np.nan_to_num(template.image.astype(np.float64))
    terms = kernel_basis.convolve_stamps(tmpl[None])[0]  # (K, n - 2h, n - 2h)
    columns = np.zeros((terms.shape[0],) + tmpl.shape)  # the free terms B'_1.. and the constant b
    columns[:-1, h:-h, h:-h] = terms[1:]
    columns[-1, h:-h, h:-h] = 1.0
    target = np.nan_to_num(science.image.astype(np.float64))
    target[h:-h, h:-h] -= terms[0]
    yy, xx = np.mgrid[0:tmpl.shape[0], 0:tmpl.shape[1]]
    fwhm = 2.3548 * science.psf.shape(x, y).sigma
    fit = np.zeros(tmpl.shape, bool)
    fit[h:-h, h:-h] = True
    fit &= np.isfinite(science.image) & np.isfinite(template.image)
    fit &= np.hypot(xx - x, yy - y) > CONFIG.exclude_radius * fwhm
    design = columns[:, fit]
    variance = float(science.variance[fit].mean() + template.variance[fit].mean())
    normal = design @ design.T / variance
    theta = np.linalg.solve(normal, design @ target[fit] / variance)
    chi2 = np.sum((target[fit] - theta @ design) ** 2) / variance / (fit.sum() - theta.size)
    grad = np.array([_sum_circle(c, [x], [y])[0] for c in columns])
    return float(np.sqrt(grad @ np.linalg.solve(normal, grad) * max(chi2, 1.0)))


def _mixing_flux_error(ours: np.ndarray, ipac: np.ndarray, x: float, y: float) -> float:
    """Robust std (DN) of the 7 px aperture sums of (our difference - IPAC's) on a 1-px grid of
    centres more than 2 apertures from the candidate and 10 px from the edges: what the two
    differences do not share on blank sky (noise filtering, template noise through each kernel)."""
    n = ours.shape[0]
    yy, xx = np.mgrid[10:n - 10, 10:n - 10].astype(np.float64)
    far = np.hypot(xx - x, yy - y) > 2 * APERTURE_RADIUS
    sums = _sum_circle(ours - ipac, xx[far], yy[far])
    return float(1.4826 * np.median(np.abs(sums - np.median(sums))))


@pytest.fixture(scope="module")
def measured() -> list[dict]:
    """Per usable alert: the candidate, our aperture flux (DN) at it, the same aperture on IPAC's
    difference, and the kernel-fit and noise-mixing flux errors (DN)."""
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
        result = subtract_images(*made, CONFIG, exclude=(x, y))
        diff = result.difference
        ok = np.isfinite(diff.image)
        summer = ApertureSummer(np.where(ok, diff.image, 0).astype(np.float32),
                                np.where(ok, diff.variance, 0).astype(np.float32), ~ok)
        flux, _, flag = summer.fluxes(x, y, (APERTURE_RADIUS,))
        assert not flag[0, 0]
        ipac = _ipac_difference(alert)
        rows.append({"candidate": c, "flux": float(flux[0, 0]), "ipac_flux": float(_sum_circle(ipac, x, y)[0]),
                     "kernel_error": _kernel_flux_error(*made, result.kernel.basis, x[0], y[0]),
                     "mixing_error": _mixing_flux_error(np.where(ok, diff.image, 0.0), ipac, x[0], y[0])})
    return rows


def _magnitude_offset(flux: float, c: dict) -> float:
    return c["magzpsci"] - 2.5 * np.log10(abs(flux)) - c["magap"]


def test_ztf_sign_and_aperture_magnitude(measured):
    """Every sign agrees with ``isdiffpos``; ours - magap is within 0.1 mag for the alerts with
    sigmagap < 0.05 and for >= 60 % of all, and within the larger of 0.1 mag and 3 sigma for >= 90 %,
    sigma the expected scatter of ours - magap from what the two measurements do not share; median
    |dmag| <= 0.06, median dmag within +-0.03, robust std of dmag / sigma in 0.7-1.5.

    The two differences share the science AND template pixels (the cut-outs are IPAC's own inputs)
    and the aperture, so sigmagap (0.1-0.8 mag, mostly science and template noise) is far larger
    than their expected disagreement. Not shared, per alert, in magnitudes of the magap flux:
    - our kernel fit (``_kernel_flux_error``): the 7 px kernel and the constant sky are fitted on one
      63 px stamp, and their errors enter the candidate's aperture flux (host-galaxy light through
      the kernel terms, the stamp's sky through the constant): median 0.043 mag, 0.09-0.26 on seven
      alerts, six of them with more than 2800 DN of template light in the aperture;
    - noise mixing (``_mixing_flux_error``): AL + decorrelation and ZOGY filter the shared noise
      differently; measured as the scatter of aperture sums of (ours - IPAC's difference) on blank
      sky: median 0.016 mag, at most 0.04;
    - magap's own recipe (sky, centring): the same aperture on IPAC's own difference stamp matches
      magap within 0.1 mag for 28/30 alerts, robust scatter 0.027 mag (the floor).
    Measured (candidate excluded from the kernel fit): signs 30/30; 67 % within 0.1 mag, where the
    scatter predicts 83 %; 27/30 within max(0.1, 3 sigma); dmag / sigma robust std 1.21; median |dmag|
    0.047, median dmag +0.018. The three beyond 3 sigma are systematic, not noise: a candidate on an
    elongated bright host (-0.40 mag, 3.2 sigma: the kernel reshapes the host), a variable star
    (+0.29 mag, 5.4 sigma: the kernel leaves a dipole on the star) and a faint candidate on blank sky
    (+0.25 mag, 3.6 sigma; IPAC's own stamp is +0.10 off magap there too).

    Alternatives tried on the same 30 alerts (within 0.1 mag of magap / of IPAC's stamp measured
    alike; current 67 % / 77 %): plain science - template 77 % / 80 %, but one sign wrong and up to
    2.9 mag off where the seeing changed under a host; ZOGY's D from the stamps' Gaussian PSF sizes
    67 % / 70 %; a Gaussian kernel from those sizes 70 % / 67 %; AL basis degrees (0,0,0), (1,1,1),
    (2,0,0) or only even (shift-free) terms 67-77 % / 70-77 %; kernel 5 or 9 px 67 %; exclusion radius
    1.0 / 2.5 / 3.0 FWHM 63 / 70 / 57 %; the AL kernel only where it beats a delta kernel by BIC 77 %
    (the plain failures return); the sky of our difference re-estimated as IPAC's stamp 67 % / 80 %.
    None is better beyond the +-2-alert scatter of the choice itself (by BIC, the 26 free kernel terms
    lower chi^2 outside the candidate enough over a delta kernel on only 13 of the 30 stamps): a 63 px stamp holds too little to pin
    the kernel, and 0.1 mag for every alert is not reachable from the cut-outs alone (sigma > 0.05 mag
    for 16 of 30)."""
    assert len(measured) >= 25
    signs, dmag, kernel, mixing = [], [], [], []
    floor = _magap_recipe_floor(measured)
    for row in measured:
        c = row["candidate"]
        signs.append((row["flux"] > 0) == (c["isdiffpos"] == "t"))
        dmag.append(_magnitude_offset(row["flux"], c))
        magap_flux = 10 ** (-0.4 * (c["magap"] - c["magzpsci"]))
        kernel.append(1.0857 * row["kernel_error"] / magap_flux)
        mixing.append(1.0857 * row["mixing_error"] / magap_flux)
    dmag, kernel, mixing = np.array(dmag), np.array(kernel), np.array(mixing)
    sigma = np.sqrt(kernel**2 + mixing**2 + floor**2)
    sigmagap = np.array([row["candidate"]["sigmagap"] for row in measured])
    pull = dmag / sigma
    expected = np.mean(erf(0.1 / (np.sqrt(2) * sigma)))
    for g, d, s, k, m in sorted(zip(sigmagap, dmag, sigma, kernel, mixing)):
        print(f"sigmagap {g:6.3f}  ours - magap {d:+.3f}  sigma {s:.3f} (kernel fit {k:.3f}, mixing {m:.3f})")
    print(f"{len(measured)} alerts: signs agree {np.mean(signs):.0%}, median |dmag| {np.median(np.abs(dmag)):.3f}, "
          f"median dmag {np.median(dmag):+.3f}, within 0.1 mag {np.mean(np.abs(dmag) <= 0.1):.0%} (expected "
          f"{expected:.0%}), within max(0.1, 3 sigma) {np.mean(np.abs(dmag) <= np.maximum(0.1, 3 * sigma)):.0%}, "
          f"median sigma {np.median(sigma):.3f} (kernel fit {np.median(kernel):.3f}, mixing {np.median(mixing):.3f}, "
          f"floor {floor:.3f}), pull robust std {_robust_std(pull):.2f}")
    assert all(signs)
    precise = sigmagap < 0.05
    assert precise.sum() >= 3 and np.all(np.abs(dmag[precise]) <= 0.1)
    assert np.mean(np.abs(dmag) <= np.maximum(0.1, 3 * sigma)) >= 0.9
    assert np.mean(np.abs(dmag) <= 0.1) >= 0.6
    assert np.median(np.abs(dmag)) <= 0.06
    assert abs(np.median(dmag)) <= 0.03
    assert 0.7 <= _robust_std(pull) <= 1.5


def _magap_recipe_floor(measured: list[dict]) -> float:
    """Robust std (mag) of IPAC's own difference stamp, measured as ours, against magap."""
    return _robust_std(np.array([_magnitude_offset(row["ipac_flux"], row["candidate"]) for row in measured]))


def _robust_std(values: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(values - np.median(values))))
