"""Options of image differencing and DiaSource measurement, with LSST ip_diffim defaults where it has one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("auto", "template", "science")


@dataclass
class DiffimConfig:
    """Tunable parameters of ``subtract_images`` and ``detect_dia_sources``."""

    # which image is convolved: "auto" convolves the one with the sharper PSF
    mode: str = "auto"
    # Alard-Lupton basis (LSST: alardSigGauss, alardDegGauss, alardGaussBeta, alardMinSig, kernel size clamp)
    basis_sigmas: tuple[float, ...] = (0.7, 1.5, 3.0)
    basis_degrees: tuple[int, ...] = (4, 2, 2)
    basis_beta: float = 2.0
    basis_min_sigma: float = 0.7
    kernel_min_size: int = 21
    kernel_max_size: int = 35
    # science / template flux of one source, when known from calibration (1 for images in the same
    # calibrated units); None = fitted (the kernel sum). Fix it where the stars cannot constrain it
    flux_ratio: float | None = None
    spatial_kernel_order: int = 1  # polynomial order of the kernel coefficients in x, y
    spatial_background_order: int = 2  # polynomial order of the differential background
    # kernel stars (LSST: 10 <= S/N <= 500, at most 1000, 128 px cells; fainter stars add more template
    # noise than signal to the fit, brighter ones are the best constraints while unsaturated)
    star_min_snr: float = 50.0
    star_max_snr: float = 3000.0
    max_stars: int = 400
    cell_size: int = 128
    stars_per_cell: int = 2
    min_stars: int = 5  # fewer usable stars: fit the whole overlap as one region (spatial orders 0)
    clip_sigma: float = 3.0  # stamps whose chi2/dof is this many robust sigma above the median are rejected
    clip_iterations: int = 3
    exclude_radius: float = 1.5  # reference-PSF FWHM: discs around ``subtract_images(exclude=...)`` positions
    # after subtraction
    difference_background_mesh: int = 64  # px mesh of the background re-fitted on the difference; 0 = none
    decorrelate: bool = True
    # DiaSource detection and measurement (LSST detectAndMeasure)
    detection_threshold: float = 5.0
    grow_sigma: float = 2.4  # footprint growth in PSF sigma
    aperture_radius: float = 12.0  # px, apFlux
    dipole_max_separation: float = 2.0  # PSF FWHM between the smoothed lobe peaks (pushed apart by the
    # cancellation of overlapping lobes: a 0.7 FWHM dipole shows 1.5 FWHM); further apart: separate DiaSources

    def __post_init__(self) -> None:
        checks = {
            "mode": self.mode in MODES,
            "basis_degrees": len(self.basis_degrees) == len(self.basis_sigmas) and min(self.basis_degrees) >= 0,
            "basis_beta": self.basis_beta > 1,
            "kernel_min_size": 3 <= self.kernel_min_size <= self.kernel_max_size,
            "flux_ratio": self.flux_ratio is None or (np.isfinite(self.flux_ratio) and self.flux_ratio > 0),
            "spatial_kernel_order": 0 <= self.spatial_kernel_order <= 3,
            "spatial_background_order": -1 <= self.spatial_background_order <= 3,
            "star_min_snr": 0 < self.star_min_snr < self.star_max_snr,
            "max_stars": self.max_stars >= 1,
            "cell_size": self.cell_size >= 16,
            "stars_per_cell": self.stars_per_cell >= 1,
            "min_stars": self.min_stars >= 1,
            "clip_sigma": self.clip_sigma > 0,
            "exclude_radius": self.exclude_radius > 0,
            "difference_background_mesh": self.difference_background_mesh == 0 or self.difference_background_mesh >= 8,
            "detection_threshold": self.detection_threshold > 0,
            "aperture_radius": self.aperture_radius > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid DiffimConfig value(s): {', '.join(bad)}")
