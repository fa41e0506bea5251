"""Prometheus metrics of the saga monitor (``choreo_saga_*``), in the default registry.

* ``choreo_saga_instances{saga,state}`` - instances per state (from the store, every 5 s);
* ``choreo_saga_oldest_stuck_seconds{saga}`` - how long the oldest stuck instance of each saga
  that nobody acknowledged has been stuck (wall clock minus the deadline it missed; 0 when none
  is; every 5 s): an alert rule on it stops paging once the instances are acknowledged;
* ``choreo_saga_step_seconds{saga,step}`` - histogram of the event time from the previous step
  (or the start) to a step;
* ``choreo_saga_stuck_total{saga}`` - instances that became stuck;
* ``choreo_saga_anomalies_total{saga,kind}`` - anomalies by kind;
* ``choreo_saga_events_total{outcome}`` - events applied, ignored or uncorrelated;
* ``choreo_saga_alerts_total{type}`` - alerts published, by type (``saga.stuck``, ...);
* ``choreo_saga_monitor_lag_seconds`` - how far the monitor's watermark trails the wall clock
  (beyond the allowed delivery delay): while it is above zero, verdicts wait; before the
  group has a watermark, the seconds since the monitor started;
* ``choreo_saga_batch_events`` and ``choreo_saga_batch_seconds`` - histograms of the events in
  each batch the monitor applied and the time its application and commit took.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from saga_monitor.machine import Outcome
from saga_monitor.model import STATES, Alert

__all__ = [
    "ALERTS",
    "ANOMALIES",
    "BATCH_EVENTS",
    "BATCH_SECONDS",
    "EVENTS",
    "INSTANCES",
    "LAG",
    "OLDEST_STUCK",
    "STEP_SECONDS",
    "STUCK",
    "count_events",
    "observe_batch",
    "record",
    "set_counts",
    "set_oldest_stuck",
]

_STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 7200, 21600, 86400)
_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)

INSTANCES = Gauge("choreo_saga_instances", "Saga instances by saga and state", ["saga", "state"])
OLDEST_STUCK = Gauge(
    "choreo_saga_oldest_stuck_seconds",
    "How long the oldest unacknowledged stuck instance of a saga has been stuck (0: none is)",
    ["saga"],
)
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
BATCH_EVENTS = Histogram(
    "choreo_saga_batch_events", "Events per batch the saga monitor applied", buckets=_BATCH_BUCKETS
)
BATCH_SECONDS = Histogram(
    "choreo_saga_batch_seconds", "Time to apply and commit one batch of events"
)
#: The step histogram's children by (saga, step): ``labels`` costs more than ``observe``.
_steps: dict[tuple[str, str], Any] = {}
_APPLIED, _IGNORED, _UNCORRELATED = (
    EVENTS.labels(outcome) for outcome in ("applied", "ignored", "uncorrelated")
)


def record(outcome: Outcome) -> None:
    """Count what one application or tick produced."""
    if outcome._step_seconds:
        _observe_steps(outcome._step_seconds)
    if outcome._alerts:
        _count_alerts(outcome._alerts)


def count_events(outcomes: Iterable[Outcome], uncorrelated: int = 0) -> bool:
    """Count the events of one batch (applied or ignored) and what they produced, each
    histogram and counter touched once per batch rather than once per event; returns
    whether they raised any alerts."""
    changed = unchanged = 0
    steps: list[tuple[str, str, float]] = []
    alerts: list[Alert] = []
    for outcome in outcomes:
        if outcome.changed:
            changed += 1
        else:
            unchanged += 1
        if outcome._step_seconds:  # read without making the lists that were never made
            steps += outcome._step_seconds
        if outcome._alerts:
            alerts += outcome._alerts
    if changed:
        _APPLIED.inc(changed)
    if unchanged:
        _IGNORED.inc(unchanged)
    if uncorrelated:
        _UNCORRELATED.inc(uncorrelated)
    if steps:
        _observe_steps(steps)
    if alerts:
        _count_alerts(alerts)
    return bool(alerts)


def _observe_steps(steps: Iterable[tuple[str, str, float]]) -> None:
    by_step: dict[tuple[str, str], list[float]] = {}
    for saga, step, seconds in steps:
        found = by_step.get((saga, step))
        if found is None:
            by_step[(saga, step)] = [seconds]
        else:
            found.append(seconds)
    for key, values in by_step.items():
        child = _steps.get(key)
        if child is None:
            child = _steps[key] = STEP_SECONDS.labels(*key)
        _observe_all(child, values)


def _observe_all(child: Any, values: list[float]) -> None:
    """``child.observe(value)`` for each value, in one increment per bucket and one of the
    sum (the histogram's own ``observe`` takes three locks and a scan of the bounds per
    value); one at a time where the client keeps its buckets otherwise."""
    try:
        bounds, buckets, total = child._upper_bounds, child._buckets, child._sum
    except AttributeError:
        for value in values:
            child.observe(value)
        return
    counts: dict[int, int] = {}
    for value in values:  # the first bucket whose bound is at least the value, as observe
        index = bisect_left(bounds, value)
        counts[index] = counts.get(index, 0) + 1
    total.inc(math.fsum(values))
    for index, count in counts.items():
        buckets[index].inc(count)


def _count_alerts(alerts: Iterable[Alert]) -> None:
    for alert in alerts:
        if alert.type == "saga.stuck":
            STUCK.labels(alert.saga).inc()
        elif alert.type == "saga.anomaly":
            ANOMALIES.labels(alert.saga, alert.data["anomaly"]["kind"]).inc()


def observe_batch(events: int, seconds: float) -> None:
    """Note one batch applied and committed."""
    BATCH_EVENTS.observe(events)
    BATCH_SECONDS.observe(seconds)


def set_counts(sagas: Iterable[str], counts: Mapping[tuple[str, str], int]) -> None:
    """Set the instance gauge for every (saga, state), zero where there is none."""
    for saga in sagas:
        for state in STATES:
            INSTANCES.labels(saga, state).set(counts.get((saga, state), 0))


def set_oldest_stuck(sagas: Iterable[str], since: Mapping[str, datetime], now: datetime) -> None:
    """Set the oldest-stuck gauge of every saga from when its oldest unacknowledged stuck
    instance got stuck."""
    for saga in sagas:
        moment = since.get(saga)
        OLDEST_STUCK.labels(saga).set(max(0.0, (now - moment).total_seconds()) if moment else 0.0)
