"""The stages `skydp run` executes, in dependency order."""

from skydp.etl import publish, single_visit

STAGES = [single_visit.STAGE, publish.PUBLISH, publish.DATABASE]
