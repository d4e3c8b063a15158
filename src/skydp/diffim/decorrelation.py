"""Noise decorrelation of an Alard-Lupton difference image (DMTN-021, LSST DecorrelateALKernelTask).

Convolving one image with the matching kernel K correlates its noise: the difference has noise
power s_v + t_v |K(k)|^2 (s_v: mean variance of the unconvolved image, t_v: of the convolved one).
Multiplying the difference in Fourier space by

    phi(k) = sqrt((s_v + t_v kappa^2) / (s_v + t_v |K(k)|^2)),   kappa = sum of K = K(0),

makes that power flat (white noise of variance s_v + t_v kappa^2 per pixel) and leaves fluxes
unchanged (phi(0) = 1). phi is evaluated once, with K at the image centre (spatially constant), and
applied as a real-space kernel; the difference PSF becomes the old PSF convolved with it.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy import signal

from skydp.exposure import PixelPsf


def decorrelation_kernel(kernel: np.ndarray, unconvolved_variance: float, convolved_variance: float,
                         size: int | None = None) -> np.ndarray:
    """Real-space decorrelation kernel (size x size, odd, sum 1, centred) for matching kernel ``kernel``."""
    if not (unconvolved_variance > 0 and convolved_variance >= 0):
        raise ValueError(f"decorrelation needs positive mean variances, got {unconvolved_variance}, {convolved_variance}")
    ks = kernel.shape[0]
    size = size or 2 * ks + 1
    size += 1 - size % 2
    padded = np.zeros((size, size))
    c, h = size // 2, ks // 2
    padded[c - h:c + h + 1, c - h:c + h + 1] = kernel
    k_hat = scipy.fft.fft2(scipy.fft.ifftshift(padded))
    kappa = kernel.sum()
    phi = np.sqrt((unconvolved_variance + convolved_variance * kappa**2)
                  / (unconvolved_variance + convolved_variance * np.abs(k_hat) ** 2))
    real = scipy.fft.fftshift(scipy.fft.ifft2(phi).real)
    return real / real.sum()


def convolved_noise_factor(psfs: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Variance factor of a PSF-weighted flux on white noise convolved by a kernel, per source.

    Noise of variance v convolved by K has per-pixel variance v sum(K^2) (what a matched template's
    variance plane holds) but covariance v A(d), A the autocorrelation of K. A PSF fit assuming
    independent pixels reports var = v sum(K^2) / sum(P^2); the true variance of
    sum(P data) / sum(P^2) is v sum_ij P_i P_j A(i - j) / sum(P^2)^2. Their ratio is

        f = sum((P (x) K)^2) / (sum(P^2) sum(K^2)),

    (N,) for ``psfs`` (N, S, S) and ``kernels`` (N, k, k) or one (k, k), by batched FFTs. f = 1 for a
    delta-function kernel; for Gaussians f = 4 pi sP^2 sK^2 / (sP^2 + sK^2).
    """
    psfs = np.asarray(psfs, dtype=np.float64)
    kernels = np.broadcast_to(np.asarray(kernels, dtype=np.float64), (len(psfs),) + np.shape(kernels)[-2:])
    shape = tuple(scipy.fft.next_fast_len(a + b - 1, real=True) for a, b in zip(psfs.shape[1:], kernels.shape[1:]))
    conv = scipy.fft.irfft2(scipy.fft.rfft2(psfs, s=shape) * scipy.fft.rfft2(kernels, s=shape), s=shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(conv**2, axis=(1, 2)) / (np.sum(psfs**2, axis=(1, 2)) * np.sum(kernels**2, axis=(1, 2)))


def convolve_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """image (x) kernel, same shape, zero padding; single-precision FFTs, float32 out."""
    return signal.fftconvolve(image.astype(np.float32, copy=False), kernel.astype(np.float32), mode="same")


def convolve_psf(psf: PixelPsf, kernel_at) -> PixelPsf:
    """New PixelPsf: every stamp of ``psf`` convolved with ``kernel_at(x, y)`` (a normalised kernel
    for that parent position), cropped to the stamp size."""
    stamps = np.array([signal.fftconvolve(s, kernel_at(x, y), mode="same")
                       for s, x, y in zip(psf.stamps, psf.x, psf.y)])
    return PixelPsf(stamps, psf.x, psf.y)
