"""Options of single-visit processing, with LSST defaults where LSST has one."""

from __future__ import annotations

from dataclasses import dataclass

APERTURE_RADII: tuple[int, ...] = (3, 6, 9, 12, 17, 25, 35, 50, 70)  # px; DP1 ap03 ... ap70
CALIB_APERTURE_RADIUS = 12.0  # px; slot_CalibFlux = base_CircularApertureFlux_12_0
AB_ZERO_POINT_NJY = 31.4  # AB mag of 1 nJy: images are in nJy, so this is every image's zero point


@dataclass
class SingleVisitConfig:
    """Tunable parameters; defaults follow LSST's SourceDetectionTask and meas_base where they exist."""

    # 1. background (sep mesh, detected pixels masked and re-estimated once)
    background_mesh: int = 128
    background_filter: int = 3
    background_mask_grow: float = 6.0  # PSF sigma added to the footprints masked for the background
    # 2. PSF estimation (only when the exposure carries no PSF)
    initial_psf_fwhm: float = 4.0  # px; first guess used to find the PSF stars
    psf_stamp_size: int = 41  # px, odd: an estimated PSF's stamp (25 px missed 0.1-0.5% of a Moffat's light)
    psf_n_components: int = 3  # principal components beyond the mean star
    psf_spatial_order: int = 2  # polynomial order of the component coefficients in x, y
    psf_grid: int = 5  # the model is realised on psf_grid x psf_grid stamps over the detector
    psf_min_snr: float = 50.0
    psf_max_stars: int = 300
    # 3. cosmic rays
    cr_min_sigma: float = 6.0  # a CR pixel exceeds the local background by this many sigma
    cr_sharpness_margin: float = 3.0  # sigma margin in the "sharper than the PSF" test
    # 4. detection
    threshold: float = 5.0  # in sigma of the PSF-smoothed noise
    min_area: int = 1  # px above threshold (LSST minPixels=1)
    grow_sigma: float = 2.4  # footprint growth, in PSF sigma
    # 5. deblending (sep's SExtractor multi-threshold deblender)
    deblend: bool = True
    deblend_nthresh: int = 32
    deblend_cont: float = 0.005
    # 6. measurement
    centroid_core_sigma: float = 4.0  # half-width, in PSF sigma, of the box the PSF-fit centroid uses
    local_background_radii: tuple[float, float] = (7.0, 15.0)  # in PSF sigma
    extendedness_ratio: float = 0.95
    n_sky_sources: int = 100
    n_empty_apertures: int = 1000  # blank 12-px apertures measuring calibFluxErr's extra term; 0: none
    # 7. aperture correction
    apcorr_min_snr: float = 50.0
    apcorr_order: int = 1  # 2-D Chebyshev order, lowered when there are too few stars
    seed: int | None = None  # sky-source placement; None derives it from visit and detector

    def __post_init__(self) -> None:
        checks = {
            "threshold": self.threshold > 0,
            "min_area": self.min_area >= 1,
            "grow_sigma": self.grow_sigma >= 0,
            "psf_stamp_size": self.psf_stamp_size >= 7 and self.psf_stamp_size % 2 == 1,
            "background_mesh": self.background_mesh >= 8,
            "initial_psf_fwhm": self.initial_psf_fwhm > 0,
            "local_background_radii": 0 < self.local_background_radii[0] < self.local_background_radii[1],
            "centroid_core_sigma": self.centroid_core_sigma > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid SingleVisitConfig value(s): {', '.join(bad)}")
