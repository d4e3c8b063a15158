"""Fit a spatially varying Alard-Lupton matching kernel and apply it to a whole image.

Model (LSST ``AlardLuptonSubtractTask`` with its overrides): reference = convolved image (x) K(x, y)
+ B(x, y), K(x, y) = sum_k c_k(x, y) B'_k with c_k polynomials of order ``kernel_order`` in x, y,
except c_0, which is constant so that the kernel sum (the photometric scale) is the same everywhere
(the other basis kernels sum to zero), and B a polynomial of order ``background_order``.

The fit uses stamps around stars: the reference stamp (S x S) against the convolved-image stamp
grown by the kernel half-size, both unmasked; the kernel polynomial is evaluated at the star (the
kernel is constant over one stamp), the background at every pixel. Per-stamp normal equations are
summed into one linear system (85 unknowns for the defaults); stamps whose chi^2 per pixel under
the global solution lies ``clip_sigma`` robust sigmas above the median (blends, bad pixels), or whose
own kernel sum is a ``clip_sigma`` outlier (variable stars: LSST's kernel-sum clipping), are dropped
and the system re-solved. When there are too few stars for a spatially
varying fit (30) on a small image (cut-outs, up to 640 x 640 px), or fewer than ``min_stars``,
the whole overlap region is one stamp with spatially constant kernel and background, and pixels
with residuals above 5 sigma and 10 % of the pixel value (transients, cosmic rays) are clipped instead.

Applying it costs one FFT convolution per spatial term: X (x) K(x, y) evaluated at (x, y) equals
sum_m p_m(x, y) (X (x) K_m) with K_m = sum_k theta_km B'_k, exactly, because the polynomials are
evaluated at the output pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage
from scipy.spatial import cKDTree

from skydp.diffim.kernel_basis import AlardLuptonBasis
from skydp.pipeline.detection import detect, snr_image
from skydp.pipeline.stamps import StampCutter

PIXEL_CLIP_SIGMA = 5.0  # whole-image fallback: residual pixels beyond this ...
PIXEL_CLIP_FRACTION = 0.1  # ... and beyond this fraction of the reference pixel are excluded
MAX_WHOLE_IMAGE_PIXELS = 640 * 640  # the whole-image fit holds ~3 n_kernels copies of the image
STARS_PER_SPATIAL_TERM = 10  # fewer stars: the kernel's spatial order is lowered
MIN_CELLS_PER_AXIS = 4  # star-selection cells shrink on small images to keep this many per axis
MAX_NOISE_CORRECTION = 0.9  # at most this fraction of the way to a singular noise-corrected system


class KernelFitError(ValueError):
    """The matching kernel could not be fitted (too few usable pixels or stars)."""


def poly_terms(order: int) -> list[tuple[int, int]]:
    """Exponents (a, b) of x^a y^b for a 2-D polynomial of total order ``order`` (none for -1)."""
    return [(a, t - a) for t in range(order + 1) for a in range(t, -1, -1)]


def poly_values(x: np.ndarray, y: np.ndarray, order: int, shape: tuple[int, int]) -> np.ndarray:
    """(n_terms,) + x.shape monomials in coordinates scaled to [-1, 1] over an image of ``shape``."""
    u = _scaled(np.asarray(x, dtype=np.float64), shape[1])
    v = _scaled(np.asarray(y, dtype=np.float64), shape[0])
    return np.array([u**a * v**b for a, b in poly_terms(order)]).reshape((-1,) + np.shape(u))


@dataclass
class KernelSolution:
    """A fitted matching kernel: ``coefficients[k, m]`` multiplies B'_k p_m(x, y) (column 0 only
    for k = 0), ``background[l]`` multiplies the l-th background monomial. Positions are ARRAY pixels
    of an image of ``shape``."""

    basis: AlardLuptonBasis
    coefficients: np.ndarray
    background: np.ndarray
    kernel_order: int
    background_order: int
    shape: tuple[int, int]
    star_x: np.ndarray  # array-frame centres of the stamps kept in the final fit
    star_y: np.ndarray
    n_rejected: int
    chi2_per_pixel: float  # median over the kept stamps

    @property
    def spatial_kernels(self) -> np.ndarray:
        """(n_spatial_terms, size, size) kernel images K_m; K(x, y) = sum_m p_m(x, y) K_m."""
        return np.einsum("km,kij->mij", self.coefficients, self.basis.images())

    def kernel_image(self, x: float, y: float) -> np.ndarray:
        """Kernel image at array position (x, y), indexed [v + h, u + h], applied by convolution."""
        return self.kernel_images(np.array([x]), np.array([y]))[0]

    def kernel_images(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(N, size, size) kernel images at array positions (x, y), as ``kernel_image``."""
        p = poly_values(np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel(),
                        self.kernel_order, self.shape)
        return np.einsum("mn,mij->nij", p, self.spatial_kernels)

    @property
    def kernel_sum(self) -> float:
        """Photometric scale of the convolved image (the same everywhere by construction)."""
        return float(self.coefficients[0, 0])

    def background_image(self) -> np.ndarray:
        """The fitted differential background (ny, nx) float32."""
        ny, nx = self.shape
        out = np.zeros(self.shape, dtype=np.float32)
        if self.background.size == 0:
            return out
        v = _scaled(np.arange(ny, dtype=np.float64), ny)
        u = _scaled(np.arange(nx, dtype=np.float64), nx)
        rows: dict[int, np.ndarray] = {}  # sum over a of coef u^a, per power b of v
        for coef, (a, b) in zip(self.background, poly_terms(self.background_order)):
            rows[b] = rows.get(b, 0.0) + coef * u**a
        for b, row in rows.items():
            out += np.outer(v**b, row).astype(np.float32)
        return out

    def convolve(self, image: np.ndarray) -> np.ndarray:
        """image (x) K(x, y), float32, with zero padding outside the image (the NO_DATA border is the caller's).

        Single-precision FFTs (half the time of double; the error, ~3e-7 of the largest pixel, is far
        below the noise), one forward transform of the image shared by the spatial terms.
        """
        kernels = self.spatial_kernels.astype(np.float32)
        ny, nx = image.shape
        size = self.basis.size
        h = size // 2
        fy, fx = scipy.fft.next_fast_len(ny + size - 1, real=True), scipy.fft.next_fast_len(nx + size - 1, real=True)
        spectrum = scipy.fft.rfft2(image.astype(np.float32, copy=False), s=(fy, fx))
        out = np.zeros((ny, nx), dtype=np.float32)
        for m, (a, b) in enumerate(poly_terms(self.kernel_order)):
            conv = scipy.fft.irfft2(spectrum * scipy.fft.rfft2(kernels[m], s=(fy, fx)), s=(fy, fx))[h:h + ny, h:h + nx]
            if a == 0 and b == 0:
                out += conv
            else:
                out += conv * (_scaled(np.arange(ny), ny)[:, None] ** b * _scaled(np.arange(nx), nx)[None, :] ** a
                               ).astype(np.float32)
        return out


def _kernel_sum_outliers(scaled: np.ndarray, resid: np.ndarray, weight: np.ndarray, active: np.ndarray,
                         clip_sigma: float) -> np.ndarray:
    """Stamps whose own photometric scale is an outlier (LSST's kernel-sum clipping).

    Each stamp's kernel-sum correction is the weighted least-squares amplitude of its residual along
    ``scaled`` (its convolved image times B'_0, the kernel-sum direction), in units of its own
    statistical error; stamps more than ``clip_sigma`` robust sigmas from the median are outliers.
    A variable star changing by a few per cent barely raises a stamp's chi^2 per pixel but shifts
    its scale by many sigma, and one bright one biases the common kernel sum.
    """
    power = np.einsum("np,np->n", weight, scaled * scaled)
    with np.errstate(invalid="ignore", divide="ignore"):
        pull = np.einsum("np,np->n", weight, scaled * resid) / np.sqrt(power)
    ok = active & np.isfinite(pull)
    if ok.sum() < 3:
        return np.zeros(len(pull), dtype=bool)
    med = np.median(pull[ok])
    spread = 1.4826 * np.median(np.abs(pull[ok] - med))
    return ok & (np.abs(pull - med) > clip_sigma * max(spread, 1.0))


def _correction_scale(measured: np.ndarray, noise: np.ndarray) -> float:
    """Largest fraction (<= 1) of the expected noise matrix that can be subtracted from the measured
    normal matrix leaving it safely positive definite.

    measured - a noise is positive definite for a < 1 / rho, rho the largest eigenvalue of
    L^-1 noise L^-T (L the Cholesky factor of measured). Along basis directions where the template
    stamps hold almost no signal (the high-order terms, rho -> 1) the full correction would leave a
    singular system; there the correction is scaled down rather than dropped.
    """
    try:
        chol = np.linalg.cholesky(measured)
    except np.linalg.LinAlgError:
        return 0.0
    half = np.linalg.solve(chol, noise)
    rho = float(np.linalg.eigvalsh(np.linalg.solve(chol, half.T).T).max())
    return min(1.0, MAX_NOISE_CORRECTION / rho) if rho > 0 else 1.0


def _solve(normal: np.ndarray, vector: np.ndarray, fixed_first: float | None) -> np.ndarray:
    """Solution of the normal equations, with the first parameter held at ``fixed_first`` if given
    (the partitioned system: its column moves to the right-hand side)."""
    free = slice(0 if fixed_first is None else 1, None)
    rhs = vector[free] if fixed_first is None else vector[free] - normal[free, 0] * fixed_first
    try:
        sol = np.linalg.solve(normal[free, free], rhs)
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(normal[free, free], rhs, rcond=None)[0]
    return sol if fixed_first is None else np.r_[fixed_first, sol]


def _scaled(q: np.ndarray, n: int) -> np.ndarray:
    """Pixel coordinate 0..n-1 mapped to [-1, 1]: the variable of every spatial polynomial."""
    return (2.0 * q - (n - 1)) / max(n - 1, 1)


def select_kernel_stars(image: np.ndarray, variance: np.ndarray, bad: np.ndarray, sigma: float,
                        stamp_size: int, min_snr: float, max_snr: float, cell_size: int, per_cell: int,
                        max_stars: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer array-frame centres of up to ``max_stars`` kernel-fit sources.

    Sources are peaks of the PSF-smoothed S/N of ``image`` (after subtracting a sep mesh
    background) with ``min_snr`` <= S/N <= ``max_snr``, with no unusable pixel (``bad``) within the
    stamp and no other detection with at least a tenth of their S/N closer than half a stamp;
    at most ``per_cell`` (the brightest) per ``cell_size`` cell (smaller on images under 4 cells
    across), cells filled round-robin.
    """
    import sep

    ny, nx = image.shape
    half = stamp_size // 2
    work = np.where(bad, 0.0, image).astype(np.float32)
    mesh = int(min(128, nx, ny))
    back = sep.Background(work, mask=bad, bw=mesh, bh=mesh, fw=3, fh=3).back(dtype=np.float32)
    work -= back
    work[bad] = 0
    snr = snr_image(work, np.where(bad, 0.0, variance).astype(np.float32), sigma)
    # deblended, so that a star blended with a neighbour fails the isolation test below
    found = detect(snr, min(5.0, min_snr), 1, 0.0, deblend=True, deblend_nthresh=32, deblend_cont=0.005)
    del snr, work
    if len(found.x) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # peak pixel of each footprint on the image itself (the barycentre may sit between pixels)
    cx = np.floor(found.x + 0.5).astype(np.int64)
    cy = np.floor(found.y + 0.5).astype(np.int64)
    snr_peak = found.peak_snr
    ok = (snr_peak >= min_snr) & (snr_peak <= max_snr)
    ok &= (cx >= half) & (cx < nx - half) & (cy >= half) & (cy < ny - half)
    # no unusable pixel in the stamp: summed-area table of the bad mask
    sat = np.zeros((ny + 1, nx + 1), dtype=np.int32)
    sat[1:, 1:] = np.cumsum(np.cumsum(bad, axis=0, dtype=np.int32), axis=1, dtype=np.int32)
    x0, x1 = np.clip(cx - half, 0, nx), np.clip(cx + half + 1, 0, nx)
    y0, y1 = np.clip(cy - half, 0, ny), np.clip(cy + half + 1, 0, ny)
    ok &= (sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]) == 0
    # isolation
    tree = cKDTree(np.column_stack([found.x, found.y]))
    for i in np.flatnonzero(ok):
        near = tree.query_ball_point([found.x[i], found.y[i]], half)
        if any(j != i and snr_peak[j] >= 0.1 * snr_peak[i] for j in near):
            ok[i] = False
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    cell_size = max(16, min(cell_size, min(nx, ny) // MIN_CELLS_PER_AXIS))  # small images: smaller cells
    cell = (cy[idx] // cell_size) * (nx // cell_size + 1) + cx[idx] // cell_size
    order = np.lexsort((-snr_peak[idx], cell))
    idx, cell = idx[order], cell[order]
    first = np.r_[True, cell[1:] != cell[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(idx.size), 0))
    rank = np.arange(idx.size) - start
    keep = rank < per_cell
    idx, rank = idx[keep], rank[keep]
    pick = idx[np.lexsort((-snr_peak[idx], rank))][:max_stars]
    return cx[pick], cy[pick]


def fit_matching_kernel(convolved: np.ndarray, reference: np.ndarray, convolved_variance: np.ndarray,
                        reference_variance: np.ndarray, bad: np.ndarray, basis: AlardLuptonBasis, star_x: np.ndarray, star_y: np.ndarray, fit_half: int,
                        kernel_order: int, background_order: int, min_stars: int, clip_sigma: float,
                        clip_iterations: int, kernel_sum: float | None = None) -> KernelSolution:
    """Fit reference ~ convolved (x) K + B on stamps at integer array centres (star_x, star_y).

    Pixels are weighted by 1 / (convolved_variance + reference_variance); ``bad`` marks pixels
    unusable in either image (the convolved image's unusable pixels must already be grown by the
    kernel half-size, or be set to 0). ``fit_half`` is the half-size of the reference stamps.

    Noise in the convolved image is noise in the regressors: plain least squares would then shrink
    the kernel's response at high spatial frequencies, where stars carry little signal (attenuation
    bias: a too-broad kernel, several per cent of PSF flux for a single-visit template). The expected
    noise part of the normal matrix, sum_p w_p var_p <B'_k, B'_l> for uncorrelated noise, is therefore
    subtracted (corrected least squares), scaled down where the full subtraction would leave the
    system (nearly) singular: the high-order basis terms see almost only noise in faint template
    stamps. (Dropping the correction there, as before, left the kernel sum 0.1-0.4 % low.)

    Stamps are clipped on their chi^2 per pixel and on their own kernel sum (``_kernel_sum_outliers``).

    ``kernel_sum`` fixes the photometric scale (the coefficient of B'_0) instead of fitting it: for
    images whose flux ratio is known from calibration and whose few stars cannot constrain it (a
    cut-out whose brightest source is the transient itself would otherwise be scaled away).
    """
    shape = reference.shape
    ny, nx = shape
    h = basis.half
    whole_image_ok = ny * nx <= MAX_WHOLE_IMAGE_PIXELS
    if len(star_x) >= min_stars and (len(star_x) >= STARS_PER_SPATIAL_TERM * 3 or not whole_image_ok):
        while kernel_order > 0 and len(star_x) < STARS_PER_SPATIAL_TERM * len(poly_terms(kernel_order)):
            kernel_order -= 1
        size = 2 * fit_half + 1
        cutter = StampCutter(fit_half + h + 1)
        cutter.add("x", convolved)
        cutter.add("y", reference)
        cutter.add("vx", convolved_variance)
        cutter.add("vy", reference_variance)
        cutter.add("bad", bad, fill=True)
        xs = cutter.cut("x", star_x, star_y, size + 2 * h).astype(np.float64)
        ys = cutter.cut("y", star_x, star_y, size).astype(np.float64)
        vx = cutter.cut("vx", star_x, star_y, size).astype(np.float64)
        vs = vx + cutter.cut("vy", star_x, star_y, size)
        bs = cutter.cut("bad", star_x, star_y, size)
        offs = np.arange(-fit_half, fit_half + 1)
        px = star_x[:, None, None] + offs[None, None, :] + 0 * offs[None, :, None]
        py = star_y[:, None, None] + offs[None, :, None] + 0 * offs[None, None, :]
        centres = (np.asarray(star_x, dtype=np.float64), np.asarray(star_y, dtype=np.float64))
        pixel_clip = False
    else:
        if not whole_image_ok:
            raise KernelFitError(f"only {len(star_x)} usable kernel stars (need {min_stars}) and the image "
                                 f"({nx} x {ny}) is too large to fit as a whole (> {MAX_WHOLE_IMAGE_PIXELS} px)")
        kernel_order, background_order = 0, min(background_order, 0)
        xs = convolved[None].astype(np.float64)
        ys = reference[None, h:ny - h, h:nx - h].astype(np.float64)
        vx = convolved_variance[None, h:ny - h, h:nx - h].astype(np.float64)
        vs = vx + reference_variance[None, h:ny - h, h:nx - h]
        bs = bad[None, h:ny - h, h:nx - h]
        yy, xx = np.mgrid[h:ny - h, h:nx - h]
        px, py = xx[None], yy[None]
        centres = (np.array([(nx - 1) / 2.0]), np.array([(ny - 1) / 2.0]))
        pixel_clip = True
    n = xs.shape[0]
    conv = basis.convolve_stamps(xs)  # (N, K, S, S)
    n_k = basis.n_kernels
    bg = poly_values(px, py, background_order, shape)  # (L_bg, N, S, S)
    design = np.concatenate([conv, np.moveaxis(bg, 0, 1)], axis=1).reshape(n, n_k + bg.shape[0], -1)
    target = ys.reshape(n, -1)
    good = (~bs & (vs > 0) & np.isfinite(vs) & np.isfinite(ys)).reshape(n, -1)
    weight = np.where(good, 1.0 / np.where(good, vs.reshape(n, -1), 1.0), 0.0)
    target = np.where(good, target, 0.0)

    # expansion of local (per-stamp) parameters to the global ones
    spatial = poly_values(*centres, kernel_order, shape).T  # (N, M)
    n_m = spatial.shape[1]
    n_bg = bg.shape[0]
    n_glob = 1 + (n_k - 1) * n_m + n_bg
    expand = np.zeros((n, n_k + n_bg, n_glob))
    expand[:, 0, 0] = 1.0
    for k in range(1, n_k):
        expand[:, k, 1 + (k - 1) * n_m:1 + k * n_m] = spatial
    expand[:, n_k:, n_glob - n_bg:] = np.eye(n_bg)[None]

    images = basis.images().reshape(n_k, -1)
    basis_overlap = images @ images.T
    active = np.ones(n, dtype=bool)
    n_good = good.sum(axis=1)
    for _ in range(max(clip_iterations, 0) + 1):
        dw = design * weight[:, None, :]
        gram = dw @ np.swapaxes(design, 1, 2)
        noise = np.zeros_like(gram)
        noise[:, :n_k, :n_k] = np.einsum("np,np->n", weight, vx.reshape(n, -1))[:, None, None] * basis_overlap
        rhs = np.einsum("nlp,np->nl", dw, target)
        measured = np.einsum("nla,nlb->ab", expand[active], gram[active] @ expand[active])
        expected_noise = np.einsum("nla,nlb->ab", expand[active], noise[active] @ expand[active])
        normal = measured - _correction_scale(measured, expected_noise) * expected_noise
        vector = np.einsum("nla,nl->a", expand[active], rhs[active])
        theta = _solve(normal, vector, kernel_sum)
        local = np.einsum("nla,a->nl", expand, theta)
        resid = target - np.einsum("nlp,nl->np", design, local)
        chi2 = resid * resid * weight
        if pixel_clip:
            # beyond 5 sigma AND 10 % of the reference pixel: transients and cosmic rays, not the
            # few-per-cent mismatch of bright stars (the variance may lack their photon noise)
            far = (chi2 > PIXEL_CLIP_SIGMA**2) & (np.abs(resid) > PIXEL_CLIP_FRACTION * np.abs(target))
            outlier = ndimage.binary_dilation(far.reshape(ys.shape[1:]), iterations=2)
            newly = outlier.ravel() & good[0]
            if not newly.any():
                break
            good[0] &= ~newly
            weight[0][newly] = 0.0
            continue
        per_pixel = chi2.sum(axis=1) / np.maximum(n_good, 1)
        med = np.median(per_pixel[active])
        mad = 1.4826 * np.median(np.abs(per_pixel[active] - med))
        reject = active & (per_pixel > med + clip_sigma * max(mad, 1e-3 * med))
        if kernel_sum is None:
            reject |= active & _kernel_sum_outliers(design[:, 0], resid, weight, active, clip_sigma)
        if not reject.any() or active.sum() - reject.sum() < max(3, min(min_stars, n)):
            break
        active &= ~reject
    if not np.all(np.isfinite(theta)):
        raise KernelFitError("the matching-kernel fit is singular")
    coefficients = np.zeros((n_k, n_m))
    coefficients[0, 0] = theta[0]
    coefficients[1:] = theta[1:1 + (n_k - 1) * n_m].reshape(n_k - 1, n_m)
    per_pixel = chi2.sum(axis=1) / np.maximum(good.sum(axis=1), 1)
    return KernelSolution(basis=basis, coefficients=coefficients, background=theta[n_glob - n_bg:],
                          kernel_order=kernel_order, background_order=background_order, shape=shape,
                          star_x=centres[0][active], star_y=centres[1][active], n_rejected=int((~active).sum()),
                          chi2_per_pixel=float(np.median(per_pixel[active])))
