"""Alard-Lupton kernel basis: Gaussians of three widths times polynomials, kept separable.

As LSST ip_diffim (``makeKernelBasisList.generateAlardLuptonBasisList``): each basis kernel is
exp(-(u^2 + v^2) / 2 s^2) u^i v^j with i + j <= degree of that Gaussian. The first kernel (the
narrowest Gaussian, i = j = 0) is normalised to unit sum; every other kernel has the first one,
times its own sum, subtracted so that it sums to zero (the kernel sum, i.e. the photometric scale,
is then carried by the first coefficient alone) and is scaled to unit L2 norm for conditioning.

Every raw term is a product g(u) u^i * g(v) v^j of two 1-D factors, so convolving a stamp with the
whole basis costs a few 1-D passes (done here as small matrix products over many stamps at once).
Kernel images are indexed [v + h, u + h] and applied by CONVOLUTION:
out(x, y) = sum_{u,v} K[v + h, u + h] in(x - u, y - v).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class AlardLuptonBasis:
    """The basis for given Gaussian ``sigmas`` (px), polynomial ``degrees`` and odd kernel ``size``."""

    sigmas: tuple[float, ...]
    degrees: tuple[int, ...]
    size: int

    def __post_init__(self) -> None:
        if len(self.sigmas) != len(self.degrees) or not self.sigmas:
            raise ValueError(f"kernel basis: sigmas {self.sigmas} and degrees {self.degrees} must pair up")
        if self.size < 3 or self.size % 2 == 0:
            raise ValueError(f"kernel basis: size {self.size} must be odd and >= 3")
        if min(self.sigmas) <= 0 or min(self.degrees) < 0:
            raise ValueError(f"kernel basis: sigmas {self.sigmas} must be > 0 and degrees {self.degrees} >= 0")

    @property
    def half(self) -> int:
        return self.size // 2

    @property
    def terms(self) -> list[tuple[int, int, int]]:
        """(gaussian index, i, j) of every basis kernel, in basis order."""
        return [(g, i, j) for g, deg in enumerate(self.degrees) for i in range(deg + 1) for j in range(deg + 1 - i)]

    @property
    def n_kernels(self) -> int:
        return len(self.terms)

    def factors(self) -> np.ndarray:
        """(n_gaussians, max_degree + 1, size) raw 1-D factors g_s(u) u^i."""
        u = np.arange(-self.half, self.half + 1, dtype=np.float64)
        out = np.zeros((len(self.sigmas), max(self.degrees) + 1, self.size))
        for g, (s, deg) in enumerate(zip(self.sigmas, self.degrees)):
            gauss = np.exp(-0.5 * (u / s) ** 2)
            for i in range(deg + 1):
                out[g, i] = gauss * u**i
        return out

    def _raw_images(self) -> np.ndarray:
        f = self.factors()
        return np.array([np.outer(f[g, j], f[g, i]) for g, i, j in self.terms])  # [v, u]

    def normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        """(sums, scale): B'_0 = B_0 / sums_0 and B'_k = (B_k - sums_k B'_0) scale_k for k > 0,
        with B the raw products; B'_0 sums to 1, every other B'_k sums to 0 with unit L2 norm."""
        raw = self._raw_images()
        sums = raw.sum(axis=(1, 2))
        b0 = raw[0] / sums[0]
        zero_sum = raw - sums[:, None, None] * b0[None]
        scale = np.ones(self.n_kernels)
        scale[1:] = 1.0 / np.sqrt(np.sum(zero_sum[1:] ** 2, axis=(1, 2)))
        return sums, scale

    def images(self) -> np.ndarray:
        """(n_kernels, size, size) normalised basis kernel images B'_k[v + h, u + h]."""
        raw = self._raw_images()
        sums, scale = self.normalisation()
        out = (raw - sums[:, None, None] * (raw[0] / sums[0])[None]) * scale[:, None, None]
        out[0] = raw[0] / sums[0]
        return out

    def _toeplitz(self, length: int) -> np.ndarray:
        """(n_gaussians, max_degree + 1, length, length - size + 1): (row @ T)[x] = sum_u a(u) row[x + h - u]."""
        f = self.factors()
        out_len = length - self.size + 1
        t = np.zeros(f.shape[:2] + (length, out_len))
        cols = np.arange(out_len)
        for u in range(self.size):
            t[:, :, cols + self.size - 1 - u, cols] = f[:, :, u][..., None]
        return t

    def convolve_stamps(self, stamps: np.ndarray) -> np.ndarray:
        """Convolve (N, H, W) stamps with every normalised basis kernel: (N, n_kernels, H - size + 1, W - size + 1).

        Only the "valid" part is returned, where the kernel lies wholly inside the stamp.
        """
        n, h, w = stamps.shape
        if min(h, w) < self.size:
            raise ValueError(f"stamps of {h} x {w} px are smaller than the kernel ({self.size} px)")
        tx, ty = self._toeplitz(w), self._toeplitz(h)
        out = np.empty((n, self.n_kernels, h - self.size + 1, w - self.size + 1))
        xpass: dict[tuple[int, int], np.ndarray] = {}
        for k, (g, i, j) in enumerate(self.terms):
            if (g, i) not in xpass:
                xpass[(g, i)] = stamps @ tx[g, i]  # (N, H, W'): along x with g(u) u^i
            out[:, k] = np.swapaxes(np.swapaxes(xpass[(g, i)], 1, 2) @ ty[g, j], 1, 2)  # along y with g(v) v^j
        sums, scale = self.normalisation()
        out[:, 0] /= sums[0]
        out[:, 1:] -= sums[None, 1:, None, None] * out[:, :1]
        out[:, 1:] *= scale[None, 1:, None, None]
        return out


def basis_for_psfs(sigma_convolved: float, sigma_reference: float, sigmas: tuple[float, ...],
                   degrees: tuple[int, ...], beta: float, min_sigma: float, min_size: int,
                   max_size: int) -> AlardLuptonBasis:
    """LSST ``scaleByFwhm`` basis for matching a PSF of sigma ``sigma_convolved`` to ``sigma_reference``.

    The matching kernel has sigma_K = sqrt(sigma_ref^2 - sigma_conv^2) (floored at ``min_sigma``,
    lowered to 0.4 px when the convolved image is the broader one); the Gaussians are
    sigma_0 = max(min_sigma, sigma_K / beta), sigma_0 beta, sigma_0 beta^2, ...; the kernel size is
    6 x the largest sigma, odd, clamped to [min_size, max_size]. ``sigmas`` (the unscaled config
    widths) only sets how many Gaussians there are.
    """
    diff2 = sigma_reference**2 - sigma_convolved**2
    floor = min_sigma if diff2 >= 0 else 0.4
    sigma_k = max(floor, float(np.sqrt(abs(diff2))))
    s0 = max(floor, sigma_k / beta)
    widths = tuple(s0 * beta**n for n in range(len(sigmas)))
    size = int(np.ceil(6.0 * widths[-1]))
    size += 1 - size % 2
    size = int(np.clip(size, min_size, max_size))
    size += 1 - size % 2
    return AlardLuptonBasis(sigmas=widths, degrees=tuple(degrees), size=size)
