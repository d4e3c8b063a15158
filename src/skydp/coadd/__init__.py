"""Coadds per (tract, patch, band): warps stacked with inverse-variance weights and artifact
rejection (deep_coadd), and templates from the best-seeing visits (template_coadd)."""

from skydp.coadd.build import build_patch_coadd, warp_to_patch
from skydp.coadd.clipping import ClipConfig
from skydp.coadd.stack import Coadd, make_coadd
from skydp.coadd.template import select_template_visits

__all__ = ["ClipConfig", "Coadd", "build_patch_coadd", "make_coadd", "select_template_visits", "warp_to_patch"]
