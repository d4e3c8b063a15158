"""Image differencing (Alard-Lupton PSF matching, noise decorrelation) and DiaSource detection/measurement."""

from .config import DiffimConfig
from .psf_matching import KernelFitError, KernelSolution
from .subtract import Difference, subtract_images

__all__ = ["Difference", "DiffimConfig", "KernelFitError", "KernelSolution", "subtract_images"]
