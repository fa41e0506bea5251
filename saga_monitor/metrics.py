"""Prometheus metrics of the saga monitor (``choreo_saga_*``), in the default registry.

* ``choreo_saga_instances{saga,state}`` - instances per state (from the store, each tick);
* ``choreo_saga_step_seconds{saga,step}`` - time from the previous step (or start) to a step;
* ``choreo_saga_stuck_total{saga}`` - instances that became stuck;
* ``choreo_saga_anomalies_total{saga,kind}`` - anomalies by kind;
* ``choreo_saga_events_total{outcome}`` - events applied, ignored or uncorrelated;
* ``choreo_saga_alerts_total{type}`` - alerts published;
* ``choreo_saga_monitor_lag_seconds`` - how far the monitor's watermark trails the wall clock
  (beyond the allowed delivery delay): while it is above zero, verdicts wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram

from saga_monitor.machine import Outcome
from saga_monitor.model import STATES

__all__ = [
    "ALERTS",
    "ANOMALIES",
    "EVENTS",
    "INSTANCES",
    "LAG",
    "STEP_SECONDS",
    "STUCK",
    "record",
    "set_counts",
]

_STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 7200, 21600, 86400)

INSTANCES = Gauge("choreo_saga_instances", "Saga instances by saga and state", ["saga", "state"])
STEP_SECONDS = Histogram(
    "choreo_saga_step_seconds",
    "Time from the previous step (or the start) to a step",
    ["saga", "step"],
    buckets=_STEP_BUCKETS,
)
STUCK = Counter("choreo_saga_stuck", "Saga instances that became stuck", ["saga"])
ANOMALIES = Counter("choreo_saga_anomalies", "Saga anomalies by kind", ["saga", "kind"])
EVENTS = Counter("choreo_saga_events", "Events seen by the saga monitor", ["outcome"])
ALERTS = Counter("choreo_saga_alerts", "Saga alerts published", ["type"])
LAG = Gauge(
    "choreo_saga_monitor_lag_seconds",
    "How far the saga monitor's watermark trails the wall clock; verdicts wait meanwhile",
)


def record(outcome: Outcome) -> None:
    """Count what one application or tick produced."""
    for saga, step, seconds in outcome.step_seconds:
        STEP_SECONDS.labels(saga, step).observe(seconds)
    for alert in outcome.alerts:
        if alert.type == "saga.stuck":
            STUCK.labels(alert.saga).inc()
        elif alert.type == "saga.anomaly":
            ANOMALIES.labels(alert.saga, alert.data["anomaly"]["kind"]).inc()


def set_counts(sagas: Iterable[str], counts: Mapping[tuple[str, str], int]) -> None:
    """Set the instance gauge for every (saga, state), zero where there is none."""
    for saga in sagas:
        for state in STATES:
            INSTANCES.labels(saga, state).set(counts.get((saga, state), 0))
