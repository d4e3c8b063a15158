"""LSST alert packets (schema lsst.v11_1 from lsst-alert-packet): build, cut out, write, read."""

from skydp.alerts.avro_io import read_alerts, validate_alert, write_alerts
from skydp.alerts.cutouts import CUTOUT_SIZE, cutout_fits
from skydp.alerts.packets import make_alert, visit_alerts
from skydp.alerts.schema import ALERT_SCHEMA_VERSION, alert_schema

__all__ = [
    "ALERT_SCHEMA_VERSION", "CUTOUT_SIZE", "alert_schema", "cutout_fits", "make_alert", "read_alerts",
    "validate_alert", "visit_alerts", "write_alerts",
]
