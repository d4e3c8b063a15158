"""Single-visit processing: visit image -> background, PSF, Source catalog, footprints, CcdVisit row."""

from skydp.pipeline.background import Background
from skydp.pipeline.config import SingleVisitConfig
from skydp.pipeline.process import SingleVisitResult, SourceFootprints, process_visit_image
from skydp.pipeline.psf_estimation import PsfEstimationError
from skydp.pipeline.snaps import combine_snaps

__all__ = ["Background", "PsfEstimationError", "SingleVisitConfig", "SingleVisitResult", "SourceFootprints",
           "combine_snaps", "process_visit_image"]
