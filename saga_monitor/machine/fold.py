"""One pass of the saga machine over an instance's events in event-time order (:class:`_Fold`):
the roles' effects, deadlines and stalls, anomalies and the alerts the history implies."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from broker.envelope import format_time
from saga_monitor.definitions import format_duration
from saga_monitor.machine.alerts import KeptAlert, event_info, kept, orphan_alert
from saga_monitor.model import ACTIVE, Alert, Anomaly, Entry, Instance, Observation

if TYPE_CHECKING:
    from saga_monitor.machine.core import SagaMachine

_STATE_ALERTS = frozenset(("completed", "failed", "compensating", "compensated"))
#: How much later than its cause an effect stamped before it is taken to happen.
_TICK = timedelta(microseconds=1)
#: The empty list of every instance's ``waiting``, ``expected`` and ``anomalies`` while they
#: are empty, shared (never changed in place: replaced by a list of its own when something
#: is added): a list per instance would be one more object for every pass of the garbage
#: collector to walk, as long as the monitor keeps the instance.
_NONE: list[Any] = []


class _Fold(msgspec.Struct, gc=False):
    """One pass over an instance's events in event-time order (see :mod:`saga_monitor.machine`).

    It resets the derived fields of the instance, applies the start event, then every other
    entry in :func:`fold_order`; before each one it lets the clock run to that event's time, so
    a deadline that passed before an event happened is a stall and the event is late. After
    the last one the clock runs to the watermark. It collects every alert the history implies,
    each with the event time it speaks for.

    One per instance is kept between its events, so that the next one can carry on from it
    (see :meth:`resume`). A msgspec Struct the garbage collector does not track: it holds no
    reference to its instance between passes (``i`` is set for a pass only), so it is in no
    reference cycle, and the collector's full passes need not walk it.
    """

    m: SagaMachine
    i: Instance
    #: A list during a pass, a tuple between passes: a tuple of untracked Structs and times is
    #: left alone by the garbage collector (it untracks the tuple), a list is walked by every
    #: one of its passes, as long as the monitor keeps the instance. Between passes each alert
    #: is kept as a :class:`~saga_monitor.machine.alerts.KeptAlert` (its data as JSON bytes:
    #: a dict and a list fewer for the collector per alert), made an Alert again on release.
    alerts: (
        list[tuple[datetime, Alert | KeptAlert]] | tuple[tuple[datetime, Alert | KeptAlert], ...]
    ) = ()
    #: Stuck (and compensation_missing) alerts of stalls still open at the watermark.
    open_stalls: tuple[Alert, ...] = ()
    #: The stall in progress: (its alert, the deadline that passed).
    stall: tuple[Alert, datetime] | None = None
    #: The compensated event that closed the saga (while it may still owe compensations).
    closing: Entry | None = None
    #: What a later event needs to carry on from here (see :meth:`resume`): the entries in
    #: fold order, the start, entries by id, the ids causes were cited by, the sources
    #: whose clocks were reported, the watermark and ``updated`` before the watermark.
    #: ``entries`` is the instance's timeline itself (the fold leaves it in fold order);
    #: ``applied``: how many of its entries the fold applied (the rest were received since).
    entries: list[Entry] = msgspec.field(default_factory=list)
    applied: int = 0
    start: Entry | None = None
    #: Entries by id, built when first needed (most events cite no cause) from ``_known``,
    #: the entries in the order they were recorded (the last of an id wins); None when no
    #: two entries share an id (the order does not matter then): the timeline and foreign.
    _by_id: dict[str, Entry] | None = None
    _known: list[Entry] | None = None
    #: None rather than empty sets, which cost 216 bytes each per instance in memory.
    cited: set[str] | None = None
    skewed: set[str] | None = None
    watermark: datetime | None = None
    updated: datetime | None = None

    # -- the pass --------------------------------------------------------------------------

    def run(self, watermark: datetime | None) -> None:
        """Derive the instance from all of its events, then judge it at ``watermark``."""
        i, m = self.i, self.m
        foreign = i.foreign
        everything = [*i.timeline, *foreign] if foreign else i.timeline  # not changed here
        behind, distinct, cited = self._causal_times(everything)
        entries = everything
        last = None
        for entry in everything:  # nothing to sort when the times increase (the common case)
            at = entry.at
            if last is not None and not last < at:
                entries = sorted(everything, key=m.fold_order)  # stable: a duplicate follows
                break
            last = at
        start, early = self._roles(entries)
        # Traffic of no saga from before this instance existed is none of its business; it is
        # set aside (its cause may still arrive and show it happened later). In fold order
        # such an entry comes before the start: none came there, none to look for.
        began = start.at
        aside = [e for e in entries if e.role == "unknown" and e.at < began] if early else None
        if aside:
            i.foreign = aside
            entries = [e for e in entries if not (e.role == "unknown" and e.at < began)]
        else:
            i.foreign = ()
        self.entries = entries
        self.start = start
        self._by_id, self._known = None, None if distinct else list(everything)
        self.cited = cited
        self._reset(start)
        step = self._step
        if behind:
            for entry in entries:
                step(entry, behind.get(id(entry)))
        else:
            for entry in entries:
                step(entry, None)
        self.updated = i.updated
        self._judge(watermark)

    def _roles(self, entries: list[Entry]) -> tuple[Entry, bool]:
        """Give ``entries`` (in fold order) their roles, which follow the definition (it may
        have changed since); returns the start (the first entry recorded as one that is no
        duplicate) and whether an entry of no role of the saga comes before it."""
        roles = self.m.roles
        start = None
        early = False
        for entry in entries:
            if start is None and entry.role == "start" and not entry.duplicate:
                start, role = entry, "start"
            else:
                role = roles.get(entry.event.type, "unknown")
                if start is None and role == "unknown":
                    early = True
            if entry.flags or entry.role != role:  # the JSON cached for no flags holds
                entry.role, entry.flags, entry.encoded = role, (), None
            entry.waited = None
        if start is None:
            raise LookupError(f"an instance of {self.m.name} without its start event")
        return start, early

    def resume(self, instance: Instance, news: Sequence[Entry], watermark: datetime | None) -> bool:
        """Carry on from the last pass with ``news`` (entries appended to the timeline since,
        in order) and a later watermark, when that gives what a whole new pass would; False
        otherwise (after which the caller makes a whole new pass, which resets everything).

        That is the common case, events that happened after everything known and after the
        last watermark: replaying everything before them again would reach the same point.
        ``instance`` is the one of the last pass (the fold keeps no reference to it between
        passes).
        """
        i = self.i = instance
        if self.watermark is not None and (watermark is None or watermark < self.watermark):
            return False
        entries = self.entries
        if entries is not i.timeline or self.applied + len(news) != len(entries):
            return False
        if self.start is None:
            return False
        if news and any(a is not b for a, b in zip(entries[-len(news) :], news, strict=True)):
            return False
        for new in news:
            if not self._carry_on(new):
                return False
        self._judge(watermark)
        return True

    def _carry_on(self, new: Entry) -> bool:
        """Apply ``new`` after everything applied so far, if its place is last; else False."""
        i, m = self.i, self.m
        obs = new.event
        cited = self.cited
        if cited and obs.id in cited:
            return False  # it causes an event already known: their order may change
        if obs.causation:
            behind = self._cause_of(new)
        else:  # see _cause_of
            new.at, behind = obs.time, None
        last = self.entries[self.applied - 1]
        if new.at <= last.at and m.fold_order(new) < m.fold_order(last):
            return False
        if self.watermark is not None and new.at <= self.watermark:
            return False
        new.role = m.roles.get(obs.type, "unknown")
        new.flags, new.encoded, new.waited = (), None, None
        i.updated, i.stuck_since = self.updated or i.updated, None
        self.applied += 1  # the next entry of the timeline: ``new`` itself (see resume)
        if self._by_id is None:
            if self._known is not None:
                self._known.append(new)
        elif not new.duplicate:
            self._by_id[obs.id] = new
        if obs.causation:
            if cited is None:
                cited = self.cited = set()
            cited.add(obs.causation)
        self._step(new, behind)
        self.updated = i.updated
        return True

    def _step(self, entry: Entry, behind: tuple[Entry, float] | None) -> None:
        """Apply one entry in fold order (the start was applied by :meth:`_reset`)."""
        if entry.duplicate:
            obs = entry.event
            self._flag(entry, "duplicate", f"{obs.source} sent event {obs.id} before")
            return
        start = self.start
        assert start is not None
        if entry is not start:
            due = self.i.due  # a deadline passed before the event: see _advance
            if due is not None and self.stall is None and due < entry.at:
                self._advance(entry.at)
            self._apply(entry, start)
        if behind is not None or entry.event.skew:
            self._note_skew(entry, behind)

    def _judge(self, watermark: datetime | None) -> None:
        """Let event time run to the watermark: a deadline it passed is a stall, still open."""
        i = self.i
        i.stuck_since = None
        i.updated = self.updated or i.updated
        if watermark is not None:
            self._advance(watermark, inclusive=True)
        self.watermark = watermark
        self.open_stalls = (self.stall[0],) if self.stall is not None else ()
        if self.stall is not None and i.phase in ACTIVE:
            i.stuck_since = self.stall[1]
            i.updated = max(i.updated, self.stall[1])
        i.timeline = self.entries
        self.applied = len(self.entries)
        if self.alerts.__class__ is list:  # kept in a form the collector does not walk
            self.alerts = tuple([(at, kept(alert)) for at, alert in self.alerts])

    def _cause_of(self, entry: Entry) -> tuple[Entry, float] | None:
        """Set ``entry.at`` from its cause's (see :meth:`_causal_times`), for one new entry."""
        entry.at = entry.event.time
        if not entry.event.causation:
            return None
        if self._by_id is None:
            known = self._known
            if known is None:  # ids are distinct: the timeline applied so far and foreign
                known = [*self.entries[: self.applied], *self.i.foreign]
            self._by_id = {e.event.id: e for e in known if not e.duplicate}
            self._known = None
        direct = self._by_id.get(entry.event.causation)
        if direct is None:
            return None
        entry.at = max(entry.event.time, direct.at + _TICK)
        gap = (direct.event.time - entry.event.time).total_seconds()
        return (direct, gap) if gap > self.m.skew_tolerance else None

    def _causal_times(
        self, timeline: list[Entry]
    ) -> tuple[dict[int, tuple[Entry, float]], bool, set[str] | None]:
        """Set each entry's ``at``: its time, or the latest of its causes' times when that is
        later (an effect cannot happen before its cause). Returns, for entries stamped before
        their direct cause by more than the tolerance, that cause and the seconds; whether
        no two entries (duplicates aside) share an id; and the causes cited (None: none)."""
        by_id: dict[str, Entry] = {}
        originals = 0
        cited: set[str] | None = None
        for entry in timeline:
            obs = entry.event
            if obs.causation:
                if cited is None:
                    cited = set()
                cited.add(obs.causation)
            if not entry.duplicate:
                by_id[obs.id] = entry
                originals += 1
        distinct = len(by_id) == originals
        if cited is None:  # the common case: no entry names a cause
            for entry in timeline:
                entry.at = entry.event.time
            return {}, distinct, None
        return self._chain_times(timeline, by_id), distinct, cited

    def _chain_times(
        self, timeline: list[Entry], by_id: dict[str, Entry]
    ) -> dict[int, tuple[Entry, float]]:
        """:meth:`_causal_times` for a timeline where some entries name a cause."""
        behind: dict[int, tuple[Entry, float]] = {}
        for entry in timeline:
            cause = by_id.get(entry.event.causation or "")
            if cause is None:  # the common case: no known cause
                entry.at = entry.event.time
                continue
            chain = [entry]
            while cause is not None and cause not in chain:  # up to the root cause
                chain.append(cause)
                cause = by_id.get(cause.event.causation or "")
            at = chain[-1].event.time
            for link in reversed(chain[:-1]):  # each effect a tick after its cause at least
                at = max(link.event.time, at + _TICK)
            entry.at = at
            direct = chain[1] if len(chain) > 1 else None
            if direct is not None:
                gap = (direct.event.time - entry.event.time).total_seconds()
                if gap > self.m.skew_tolerance:
                    behind[id(entry)] = (direct, gap)
        return behind

    def _reset(self, start: Entry) -> None:
        i, began = self.i, start.at
        deadline = self.m.overall
        i.started = i.updated = i.progress_at = began
        i.phase = "running"
        i.failed_at = i.finished = i.stuck_since = None
        i.deadline = began + deadline if deadline is not None else None
        i.done, i.compensations, i.waiting, i.anomalies = {}, (), _NONE, _NONE
        self._plan()

    def _advance(self, moment: datetime, *, inclusive: bool = False) -> None:
        """Let event time run to ``moment``: a deadline passed before it opens a stall."""
        i = self.i
        due = i.due
        if due is None or self.stall is not None:
            return
        if due > moment or (due == moment and not inclusive):
            return
        if i.phase in ACTIVE:
            alert = self._stuck_alert(due)
        elif i.waiting and self.closing is not None:  # closed, still owing compensations
            detail = f"closed owing {', '.join(i.waiting)}, not seen by {format_time(due)}"
            alert = self._flag(self.closing, "compensation_missing", detail, at=due)
        else:
            return
        self.stall = (alert, due)

    def _apply(self, entry: Entry, start: Entry) -> None:
        i = self.i
        at, role = entry.at, entry.role
        i.updated = max(i.updated, at)
        if role == "start":
            self._flag(entry, "unexpected", "a second start event")
            return
        if at < start.at:
            detail = f"happened before the start event {start.event.type}"
            self._flag(entry, "out_of_order", detail)
            self._orphan_alert(entry)
        if role == "unknown":
            self._flag(entry, "unexpected", f"{entry.event.type} is not part of {self.m.name}")
            return
        # the plan before (``expected`` is replaced, never changed in place; ``waiting`` may be)
        phase, expected, due, waiting = i.phase, i.expected, i.due, i.waiting
        waiting = list(waiting) if waiting else _NONE
        _ON_ROLE[role](self, entry)
        if i.phase == phase and i.expected == expected and i.due == due and i.waiting == waiting:
            return  # no progress: a stall goes on
        if self.stall is not None:
            waited = " or ".join(expected) or "progress"
            shown = format_time(self.stall[1])
            self._flag(entry, "late", f"the saga waited for {waited} until {shown}")
            self.stall = None
        if i.phase != phase and i.phase in _STATE_ALERTS:
            self._state_alert(phase, entry)

    # -- roles -----------------------------------------------------------------------------

    def _on_step(self, entry: Entry) -> None:
        i, m = self.i, self.m
        step, at = entry.event.type, entry.at
        if i.phase != "running":
            if i.phase == "compensating":
                self._flag(entry, "unexpected", "a step after the saga failed")
            else:
                self._flag(entry, "after_terminal", f"arrived after the saga {i.phase}")
            return
        done = i.done
        if step in done:
            self._flag(entry, "unexpected", f"{step} happened already")
            return
        step_index = m.step_index
        index = step_index[step]
        for other in done:
            if step_index.get(other, index) > index:  # a later step happened before this one
                self._flag(entry, "out_of_order", f"{step} came after {other}")
                break
        if index:  # the clock of the step started at the previous step (see _plan)
            base = done.get(m.step_events[index - 1]) or i.progress_at or i.started
        else:
            base = i.started
        waited = (at - base).total_seconds()
        entry.waited = waited if waited > 0.0 else 0.0  # as max(0.0, waited)
        done[step] = at
        progress = i.progress_at
        if progress is None or at > progress:
            i.progress_at = at
        if step in m.complete:
            self._on_complete(entry)
        else:
            self._plan()

    def _on_complete(self, entry: Entry) -> None:
        i, m = self.i, self.m
        if i.phase == "compensating":
            self._flag(entry, "unexpected", "completion while compensating")
            return
        if i.phase != "running":
            self._flag(entry, "after_terminal", f"arrived after the saga {i.phase}")
            return
        if i.compensations:
            detail = f"completed although {', '.join(i.compensations)} happened"
            self._flag(entry, "unexpected", detail)
        missing = [s for s in m.step_events if s not in i.done]
        if missing:
            self._flag(entry, "out_of_order", f"completed without {', '.join(missing)}")
        self._finish("completed", entry.at)

    def _on_fail(self, entry: Entry) -> None:
        i = self.i
        if i.phase == "completed":
            self._flag(entry, "after_terminal", "arrived after the saga completed")
            return
        if i.phase != "running":
            return  # a second failure report changes nothing
        owed = self._owe(entry)
        if i.waiting:
            i.phase = "compensating"
            self._plan()
        else:  # nothing to undo, or undone already (compensations before the failure)
            self._finish("compensated" if owed else "failed", entry.at)

    def _owe(self, entry: Entry) -> list[str]:
        """The saga failed at ``entry``: every step done owes its compensation, latest first;
        those not seen yet are awaited. Returns what is owed."""
        i = self.i
        i.failed_at = entry.at
        owed = [
            s.compensation
            for s in reversed(self.m.definition.steps)
            if s.compensation and s.event in i.done
        ]
        i.waiting = [c for c in owed if c not in i.compensations] or _NONE
        return owed

    def _on_compensation(self, entry: Entry) -> None:
        i = self.i
        compensation = entry.event.type
        step = self.m.compensates[compensation]
        if i.phase == "completed":
            self._flag(entry, "after_terminal", "arrived after the saga completed")
            return
        if step not in i.done:
            self._flag(entry, "unexpected", f"compensates {step}, which did not happen")
            return
        if compensation in i.compensations:
            self._flag(entry, "unexpected", f"{step} was compensated already")
            return
        i.compensations = [*i.compensations, compensation]
        if compensation not in i.waiting:
            return  # before the failure (it may be timed a little early): remembered
        i.waiting.remove(compensation)
        if not i.waiting:
            i.waiting = _NONE
        if i.phase == "compensating" and not i.waiting:
            self._finish("compensated", entry.at)
        else:
            self._plan()

    def _on_compensated(self, entry: Entry) -> None:
        i = self.i
        if i.phase == "completed":
            self._flag(entry, "after_terminal", "arrived after the saga completed")
            return
        if i.phase in ("failed", "compensated"):
            return  # the expected epilogue of a failure
        if i.phase == "running":  # closed without a failure event: every done step owes
            self._owe(entry)
        self.closing = entry
        self._finish("compensated", entry.at)

    # -- deadlines -------------------------------------------------------------------------

    def _finish(self, phase: str, at: datetime) -> None:
        i = self.i
        i.phase = phase
        i.finished = at
        if phase != "compensated":
            i.waiting = _NONE
        self._plan()

    def _plan(self) -> None:
        """Work out what the instance expects next and by when."""
        i, m = self.i, self.m
        due: datetime | None = None
        if i.phase == "running":
            done = i.done
            # the first step not done; its clock started at the step before it, else at the
            # last progress (the start for the first step)
            for step, within, previous, expected in m.plan:
                if step not in done:
                    i.expected = expected
                    if within is not None:
                        if previous is None:
                            due = i.started + within
                        else:
                            due = (done.get(previous) or i.progress_at or i.started) + within
                    break
            else:
                i.expected = m.expect_complete
        elif i.phase == "compensating":
            i.expected = list(i.waiting) if i.waiting else _NONE
            limit = m.compensation_limit
            if limit is not None and i.failed_at is not None:
                due = i.failed_at + limit
        else:
            i.expected = list(i.waiting) if i.waiting else _NONE
            wait = m.ledger_wait
            i.due = i.finished + wait if i.waiting and wait and i.finished else None
            return
        if i.deadline is not None and (due is None or i.deadline < due):
            due = i.deadline
        i.due = due

    # -- anomalies and alerts --------------------------------------------------------------

    def _note_skew(self, entry: Entry, behind: tuple[Entry, float] | None) -> None:
        """Report a source whose clock disagrees, once per source: it stamped an event in the
        future (corrected on arrival), or before the event that caused it."""
        obs = entry.event
        if not (obs.skew or behind) or (self.skewed and obs.source in self.skewed):
            return
        if self.skewed is None:
            self.skewed = set()
        self.skewed.add(obs.source)
        if behind is not None:
            cause, gap = behind
            detail = (
                f"stamped {format_duration(gap)} before its cause {cause.event.type}: "
                f"{obs.source}'s clock runs behind; ordered after its cause"
            )
        else:
            detail = (
                f"stamped {format_duration(-obs.skew)} in the future: {obs.source}'s clock "
                "runs ahead; its time was corrected to its arrival"
            )
        self._flag(entry, "clock_skew", detail)

    def _flag(self, entry: Entry, kind: str, detail: str, *, at: datetime | None = None) -> Alert:
        obs = entry.event
        if kind not in entry.flags:
            entry.flags = (*entry.flags, kind)
            entry.encoded = None
        anomaly = Anomaly(kind, obs.type, obs.id, obs.source, entry.at, detail)
        anomalies = self.i.anomalies
        if anomalies is _NONE:
            self.i.anomalies = [anomaly]
        else:
            anomalies.append(anomaly)
        data = self._alert_data(obs)
        data["anomaly"] = anomaly.to_dict()
        alert = Alert("saga.anomaly", self.m.name, self.i.correlation_id, data)
        self._alert(at or entry.at, alert)
        return alert

    def _alert(self, at: datetime, alert: Alert) -> None:
        alerts = self.alerts
        if alerts.__class__ is tuple:  # kept as a tuple between passes (see _judge)
            alerts = self.alerts = list(alerts)
        alerts.append((at, alert))  # type: ignore[union-attr]

    def _orphan_alert(self, entry: Entry) -> None:
        """What a monitor said when this event came before its start: an orphan, for a while."""
        alert = orphan_alert(self.m, self.i.correlation_id, entry.event)
        self._alert(entry.at, alert)

    def _stuck_alert(self, due: datetime) -> Alert:
        i = self.i
        data = self._alert_data(None)
        data["state"] = "stuck"
        data["previous_state"] = i.phase
        data["deadline"] = format_time(due)
        waited = (due - i.progress_at) if i.progress_at else None
        data["waited"] = format_duration(waited.total_seconds()) if waited else None
        alert = Alert("saga.stuck", self.m.name, i.correlation_id, data)
        self._alert(due, alert)
        return alert

    def _state_alert(self, before: str, entry: Entry) -> None:
        i = self.i
        data = self._alert_data(entry.event)
        data["previous_state"] = before
        alert = Alert(f"saga.{i.phase}", self.m.name, i.correlation_id, data)
        self._alert(entry.at, alert)

    def _alert_data(self, obs: Observation | None) -> dict[str, Any]:
        i = self.i
        data: dict[str, Any] = {
            "saga": self.m.name,
            "correlation_id": i.correlation_id,
            "state": i.phase,
            "started": format_time(i.started),
            "expected_next": list(i.expected),
            "due": format_time(i.due) if i.due else None,
        }
        if obs is not None:
            data["event"] = event_info(obs)
        return data


#: What the fold does with an entry of each role (beside the start and unknown events).
_ON_ROLE = {
    "step": _Fold._on_step,
    "complete": _Fold._on_complete,
    "fail": _Fold._on_fail,
    "compensation": _Fold._on_compensation,
    "compensated": _Fold._on_compensated,
}
