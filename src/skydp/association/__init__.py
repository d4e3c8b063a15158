"""DiaSource -> DiaObject association and the DiaObject light-curve statistics."""

from skydp.association.associate import Association, assign_dia_object_ids, associate
from skydp.association.dia_objects import dia_object_table, update_dia_objects

__all__ = ["Association", "assign_dia_object_ids", "associate", "dia_object_table", "update_dia_objects"]
