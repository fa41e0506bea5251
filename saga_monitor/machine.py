"""The saga state machine: pure functions of (instance, event) and (instance, clock).

Nothing here reads a clock or does I/O: every method is given the observation or ``now``, so
the same events always give the same instance (which is what makes a restart after ``kill -9``
land on the same states). Event times (the CloudEvents ``time``) place events on the timeline
and start the deadlines; ``now`` only decides when a deadline has passed.

States (DESIGN.md): ``running`` (started, nothing terminal yet); ``completed`` (a complete
event); ``compensating`` (a fail event, waiting for the compensations of the steps already
done); ``compensated`` (all those compensations seen, or a compensated event); ``failed`` (a
fail event with nothing to compensate); ``stuck`` (a deadline passed while running or
compensating: the instance keeps what it waits for, and a late event moves it on).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from broker.envelope import format_time
from saga_monitor.definitions import SagaDefinition, format_duration
from saga_monitor.model import ACTIVE, TERMINAL, Alert, Anomaly, Entry, Instance, Observation

__all__ = ["Outcome", "SagaMachine"]

_REPORTED = "*duplicate*"
_STATE_ALERTS = frozenset(("completed", "failed", "compensating", "compensated", "stuck"))


@dataclasses.dataclass(slots=True)
class Outcome:
    """What one application changed: alerts, new anomalies, (saga, step, seconds) durations."""

    alerts: list[Alert] = dataclasses.field(default_factory=list)
    anomalies: list[Anomaly] = dataclasses.field(default_factory=list)
    step_seconds: list[tuple[str, str, float]] = dataclasses.field(default_factory=list)
    changed: bool = False

    def merge(self, other: Outcome) -> Outcome:
        self.alerts.extend(other.alerts)
        self.anomalies.extend(other.anomalies)
        self.step_seconds.extend(other.step_seconds)
        self.changed = self.changed or other.changed
        return self


class SagaMachine:
    """Applies events and the clock to instances of one saga definition."""

    def __init__(self, definition: SagaDefinition) -> None:
        self.definition = definition
        self.name = definition.name
        self.types = definition.event_types()
        self._step_index = {step.event: i for i, step in enumerate(definition.steps)}
        self._compensates = {
            step.compensation: step.event for step in definition.steps if step.compensation
        }
        self._start = frozenset(definition.start)
        self._complete = frozenset(definition.complete)
        self._fail = frozenset(definition.fail)
        self._compensated = frozenset(definition.compensated)
        self._roles = {event_type: self._role_of(event_type) for event_type in self.types}
        self._step_events = [step.event for step in definition.steps]
        self._withins = [
            timedelta(seconds=step.within) if step.within else None for step in definition.steps
        ]
        self._handlers: dict[str, Callable[[Instance, Entry, Outcome], None]] = {
            "start": self._on_start,
            "step": self._on_step,
            "complete": self._on_complete,
            "fail": self._on_fail,
            "compensation": self._on_compensation,
            "compensated": self._on_compensated,
        }

    # -- classification --------------------------------------------------------------------

    def is_start(self, event_type: str) -> bool:
        """Whether ``event_type`` starts an instance of this saga."""
        return event_type in self._start

    def role(self, event_type: str) -> str:
        """start, step, complete, fail, compensation, compensated or unknown."""
        return self._roles.get(event_type, "unknown")

    def _role_of(self, event_type: str) -> str:
        if event_type in self._start:
            return "start"
        if event_type in self._step_index:
            return "step"
        if event_type in self._complete:
            return "complete"
        if event_type in self._fail:
            return "fail"
        if event_type in self._compensates:
            return "compensation"
        if event_type in self._compensated:
            return "compensated"
        return "unknown"

    # -- starting and orphans --------------------------------------------------------------

    def begin(
        self, correlation_id: str, obs: Observation, run: str = ""
    ) -> tuple[Instance, Outcome]:
        """A new instance started by ``obs`` (a start event)."""
        deadline = self.definition.deadline
        instance = Instance(
            saga=self.name,
            correlation_id=correlation_id,
            started=obs.time,
            updated=obs.time,
            progress_at=obs.time,
            deadline=obs.time + timedelta(seconds=deadline) if deadline else None,
            seen={obs.key: run},
            timeline=[Entry(obs, "start")],
        )
        self._plan(instance)
        return instance, Outcome(changed=True)

    def orphan(self, correlation_id: str, obs: Observation) -> Outcome:
        """The anomaly for an event of this saga whose instance never started (yet)."""
        anomaly = Anomaly(
            "orphan",
            obs.type,
            obs.id,
            obs.source,
            obs.time,
            f"no {' or '.join(self.definition.start)} seen for correlation id {correlation_id}",
        )
        alert = Alert(
            "saga.anomaly",
            self.name,
            correlation_id,
            {
                "saga": self.name,
                "correlation_id": correlation_id,
                "state": None,
                "anomaly": anomaly.to_dict(),
                "event": _event_info(obs),
            },
        )
        return Outcome([alert], [anomaly])

    def adopt(self, instance: Instance, orphans: list[Observation], run: str = "") -> Outcome:
        """Apply events that arrived before the start event, in event-time order."""
        outcome = Outcome()
        for obs in sorted(orphans, key=lambda o: o.time):
            outcome.merge(self.apply(instance, obs, run))
            entry = instance.timeline[-1]
            if entry.event is obs and obs.time < instance.started:
                detail = f"happened before the start event {instance.timeline[0].event.type}"
                self._flag(instance, entry, outcome, "out_of_order", detail)
        return outcome

    # -- events ----------------------------------------------------------------------------

    def apply(self, instance: Instance, obs: Observation, run: str = "") -> Outcome:
        """Apply one event of this saga to ``instance``.

        ``run`` names the monitor run. A source+id seen again in the same run is a duplicate
        (reported once); one applied by an earlier run is taken as the broker redelivering
        what a stopped or killed monitor had applied but not yet acknowledged (at-least-once
        delivery), and changes nothing.
        """
        outcome = Outcome()
        key = obs.key
        seen = instance.seen.get(key)
        if seen is not None:
            if seen == _REPORTED:
                return outcome
            if seen != run:  # applied by an earlier run: a redelivery after a restart
                instance.seen[key] = run
                outcome.changed = True
                return outcome
            instance.seen[key] = _REPORTED  # reported once, however often it comes back
            entry = Entry(obs, self.role(obs.type))
            instance.timeline.append(entry)
            detail = f"{obs.source} sent event {obs.id} before"
            self._flag(instance, entry, outcome, "duplicate", detail)
            outcome.changed = True
            return outcome
        instance.seen[key] = run
        entry = Entry(obs, self._roles.get(obs.type, "unknown"))
        instance.timeline.append(entry)
        instance.updated = max(instance.updated, obs.time)
        outcome.changed = True
        if entry.role == "unknown":
            detail = f"{obs.type} is not part of {self.name}"
            self._flag(instance, entry, outcome, "unexpected", detail)
            return outcome
        if instance.phase in TERMINAL:
            before = instance.state
            if self._reopen(instance, entry):
                self._state_alert(instance, before, outcome, obs)
            elif not self._epilogue(instance, entry):
                detail = f"arrived after the saga {instance.phase}"
                self._flag(instance, entry, outcome, "after_terminal", detail)
            return outcome
        before = instance.state
        if entry.role != "start":
            self._check_late(instance, entry, outcome)
        self._handlers[entry.role](instance, entry, outcome)
        self._plan(instance)
        self._state_alert(instance, before, outcome, obs)
        return outcome

    def _reopen(self, instance: Instance, entry: Entry) -> bool:
        """A step that happened before a `failed` saga's failure, delivered late: compensate it.

        The saga then owes that step's compensation, so it goes back to ``compensating``.
        """
        obs = entry.event
        if entry.role != "step" or instance.phase != "failed" or instance.failed_at is None:
            return False
        step = self.definition.steps[self._step_index[obs.type]]
        if obs.time > instance.failed_at or not step.compensation:
            return False
        instance.done[obs.type] = obs.time
        if step.compensation in instance.compensations:
            instance.phase = "compensated"
            return True
        instance.phase, instance.finished = "compensating", None
        instance.waiting = [step.compensation]
        self._plan(instance)
        return True

    def _epilogue(self, instance: Instance, entry: Entry) -> bool:
        """Whether an event after the end is the expected epilogue of a failure.

        After ``failed`` or ``compensated`` the ``compensated`` event (order.cancelled) still
        belongs; after ``compensated`` so do compensations of done steps not yet seen (the
        compensated event may overtake them).
        """
        early = instance.finished is not None and entry.event.time <= instance.finished
        if entry.role == "step" and early and entry.event.type in instance.missing:
            instance.missing.remove(entry.event.type)  # it happened in time, arrived late
            instance.done[entry.event.type] = entry.event.time
            self._plan(instance)
            return True
        if entry.role == "step" and early and instance.phase in ("failed", "compensated"):
            instance.done.setdefault(entry.event.type, entry.event.time)
            return True
        if entry.role == "fail" and early:  # the failure behind this end, delivered late
            return instance.phase in ("failed", "compensated")
        if entry.role == "compensated":
            return instance.phase in ("failed", "compensated")
        if entry.role == "compensation" and instance.phase == "compensated":
            compensation = entry.event.type
            step = self._compensates[compensation]
            if step in instance.done and compensation not in instance.compensations:
                instance.compensations.append(compensation)
                if compensation in instance.waiting:
                    instance.waiting.remove(compensation)
                return True
        return False

    def _check_late(self, instance: Instance, entry: Entry, outcome: Outcome) -> None:
        overdue = instance.due is not None and entry.event.time > instance.due
        if instance.stuck_since is None and not overdue:
            return
        waited = " or ".join(instance.expected) or "progress"
        due = format_time(instance.due) if instance.due else "its deadline"
        self._flag(instance, entry, outcome, "late", f"the saga waited for {waited} until {due}")
        instance.stuck_since = None

    def _on_start(self, instance: Instance, entry: Entry, outcome: Outcome) -> None:
        self._flag(instance, entry, outcome, "unexpected", "a second start event")

    def _on_step(self, instance: Instance, entry: Entry, outcome: Outcome) -> None:
        step, at = entry.event.type, entry.event.time
        if instance.phase == "compensating":
            self._flag(instance, entry, outcome, "unexpected", "a step after the saga failed")
            return
        if step in instance.done:
            self._flag(instance, entry, outcome, "unexpected", f"{step} happened already")
            return
        index = self._step_index[step]
        for other, other_at in instance.done.items():
            j = self._step_index.get(other, index)  # a step since removed from the definition
            if (j > index and other_at < at) or (j < index and other_at > at):
                self._flag(instance, entry, outcome, "out_of_order", f"{step} came after {other}")
                break
        previous = self._base_time(instance, index)
        outcome.step_seconds.append((self.name, step, max(0.0, (at - previous).total_seconds())))
        instance.done[step] = at
        instance.progress_at = max(instance.progress_at or at, at)
        if step in self._complete:
            self._on_complete(instance, entry, outcome)

    def _on_complete(self, instance: Instance, entry: Entry, outcome: Outcome) -> None:
        if instance.phase == "compensating":
            self._flag(instance, entry, outcome, "unexpected", "completion while compensating")
            return
        if instance.compensations:
            detail = f"completed although {', '.join(instance.compensations)} happened"
            self._flag(instance, entry, outcome, "unexpected", detail)
        # Skipped steps may still be on their way over another topic: judged after the grace.
        instance.missing = [s.event for s in self.definition.steps if s.event not in instance.done]
        self._finish(instance, "completed", entry.event.time)

    def _on_fail(self, instance: Instance, entry: Entry, outcome: Outcome) -> None:
        if instance.phase == "compensating":
            return  # a second failure report changes nothing
        instance.failed_at = entry.event.time
        owed = [
            s.compensation
            for s in reversed(self.definition.steps)
            if s.compensation and s.event in instance.done
        ]
        instance.waiting = [c for c in owed if c not in instance.compensations]
        if instance.waiting:
            instance.phase = "compensating"
        else:  # nothing to undo, or undone already (compensations overtook the failure)
            self._finish(instance, "compensated" if owed else "failed", entry.event.time)

    def _on_compensation(self, instance: Instance, entry: Entry, outcome: Outcome) -> None:
        compensation = entry.event.type
        step = self._compensates[compensation]
        if instance.phase == "compensating" and compensation in instance.waiting:
            instance.waiting.remove(compensation)
            instance.compensations.append(compensation)
            if not instance.waiting:
                self._finish(instance, "compensated", entry.event.time)
            return
        if step not in instance.done:
            detail = f"compensates {step}, which did not happen"
        elif compensation in instance.compensations:
            detail = f"{step} was compensated already"
        else:  # the failure may still be on its way over another topic
            instance.compensations.append(compensation)
            return
        self._flag(instance, entry, outcome, "unexpected", detail)

    def _on_compensated(self, instance: Instance, entry: Entry, outcome: Outcome) -> None:
        self._finish(instance, "compensated", entry.event.time)

    # -- the clock -------------------------------------------------------------------------

    def tick(self, instance: Instance, now: datetime) -> Outcome:
        """Mark ``instance`` stuck when its deadline passed by ``now`` (alerting once).

        For a completed instance with skipped steps, report them once the grace is over.
        """
        if instance.missing:
            return self._settle(instance, now)
        if instance.phase not in ACTIVE or instance.stuck_since is not None:
            return Outcome()
        if instance.due is None or now < instance.due:
            return Outcome()
        before = instance.state
        instance.stuck_since = now
        instance.updated = max(instance.updated, now)
        outcome = Outcome(changed=True)
        self._state_alert(instance, before, outcome, None)
        return outcome

    def _settle(self, instance: Instance, now: datetime) -> Outcome:
        if instance.due is None or now < instance.due:
            return Outcome()
        outcome = Outcome(changed=True)
        ends = [e for e in instance.timeline if e.event.type in self._complete]
        if ends:
            detail = f"completed without {', '.join(instance.missing)}"
            self._flag(instance, ends[-1], outcome, "out_of_order", detail, once=False)
        instance.missing = []
        self._plan(instance)
        return outcome

    # -- helpers ---------------------------------------------------------------------------

    def _finish(self, instance: Instance, phase: str, at: datetime) -> None:
        instance.phase = phase
        instance.finished = at
        instance.stuck_since = None
        if phase != "compensated":
            instance.waiting = []

    def _base_time(self, instance: Instance, index: int) -> datetime:
        """When the clock of step ``index`` started: the previous step, else the start."""
        if index > 0:
            previous = self.definition.steps[index - 1].event
            if previous in instance.done:
                return instance.done[previous]
        return instance.progress_at if index > 0 and instance.progress_at else instance.started

    def _plan(self, instance: Instance) -> None:
        """Work out what ``instance`` expects next and by when."""
        due: datetime | None = None
        if instance.phase == "running":
            done = instance.done
            index = None
            for i, step_event in enumerate(self._step_events):
                if step_event not in done:
                    index = i
                    break
            if index is None:
                instance.expected = list(self.definition.complete)
            else:
                instance.expected = [self._step_events[index]]
                step_within = self._withins[index]
                if step_within is not None:
                    due = self._base_time(instance, index) + step_within
        elif instance.phase == "compensating":
            instance.expected = list(instance.waiting)
            within = self.definition.compensation_within
            if within and instance.failed_at is not None:
                due = instance.failed_at + timedelta(seconds=within)
        else:
            instance.expected, instance.due = [], None
            grace = self.definition.grace
            if instance.missing and instance.finished is not None and grace is not None:
                instance.due = instance.finished + timedelta(seconds=grace)
            return
        if instance.deadline is not None and (due is None or instance.deadline < due):
            due = instance.deadline
        instance.due = due

    def _flag(
        self,
        instance: Instance,
        entry: Entry,
        outcome: Outcome,
        kind: str,
        detail: str,
        *,
        once: bool = True,
    ) -> None:
        if once and kind in entry.flags:
            return
        obs = entry.event
        if kind not in entry.flags:
            entry.flags.append(kind)
            entry.encoded = None
        anomaly = Anomaly(kind, obs.type, obs.id, obs.source, obs.time, detail)
        instance.anomalies.append(anomaly)
        outcome.anomalies.append(anomaly)
        data = self._alert_data(instance, obs)
        data["anomaly"] = anomaly.to_dict()
        outcome.alerts.append(Alert("saga.anomaly", self.name, instance.correlation_id, data))

    def _state_alert(
        self, instance: Instance, before: str, outcome: Outcome, obs: Observation | None
    ) -> None:
        state = instance.state
        if state == before or state not in _STATE_ALERTS:
            return
        data = self._alert_data(instance, obs)
        data["previous_state"] = before
        if state == "stuck" and instance.due is not None:
            data["deadline"] = format_time(instance.due)
            waited = (instance.due - instance.progress_at) if instance.progress_at else None
            data["waited"] = format_duration(waited.total_seconds()) if waited else None
        outcome.alerts.append(Alert(f"saga.{state}", self.name, instance.correlation_id, data))

    def _alert_data(self, instance: Instance, obs: Observation | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "saga": self.name,
            "correlation_id": instance.correlation_id,
            "state": instance.state,
            "started": format_time(instance.started),
            "expected_next": list(instance.expected),
            "due": format_time(instance.due) if instance.due else None,
        }
        if obs is not None:
            data["event"] = _event_info(obs)
        return data


def _event_info(obs: Observation) -> dict[str, Any]:
    return {"type": obs.type, "id": obs.id, "source": obs.source, "time": format_time(obs.time)}
