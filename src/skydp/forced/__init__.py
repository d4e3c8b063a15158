"""Forced PSF photometry on any exposure and the ForcedSource / ForcedSourceOnDiaObject builders."""

from skydp.forced.photometry import ForcedPhotometer, forced_photometry, forced_photometry_xy
from skydp.forced.source_tables import forced_dia_table, forced_source_table

__all__ = ["ForcedPhotometer", "forced_dia_table", "forced_photometry", "forced_photometry_xy",
           "forced_source_table"]
