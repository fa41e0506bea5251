"""The records the monitor keeps: saga instances, their timelines, anomalies and alerts.

Everything here is plain data that round-trips through JSON (``to_dict`` / ``from_dict``), so
every store keeps the same document and the CLI, the web page and the JSON API read the same
fields. Times are aware UTC datetimes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from broker.envelope import Event, format_time, parse_time

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

STATES = ("running", "completed", "compensating", "compensated", "failed", "stuck")
ACTIVE = frozenset(("running", "compensating"))
TERMINAL = frozenset(("completed", "compensated", "failed"))
#: duplicate: same source+id seen again; unexpected: a type the saga does not know, or one that
#: makes no sense in the instance's state; out_of_order: event times contradict the step order;
#: late: arrived after its deadline (the instance was stuck); after_terminal: arrived after the
#: instance finished; orphan: belongs to a saga but no start event was seen for its correlation id.
ANOMALY_KINDS = ("duplicate", "unexpected", "out_of_order", "late", "after_terminal", "orphan")
MAX_DATA_CHARS = 4096


@functools.lru_cache(maxsize=65_536)
def _iso(value: datetime) -> str:
    return format_time(value)


def _time(value: datetime | None) -> str | None:
    """RFC 3339 text; cached, since an instance's times are written again on every event."""
    return _iso(value) if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return parse_time(value) if value else None


@dataclasses.dataclass(slots=True)
class Observation:
    """One event as the monitor saw it: what the timeline keeps of it."""

    type: str
    source: str
    id: str
    time: datetime
    topic: str | None = None
    causation: str | None = None
    data: Any = None

    @classmethod
    def from_event(cls, event: Event, *, topic: str | None, now: datetime) -> Observation:
        """The observation of ``event``; an event without ``time`` is stamped with ``now``."""
        return cls(
            type=event.type,
            source=event.source,
            id=event.id,
            time=event.time or now,
            topic=topic,
            causation=event.causationid,
            data=_bounded(event.data),
        )

    @property
    def key(self) -> str:
        """The (source, id) identity that makes two deliveries the same event."""
        return f"{self.source}\x1f{self.id}"


def _size(data: Any, budget: int) -> int:
    """A cheap upper estimate of the JSON size of ``data``, giving up past ``budget``."""
    if data is None or isinstance(data, bool | int | float):
        return 8
    if isinstance(data, str):
        return len(data) + 2
    if isinstance(data, dict):
        total = 2
        for key, value in data.items():
            kind = type(value)
            if kind is str:
                total += len(key) + len(value) + 6
            elif value is None or kind is int or kind is float or kind is bool:
                total += len(key) + 12
            else:
                total += len(key) + 4 + _size(value, budget)
            if total > budget:
                break
        return total
    if isinstance(data, list):
        total = 2
        for item in data:
            total += _size(item, budget) + 1
            if total > budget:
                break
        return total
    return budget + 1


def _bounded(data: Any) -> Any:
    """Event data small enough to keep in a timeline (large or binary data is abbreviated)."""
    if isinstance(data, bytes | bytearray | memoryview):
        return f"<{len(bytes(data))} bytes>"
    if _size(data, MAX_DATA_CHARS // 2) <= MAX_DATA_CHARS // 2:
        return data
    try:
        text = json.dumps(data, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(data)[:MAX_DATA_CHARS]
    return data if len(text) <= MAX_DATA_CHARS else text[:MAX_DATA_CHARS] + "..."


@dataclasses.dataclass(slots=True)
class Entry:
    """A timeline entry: the observation, its role in the saga and the anomalies it raised."""

    event: Observation
    role: str
    flags: list[str] = dataclasses.field(default_factory=list)
    #: The entry's JSON, made once: entries never change after the event that added them.
    encoded: str | None = dataclasses.field(default=None, compare=False, repr=False)

    def to_json(self) -> str:
        if self.encoded is None:
            self.encoded = json.dumps(self.to_dict(), default=str, separators=(",", ":"))
        return self.encoded

    def to_dict(self) -> dict[str, Any]:
        obs = self.event
        return {
            "type": obs.type,
            "source": obs.source,
            "id": obs.id,
            "time": _time(obs.time),
            "topic": obs.topic,
            "causation": obs.causation,
            "data": obs.data,
            "role": self.role,
            "flags": list(self.flags),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Entry:
        obs = Observation(
            raw["type"],
            raw["source"],
            raw["id"],
            parse_time(raw["time"]),
            raw.get("topic"),
            raw.get("causation"),
            raw.get("data"),
        )
        return cls(obs, raw["role"], list(raw.get("flags", ())))


@dataclasses.dataclass(slots=True)
class Anomaly:
    """Something odd about one event in one saga instance."""

    kind: str
    type: str
    event_id: str
    source: str
    time: datetime
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "type": self.type,
            "id": self.event_id,
            "source": self.source,
            "time": _time(self.time),
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Anomaly:
        return cls(
            raw["kind"],
            raw["type"],
            raw["id"],
            raw["source"],
            parse_time(raw["time"]),
            raw["detail"],
        )


@dataclasses.dataclass(slots=True)
class Instance:
    """One saga instance: a (saga, correlation id) and everything observed about it.

    ``phase`` is where the saga is (running, compensating or a terminal state); ``state`` adds
    ``stuck`` on top of an active phase whose deadline passed.
    """

    saga: str
    correlation_id: str
    started: datetime
    updated: datetime
    phase: str = "running"
    progress_at: datetime | None = None
    failed_at: datetime | None = None
    finished: datetime | None = None
    stuck_since: datetime | None = None
    deadline: datetime | None = None
    due: datetime | None = None
    expected: list[str] = dataclasses.field(default_factory=list)
    done: dict[str, datetime] = dataclasses.field(default_factory=dict)
    compensations: list[str] = dataclasses.field(default_factory=list)
    waiting: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    timeline: list[Entry] = dataclasses.field(default_factory=list)
    anomalies: list[Anomaly] = dataclasses.field(default_factory=list)
    seen: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def state(self) -> str:
        """running, completed, compensating, compensated, failed or stuck."""
        return "stuck" if self.stuck_since is not None and self.phase in ACTIVE else self.phase

    def summary(self) -> dict[str, Any]:
        """The fields of ``choreo saga ls --output json``."""
        return {
            "saga": self.saga,
            "correlation_id": self.correlation_id,
            "state": self.state,
            "started": _time(self.started),
            "updated": _time(self.updated),
            "expected_next": list(self.expected),
            "due": _time(self.due),
            "stuck_since": _time(self.stuck_since),
            "events": len(self.timeline),
            "anomalies": [
                {"kind": a.kind, "type": a.type, "id": a.event_id, "detail": a.detail}
                for a in self.anomalies
            ],
        }

    def to_dict(self) -> dict[str, Any]:
        """The full JSON document (what the stores keep and ``saga show --output json`` prints)."""
        return {
            **self.summary(),
            "anomalies": [a.to_dict() for a in self.anomalies],
            "phase": self.phase,
            "progress_at": _time(self.progress_at),
            "failed_at": _time(self.failed_at),
            "finished": _time(self.finished),
            "deadline": _time(self.deadline),
            "done": {step: _time(at) for step, at in self.done.items()},
            "compensations": list(self.compensations),
            "waiting": list(self.waiting),
            "missing": list(self.missing),
            "timeline": [e.to_dict() for e in self.timeline],
            "seen": dict(self.seen),
        }

    def to_json(self) -> str:
        """``to_dict`` as JSON text, reusing each timeline entry's JSON (the stores' document)."""
        timeline, self.timeline = self.timeline, []
        try:
            head = json.dumps(self.to_dict(), default=str, separators=(",", ":"))
        finally:
            self.timeline = timeline
        entries = ",".join(entry.to_json() for entry in timeline)
        return head.replace('"timeline":[]', f'"timeline":[{entries}]', 1)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Instance:
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
            compensations=list(raw.get("compensations", ())),
            waiting=list(raw.get("waiting", ())),
            missing=list(raw.get("missing", ())),
            timeline=[Entry.from_dict(e) for e in raw.get("timeline", ())],
            anomalies=[Anomaly.from_dict(a) for a in raw.get("anomalies", ())],
            seen=dict(raw.get("seen", {})),
        )


@dataclasses.dataclass(slots=True)
class Alert:
    """An alert to publish: ``saga.stuck``, ``saga.compensating``, ``saga.anomaly``, ..."""

    type: str
    saga: str
    correlation_id: str
    data: dict[str, Any]

    @property
    def event_id(self) -> str:
        """A CloudEvent id derived from what the alert says: a re-sent alert keeps its id."""
        data = self.data
        facts = [
            self.type,
            self.saga,
            self.correlation_id,
            (data.get("event") or {}).get("id"),
            (data.get("anomaly") or {}).get("kind"),
            data.get("previous_state"),
            data.get("deadline"),
            data.get("state"),
        ]
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "choreo-saga-alert:" + json.dumps(facts)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "saga": self.saga,
            "correlation_id": self.correlation_id,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Alert:
        return cls(raw["type"], raw["saga"], raw["correlation_id"], dict(raw["data"]))


def utcnow() -> datetime:
    """The wall clock, as the default clock of the monitor (never called by the machine)."""
    return datetime.now(UTC)
