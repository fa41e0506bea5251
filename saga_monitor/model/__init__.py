"""The records the monitor keeps: saga instances, their timelines, anomalies and alerts.

Everything here is plain data that round-trips through JSON (``to_dict`` / ``from_dict``), so
every store keeps the same document and the CLI, the web page and the JSON API read the same
fields. Times are aware UTC datetimes.

The records live in one module each: :mod:`~saga_monitor.model.observation` (one event as the
monitor saw it, and what a timeline keeps of its data), :mod:`~saga_monitor.model.timeline`
(timeline entries and anomalies), :mod:`~saga_monitor.model.instance` (a saga instance and its
states), :mod:`~saga_monitor.model.alert` (the alerts to publish), and
:mod:`~saga_monitor.model.documents` (times and JSON text as the documents write them).
"""

from saga_monitor.model.alert import Alert
from saga_monitor.model.documents import utcnow as utcnow
from saga_monitor.model.instance import ACTIVE, STATES, TERMINAL, Instance
from saga_monitor.model.observation import MAX_DATA_CHARS as MAX_DATA_CHARS
from saga_monitor.model.observation import Observation
from saga_monitor.model.observation import kept_data as kept_data
from saga_monitor.model.observation import trace_id as trace_id
from saga_monitor.model.timeline import ANOMALY_KINDS, Anomaly, Entry

__all__ = [
    "ACTIVE",
    "ANOMALY_KINDS",
    "STATES",
    "TERMINAL",
    "Alert",
    "Anomaly",
    "Entry",
    "Instance",
    "Observation",
]
