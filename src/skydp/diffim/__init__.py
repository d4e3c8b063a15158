"""Image differencing (Alard-Lupton PSF matching, noise decorrelation) and DiaSource detection/measurement."""

from .command import run_diff_cli
from .config import DiffimConfig
from .dia_sources import detect_dia_sources
from .psf_matching import KernelFitError, KernelSolution
from .subtract import Difference, subtract_images

__all__ = ["Difference", "DiffimConfig", "KernelFitError", "KernelSolution", "detect_dia_sources", "run_diff_cli",
           "subtract_images"]
