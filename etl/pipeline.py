"""The stages `skydp run` executes, in dependency order."""

from skydp.etl import alerts, association, coadds, differencing, forced, objects, publish, single_visit

STAGES = [single_visit.STAGE, coadds.STAGE, objects.STAGE, differencing.STAGE, association.STAGE, forced.FORCED,
          forced.FORCED_DIA, alerts.STAGE, differencing.DROP, publish.PUBLISH, publish.DATABASE]
