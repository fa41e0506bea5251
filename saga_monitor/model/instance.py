"""One saga instance (:class:`Instance`): its timeline, what the saga machine derived from it,
and its states; with the JSON document every store keeps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from broker.envelope import parse_time
from saga_monitor.model.documents import _dumps, _parse, _stamp, _time
from saga_monitor.model.observation import Observation
from saga_monitor.model.timeline import Anomaly, Entry

STATES = ("running", "completed", "compensating", "compensated", "failed", "stuck")
ACTIVE = frozenset(("running", "compensating"))
TERMINAL = frozenset(("completed", "compensated", "failed"))
#: Up to how many entries an instance finds an event's identity by scanning its timeline.
_SCANNED = 16


class _InstanceDocument(msgspec.Struct):
    """The fields of an instance's JSON document (``Instance.to_dict``), in its order."""

    saga: str
    correlation_id: str
    state: str
    started: Any
    updated: Any
    expected_next: list[str]
    due: Any
    stuck_since: Any
    owed: list[str]
    events: int
    anomalies: list[dict[str, Any]] | tuple[()]
    phase: str
    progress_at: Any
    failed_at: Any
    finished: Any
    deadline: Any
    done: dict[str, Any]
    compensations: list[str] | tuple[()]
    waiting: list[str]
    timeline: msgspec.Raw
    foreign: msgspec.Raw
    seen: dict[str, str]
    alerted: list[str] | tuple[()]
    open_alerts: dict[str, dict[str, Any]]
    judged: Any
    check_at: Any


_encode = msgspec.json.Encoder().encode
#: The JSON of an empty list of entries (most instances have no ``foreign`` entries).
_NO_ENTRIES = msgspec.Raw("[]")


class Instance(msgspec.Struct, gc=False):
    """One saga instance: a (saga, correlation id) and everything observed about it.

    The timeline is the record; everything else is derived from it by the saga machine (a fold
    over the events in event-time order, judged against the monitor's watermark), so the same
    events always give the same instance, whatever order they were delivered in.

    ``phase`` is where the saga is (running, compensating or a terminal state); ``state`` adds
    ``stuck`` on top of an active phase whose deadline the watermark passed.

    A msgspec Struct the garbage collector does not track (nothing it holds leads back to it;
    its lists and dicts are tracked on their own): a monitor keeps thousands, and the
    collector's full passes would walk every field of each. Equality ignores the fold and how
    the (source, id) index is held.

    The saga machine replaces ``expected``, ``waiting`` and ``anomalies`` rather than changing
    them in place, and gives instances one shared list for each empty one and for each step's
    ``expected`` (a list apiece would be walked by every full collection): read them, or
    assign a new list, but do not change them in place.
    """

    saga: str
    correlation_id: str
    started: datetime
    updated: datetime
    phase: str = "running"
    progress_at: datetime | None = None
    failed_at: datetime | None = None
    finished: datetime | None = None
    #: The deadline that passed while the saga was active (None while it is not stuck).
    stuck_since: datetime | None = None
    deadline: datetime | None = None
    due: datetime | None = None
    expected: list[str] = msgspec.field(default_factory=list)
    done: dict[str, datetime] = msgspec.field(default_factory=dict)
    #: Compensations seen, in event-time order (an empty tuple while none: an empty list
    #: would be one more object for the garbage collector to walk per instance).
    compensations: list[str] | tuple[()] = ()
    #: The ledger: compensations owed (of steps done before the failure) and not seen yet.
    waiting: list[str] = msgspec.field(default_factory=list)
    timeline: list[Entry] = msgspec.field(default_factory=list)
    #: Events of no saga that happened before the start: kept out of the timeline.
    foreign: list[Entry] | tuple[()] = ()
    anomalies: list[Anomaly] = msgspec.field(default_factory=list)
    #: source+id of every event in the timeline -> the broker position that carried it ("" when
    #: the backend has none); None while the timeline is short: then its entries tell (see
    #: :meth:`delivery_of`), and the instance holds no copy of each event's identity.
    seen: dict[str, str] | None = None
    #: Ids of the alerts already handed to the outbox (each alert goes out once).
    alerted: list[str] | tuple[()] = ()
    #: Stuck alerts sent and not yet resolved: alert id -> what the resolving alert repeats.
    open_alerts: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    #: The monitor's watermark when the instance was last judged.
    judged: datetime | None = None
    #: When the monitor must look at the instance again (a deadline, or an alert that waits for
    #: the watermark); None when nothing can happen without a new event.
    check_at: datetime | None = None
    #: The saga machine's last pass, kept in memory (never stored) so that the next event can
    #: carry on from it instead of replaying the whole timeline.
    fold: Any = None

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclasses were

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Instance)
        return (
            all(
                getattr(self, name) == getattr(other, name)
                for name in self.__struct_fields__
                if name not in ("fold", "seen")
            )
            and self.seen_deliveries() == other.seen_deliveries()
        )

    def delivery_of(self, obs: Observation) -> str | None:
        """The broker position ("" when unknown) of the message that brought the event with
        ``obs``'s source and id into the timeline; None for an event not seen yet."""
        seen = self.seen
        if seen is not None:
            return seen.get(obs.key)
        timeline, foreign = self.timeline, self.foreign
        if len(timeline) + len(foreign) > _SCANNED:  # from now on in a dict, kept up to date
            seen = self.seen = self.seen_deliveries()
            return seen.get(obs.key)
        source, event_id = obs.source, obs.id
        for entries in (timeline, foreign):
            for entry in entries:
                known = entry.event
                if known.id == event_id and known.source == source and not entry.duplicate:
                    return known.delivery or ""
        return None

    def note_alerted(self, alert_id: str) -> None:
        """Note that the alert ``alert_id`` went to the outbox (an empty tuple until then)."""
        self.alerted = [*self.alerted, alert_id]

    def saw(self, obs: Observation) -> None:
        """Note that ``obs`` was recorded (its entry appended to the timeline)."""
        if self.seen is not None:
            self.seen[obs.key] = obs.delivery or ""

    def seen_deliveries(self) -> dict[str, str]:
        """source+id of every event recorded -> the broker position that carried it."""
        if self.seen is not None:
            return dict(self.seen)
        out: dict[str, str] = {}
        foreign = self.foreign
        for entries in (self.timeline, foreign) if foreign else (self.timeline,):
            for entry in entries:
                if not entry.duplicate:
                    obs = entry.event  # its key, as Observation.key spells it
                    key = f"{obs.source}\x1f{obs.id}"
                    if key not in out:  # the first one seen
                        out[key] = obs.delivery or ""
        return out

    @property
    def state(self) -> str:
        """running, completed, compensating, compensated, failed or stuck."""
        return "stuck" if self.stuck_since is not None and self.phase in ACTIVE else self.phase

    def summary(self) -> dict[str, Any]:
        """The fields of ``choreo saga ls --output json``."""
        out = self._head(_time)
        out["anomalies"] = [
            {"kind": a.kind, "type": a.type, "id": a.event_id, "detail": a.detail}
            for a in self.anomalies
        ]
        return out

    def _head(self, stamp: Callable[[datetime | None], Any]) -> dict[str, Any]:
        return {
            "saga": self.saga,
            "correlation_id": self.correlation_id,
            "state": self.state,
            "started": stamp(self.started),
            "updated": stamp(self.updated),
            "expected_next": list(self.expected),
            "due": stamp(self.due),
            "stuck_since": stamp(self.stuck_since),
            "owed": list(self.waiting),
            "events": len(self.timeline),
        }

    def to_dict(self) -> dict[str, Any]:
        """The full JSON document (what the stores keep and ``saga show --output json`` prints)."""
        timeline = [e.to_dict() for e in self.timeline]
        return self._document(timeline, [e.to_dict() for e in self.foreign], _time)

    def _document(
        self, timeline: list[Any], foreign: list[Any], stamp: Callable[[datetime | None], Any]
    ) -> dict[str, Any]:
        out = self._head(stamp)
        out.update(
            {
                "anomalies": [a.to_dict() for a in self.anomalies],
                "phase": self.phase,
                "progress_at": stamp(self.progress_at),
                "failed_at": stamp(self.failed_at),
                "finished": stamp(self.finished),
                "deadline": stamp(self.deadline),
                "done": {step: stamp(at) for step, at in self.done.items()},
                "compensations": list(self.compensations),
                "waiting": list(self.waiting),
                "timeline": timeline,
                "foreign": foreign,
                "seen": self.seen_deliveries(),
                "alerted": list(self.alerted),
                "open_alerts": dict(self.open_alerts),
                "judged": stamp(self.judged),
                "check_at": stamp(self.check_at),
            }
        )
        return out

    def to_json(self) -> str:
        """``to_dict`` as JSON text, reusing each timeline entry's JSON (the stores' document).

        Written on every change of the instance: its fields go to msgspec in a Struct of the
        document's layout (no dict built first), the timeline as its entries' cached JSON."""
        timeline = msgspec.Raw(
            "[" + ",".join([e.encoded or e.to_json() for e in self.timeline]) + "]"
        )
        foreign = self.foreign
        if foreign:
            foreign_raw = msgspec.Raw("[" + ",".join([e.to_json() for e in foreign]) + "]")
        else:
            foreign_raw = _NO_ENTRIES
        stamp = _stamp
        done: dict[str, Any] = self.done
        for at in done.values():
            if at.tzinfo is not UTC:  # msgspec would write its offset: format_time's text
                done = {step: stamp(at) for step, at in done.items()}
                break
        phase = self.phase
        stuck_since = self.stuck_since
        anomalies = self.anomalies
        seen = self.seen
        document = _InstanceDocument(
            self.saga,
            self.correlation_id,
            "stuck" if stuck_since is not None and phase in ACTIVE else phase,
            stamp(self.started),
            stamp(self.updated),
            self.expected,
            stamp(self.due),
            stamp(stuck_since),
            self.waiting,
            len(self.timeline),
            [a.to_dict() for a in anomalies] if anomalies else (),
            phase,
            stamp(self.progress_at),
            stamp(self.failed_at),
            stamp(self.finished),
            stamp(self.deadline),
            done,
            self.compensations,
            self.waiting,
            timeline,
            foreign_raw,
            seen if seen is not None else self.seen_deliveries(),
            self.alerted,
            self.open_alerts,
            stamp(self.judged),
            stamp(self.check_at),
        )
        try:
            return _encode(document).decode()
        except (TypeError, ValueError, OverflowError):  # what msgspec refuses: as _dumps does
            head = _dumps(self._document([], [e.to_dict() for e in self.foreign], _time))
        entries = ",".join(entry.to_json() for entry in self.timeline)
        return head.replace('"timeline":[]', f'"timeline":[{entries}]', 1)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Instance:
        instance = cls._from_dict(raw)
        if instance.seen is not None:
            stored, instance.seen = instance.seen, None
            if instance.seen_deliveries() != stored:  # not what the timeline tells: kept
                instance.seen = stored
        return instance

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> Instance:
        return cls(
            saga=raw["saga"],
            correlation_id=raw["correlation_id"],
            started=parse_time(raw["started"]),
            updated=parse_time(raw["updated"]),
            phase=raw["phase"],
            progress_at=_parse(raw.get("progress_at")),
            failed_at=_parse(raw.get("failed_at")),
            finished=_parse(raw.get("finished")),
            stuck_since=_parse(raw.get("stuck_since")),
            deadline=_parse(raw.get("deadline")),
            due=_parse(raw.get("due")),
            expected=list(raw.get("expected_next", ())),
            done={step: parse_time(at) for step, at in raw.get("done", {}).items()},
            compensations=list(raw.get("compensations", ())) or (),
            waiting=list(raw.get("waiting", ())),
            timeline=[Entry.from_dict(e) for e in raw.get("timeline", ())],
            foreign=[Entry.from_dict(e) for e in raw.get("foreign", ())] or (),
            anomalies=[Anomaly.from_dict(a) for a in raw.get("anomalies", ())],
            seen={key: str(value or "") for key, value in raw.get("seen", {}).items()},
            alerted=list(raw.get("alerted", ())) or (),
            open_alerts=dict(raw.get("open_alerts", {})),
            judged=_parse(raw.get("judged")),
            check_at=_parse(raw.get("check_at")),
        )
