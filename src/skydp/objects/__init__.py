"""Coadd Objects: multi-band detection, deblending and measurement per patch; Source -> Object matching."""

from skydp.objects.config import ObjectConfig
from skydp.objects.matching import match_sources_to_objects
from skydp.objects.measure import measure_objects

__all__ = ["ObjectConfig", "match_sources_to_objects", "measure_objects"]
