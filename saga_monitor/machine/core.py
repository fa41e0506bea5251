"""The saga machine (:class:`SagaMachine`): the roles of a saga's event types, events recorded in
an instance's timeline, and the judgement of an instance at a watermark (a :mod:`fold
<saga_monitor.machine.fold>` over its events) with the alerts it releases."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from saga_monitor.definitions import SagaDefinition
from saga_monitor.machine.alerts import KeptAlert
from saga_monitor.machine.fold import _NONE, _Fold
from saga_monitor.model import Alert, Anomaly, Entry, Instance, Observation

#: Ties in event time are broken by role, so that causes come before their effects.
_RANK = {
    "start": 0,
    "step": 1,
    "complete": 2,
    "fail": 3,
    "compensation": 4,
    "compensated": 5,
    "unknown": 6,
}
_UNKNOWN = (_RANK["unknown"], 0)


class Outcome:
    """What one application changed: alerts, new anomalies, (saga, step, seconds) durations.

    Each list is made when it is first read (or given): the monitor makes an outcome per event
    and most of them stay empty, so three lists apiece were the batch's most numerous objects
    for the garbage collector (made while it is paused, walked by the collection after it)."""

    __slots__ = ("_alerts", "_anomalies", "_step_seconds", "changed")

    _alerts: list[Alert] | None
    _anomalies: list[Anomaly] | None
    _step_seconds: list[tuple[str, str, float]] | None
    changed: bool

    def __init__(
        self,
        alerts: list[Alert] | None = None,
        anomalies: list[Anomaly] | None = None,
        step_seconds: list[tuple[str, str, float]] | None = None,
        changed: bool = False,
    ) -> None:
        self._alerts = alerts
        self._anomalies = anomalies
        self._step_seconds = step_seconds
        self.changed = changed

    @property
    def alerts(self) -> list[Alert]:
        alerts = self._alerts
        if alerts is None:
            alerts = self._alerts = []
        return alerts

    @alerts.setter
    def alerts(self, value: list[Alert]) -> None:
        self._alerts = value

    @property
    def anomalies(self) -> list[Anomaly]:
        anomalies = self._anomalies
        if anomalies is None:
            anomalies = self._anomalies = []
        return anomalies

    @anomalies.setter
    def anomalies(self, value: list[Anomaly]) -> None:
        self._anomalies = value

    @property
    def step_seconds(self) -> list[tuple[str, str, float]]:
        steps = self._step_seconds
        if steps is None:
            steps = self._step_seconds = []
        return steps

    @step_seconds.setter
    def step_seconds(self, value: list[tuple[str, str, float]]) -> None:
        self._step_seconds = value

    def merge(self, other: Outcome) -> Outcome:
        if other._alerts:
            self.alerts.extend(other._alerts)
        if other._anomalies:
            self.anomalies.extend(other._anomalies)
        if other._step_seconds:
            self.step_seconds.extend(other._step_seconds)
        self.changed = self.changed or other.changed
        return self

    def _fields(self) -> tuple[list[Alert], list[Anomaly], list[tuple[str, str, float]], bool]:
        return (
            self._alerts or [],
            self._anomalies or [],
            self._step_seconds or [],
            self.changed,
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Outcome)
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __repr__(self) -> str:
        alerts, anomalies, steps, changed = self._fields()
        return (
            f"Outcome(alerts={alerts!r}, anomalies={anomalies!r}, step_seconds={steps!r}, "
            f"changed={changed!r})"
        )


def is_redelivery(known: str, delivery: str | None, redelivered: bool) -> bool:
    """Whether a message carrying an event already seen is the same message again.

    Backends with positions (offsets, stream sequences) tell exactly: the same position is a
    redelivery, another one a second message, i.e. a duplicate. Elsewhere the broker's
    redelivered flag decides.
    """
    if known and delivery:
        return known == delivery
    return redelivered


class SagaMachine:
    """Derives the instances of one saga definition from their events."""

    def __init__(self, definition: SagaDefinition, *, skew_tolerance: float = 1.0) -> None:
        self.definition = definition
        #: Seconds a clock may disagree before it is reported as ``clock_skew``.
        self.skew_tolerance = skew_tolerance
        self.name = definition.name
        self.types = definition.event_types()
        self.step_index = {step.event: i for i, step in enumerate(definition.steps)}
        self.compensates = {
            step.compensation: step.event for step in definition.steps if step.compensation
        }
        self._start = frozenset(definition.start)
        self.complete = frozenset(definition.complete)
        #: The role of each event type the saga names (see :meth:`role`).
        self.roles = {event_type: self._role_of(event_type) for event_type in self.types}
        #: Per event type: its rank among equal times and its step index (see fold_order).
        self._ranks = {
            event_type: (_RANK[role], self.step_index.get(event_type, 0))
            for event_type, role in self.roles.items()
        }
        self.step_events = [step.event for step in definition.steps]
        self.withins = [
            timedelta(seconds=step.within) if step.within else None for step in definition.steps
        ]
        #: Per step in order: its event, its deadline, the event of the step before it (None
        #: for the first) and the ``expected`` of an instance waiting for it, what the fold's
        #: plan looks up. The lists are shared by the instances (never changed in place).
        self.plan = tuple(
            (event, within, self.step_events[n - 1] if n else None, [event])
            for n, (event, within) in enumerate(zip(self.step_events, self.withins, strict=True))
        )
        #: The ``expected`` of an instance whose steps are all done (shared, as above).
        self.expect_complete = list(definition.complete)
        #: The overall deadline and the compensations' (after the failure), if any.
        self.overall = timedelta(seconds=definition.deadline) if definition.deadline else None
        limit = definition.compensation_within
        self.compensation_limit = timedelta(seconds=limit) if limit else None
        closing = definition.compensation_within or definition.grace
        #: How long a saga closed by a compensated event waits for the compensations it owes.
        self.ledger_wait = timedelta(seconds=closing) if closing else None

    # -- classification --------------------------------------------------------------------

    def is_start(self, event_type: str) -> bool:
        """Whether ``event_type`` starts an instance of this saga."""
        return event_type in self._start

    def role(self, event_type: str) -> str:
        """start, step, complete, fail, compensation, compensated or unknown."""
        return self.roles.get(event_type, "unknown")

    def _role_of(self, event_type: str) -> str:
        definition = self.definition
        if event_type in self._start:
            return "start"
        if event_type in self.step_index:
            return "step"
        if event_type in self.complete:
            return "complete"
        if event_type in definition.fail:
            return "fail"
        if event_type in self.compensates:
            return "compensation"
        if event_type in definition.compensated:
            return "compensated"
        return "unknown"

    def fold_order(self, entry: Entry) -> tuple[datetime, int, int, str, str, bool]:
        """The order in which the fold applies entries: event time; for equal times, causes
        before effects (by role, steps in definition order); then identity, a duplicate last."""
        obs = entry.event
        rank, step = self._ranks.get(obs.type, _UNKNOWN)
        if entry.role == "start":
            rank = 0
        return (entry.at, rank, step, obs.source, obs.id, entry.duplicate)

    # -- recording events ------------------------------------------------------------------

    def begin(self, correlation_id: str, obs: Observation) -> Instance:
        """A new instance whose timeline holds ``obs`` (a start event); judge it next."""
        return Instance(  # the fold replaces what it derives: no list of its own for them
            saga=self.name,
            correlation_id=correlation_id,
            started=obs.time,
            updated=obs.time,
            expected=_NONE,
            waiting=_NONE,
            timeline=[Entry(obs, "start", (), False, None, None, obs.time)],
            anomalies=_NONE,
        )

    def receive(self, instance: Instance, obs: Observation, redelivered: bool = False) -> bool:
        """Record ``obs`` in the timeline; False when it changes nothing.

        A redelivery of a message already recorded (at-least-once delivery after a restart or
        a rebalance) changes nothing. A second message with the same source and id is recorded
        once, as a duplicate, and otherwise ignored.
        """
        known = instance.delivery_of(obs)
        if known is None:
            seen = instance.seen
            if seen is not None:  # as Instance.saw
                seen[obs.key] = obs.delivery or ""
            role = self.roles.get(obs.type, "unknown")
            instance.timeline.append(Entry(obs, role, (), False, None, None, obs.time))
            return True
        if is_redelivery(known, obs.delivery, redelivered):
            return False
        key = obs.key
        if any(e.duplicate and e.event.key == key for e in instance.timeline):
            return False  # reported once, however often it comes back
        instance.timeline.append(Entry(obs, self.role(obs.type), duplicate=True))
        return True

    # -- judging ---------------------------------------------------------------------------

    def judge(
        self,
        instance: Instance,
        watermark: datetime | None,
        new: Entry | Sequence[Entry] | None = None,
    ) -> Outcome:
        """Derive ``instance`` from its timeline and hand out the alerts the watermark allows.

        ``new`` is the entry (or the entries, in the order they were received) appended to the
        timeline since the last judgement: the monitor records a batch's events first and
        judges each instance they touched once. Returns the alerts to publish now, the
        anomalies new since the last judgement and how long each new step took.
        """
        news = () if new is None else (new,) if isinstance(new, Entry) else new
        known = instance.anomalies
        before = {(a.kind, a.event_id, a.detail) for a in known} if known else ()
        fold = instance.fold
        try:
            refolded = not (
                isinstance(fold, _Fold)
                and fold.m is self
                and fold.resume(instance, news, watermark)
            )
            if refolded:
                fold = instance.fold = _Fold(self, instance, entries=_NONE)  # set by run
                fold.run(watermark)
        finally:  # no reference cycle (the collector does not track folds): never kept
            if isinstance(fold, _Fold) and hasattr(fold, "i"):
                del fold.i
        anomalies = None
        if instance.anomalies:
            anomalies = [
                a for a in instance.anomalies if (a.kind, a.event_id, a.detail) not in before
            ]
        steps: list[tuple[str, str, float]] | None = None
        for entry in news:
            waited = entry.waited
            if waited is not None:
                if steps is None:
                    steps = []
                steps.append((self.name, entry.event.type, waited))
                entry.waited = None  # reported: one float less per step in memory
        if refolded:  # the steps' durations of this pass, for news only
            for entry in fold.entries:
                entry.waited = None
        outcome = Outcome(self._release(instance, fold, watermark), anomalies, steps, True)
        instance.judged = watermark
        alerted = instance.alerted
        waiting = [at for at, alert in fold.alerts if not alerted or alert.event_id not in alerted]
        due = instance.due
        if due is not None and (watermark is None or due > watermark):
            waiting.append(due)
        instance.check_at = min(waiting, default=None)
        return outcome

    def _release(
        self, instance: Instance, fold: _Fold, watermark: datetime | None
    ) -> list[Alert] | None:
        """The derived alerts whose time the watermark has passed and that were not sent yet,
        plus a ``saga.resolved`` for each stuck alert whose stall is over (None: none)."""
        if watermark is None and not instance.open_alerts:
            return None  # nothing can be released before the monitor knows a watermark
        out: list[Alert] = []
        sent = set(instance.alerted)
        for at, held in sorted(fold.alerts, key=_alert_time) if watermark else ():
            made: Alert | KeptAlert = held
            if isinstance(held, KeptAlert) and held._id is None:  # made once: id and alert
                made = held.alert()
                held._id = made.event_id
            alert_id = held.event_id
            if alert_id in sent or watermark is None or at > watermark:
                continue
            alert = made.alert() if isinstance(made, KeptAlert) else made
            sent.add(alert_id)
            instance.note_alerted(alert_id)
            out.append(alert)
            if alert.type == "saga.stuck" or alert.data.get("anomaly", {}).get("kind") == (
                "compensation_missing"
            ):
                instance.open_alerts[alert_id] = {"type": alert.type, **_resolvable(alert)}
        still_open = {alert.event_id for alert in fold.open_stalls}
        for alert_id in [a for a in instance.open_alerts if a not in still_open]:
            out.append(self._resolved(instance, alert_id, instance.open_alerts.pop(alert_id)))
        return out

    def _resolved(self, instance: Instance, alert_id: str, opened: dict[str, Any]) -> Alert:
        data = {
            "saga": self.name,
            "correlation_id": instance.correlation_id,
            "state": instance.state,
            "resolves": alert_id,
            "resolved_type": opened.get("type"),
            "deadline": opened.get("deadline"),
            "expected_next": opened.get("expected_next"),
        }
        return Alert("saga.resolved", self.name, instance.correlation_id, data)


def _alert_time(item: tuple[datetime, Alert | KeptAlert]) -> datetime:
    return item[0]


def _resolvable(alert: Alert) -> dict[str, Any]:
    data = alert.data
    return {"deadline": data.get("deadline"), "expected_next": data.get("expected_next")}
