"""The stages `skydp run` executes, in dependency order."""

from skydp.etl import single_visit

STAGES = [single_visit.STAGE]
