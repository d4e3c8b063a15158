"""Options of coadd Object detection and measurement, with LSST defaults where LSST has one."""

from __future__ import annotations

from dataclasses import dataclass

OBJECT_APERTURE_RADII: tuple[int, ...] = (3, 6, 9, 12, 17, 25)  # px; the Object table's ap03 ... ap25
CALIB_APERTURE_RADIUS = 12  # px; calibFlux = ap12Flux
# LSST MergeDetectionsTask priority: the first band in this order with a significant detection
REF_BAND_PRIORITY: tuple[str, ...] = ("i", "r", "z", "y", "g", "u")


@dataclass
class ObjectConfig:
    """Tunable parameters of ``measure_objects``."""

    # detection on the combined image
    threshold: float = 5.0  # Gaussian-equivalent sigma of the multi-band chi-squared detection image
    min_area: int = 1  # px above threshold
    grow_sigma: float = 2.4  # footprint growth, in PSF sigma (largest over the bands)
    deblend: bool = True
    deblend_nthresh: int = 64
    # sep's contrast is relative to the whole parent: at 1e-3 a 1.5 uJy star inside the 4 mJy footprint of a
    # bright star (tiny sim, 1 of 10 misses at coadd S/N >= 10) was not split; noise branches are rejected
    # by the 5-sigma threshold of every level, not by this contrast (spurious counts unchanged at 1e-5)
    deblend_cont: float = 1e-5
    noise_sample: int = 1_000_000  # pixels sampled to measure each band's S/N-image noise
    # reference band: significant = unforced PSF-flux S/N at least this
    ref_band_snr: float = 5.0
    # measurement
    moments_stamp_size: int = 41  # px (odd): stamps for adaptive moments, GaussianFlux, blendedness
    kron_radius_factor: float = 2.5  # Kron aperture = factor x first-moment radius (SExtractor PHOT_AUTOPARAMS)
    kron_min_radius: float = 3.5  # ... but at least this many moment-ellipse sigmas
    kron_moment_extent: float = 6.0  # first moment measured within this many moment-ellipse sigmas
    extendedness_ratio: float = 0.95  # extended when ratio x gaussianFlux >= psfFlux (as Source)
    apcorr_min_snr: float = 50.0
    # aperture-correction stars: deblended sources (not only the only child of their parent: at coadd depth
    # most bright stars share a footprint with faint neighbours) whose calibration aperture loses at most this
    # fraction of the PSF model's flux to other footprints' and unusable pixels (ap12 / EE is biased low by it)
    apcorr_max_loss: float = 0.002
    # scatter of ap12 / EE about the true flux of bright clean stars (light of undetected neighbours, local
    # background): ~1% on the tiny-sim coadds at S/N 500-1800, added to each star's reference error
    apcorr_systematic: float = 0.01
    apcorr_order: int = 1

    def __post_init__(self) -> None:
        checks = {
            "threshold": self.threshold > 0,
            "min_area": self.min_area >= 1,
            "grow_sigma": self.grow_sigma >= 0,
            "noise_sample": self.noise_sample >= 1000,
            "moments_stamp_size": self.moments_stamp_size >= 7 and self.moments_stamp_size % 2 == 1,
            "kron_radius_factor": self.kron_radius_factor > 0,
            "kron_min_radius": self.kron_min_radius >= 0,
            "kron_moment_extent": self.kron_moment_extent > 0,
            "extendedness_ratio": 0 < self.extendedness_ratio <= 1,
            "apcorr_max_loss": 0 <= self.apcorr_max_loss < 1,
            "apcorr_systematic": self.apcorr_systematic >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid ObjectConfig value(s): {', '.join(bad)}")
