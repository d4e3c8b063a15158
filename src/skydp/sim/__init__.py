"""LSST-like survey simulator with truth: ``simulate(outdir, preset, seed)`` writes visit images
(the DESIGN.md FITS contract) and truth tables. See ``skydp.sim.run`` and the module docstrings of
``presets``, ``observing``, ``sky``, ``render`` and ``truth`` for the models.
"""

from skydp.sim.presets import PRESETS, Preset, get_preset
from skydp.sim.run import SimulationResult, simulate

__all__ = ["PRESETS", "Preset", "SimulationResult", "get_preset", "simulate"]
