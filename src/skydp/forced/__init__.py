"""Forced PSF photometry on any exposure and the ForcedSource / ForcedSourceOnDiaObject builders."""

from skydp.forced.photometry import ForcedPhotometer, forced_photometry, forced_photometry_xy

__all__ = ["ForcedPhotometer", "forced_photometry", "forced_photometry_xy"]
