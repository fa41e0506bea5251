"""The records the monitor keeps: saga instances, their timelines, anomalies and alerts.

Everything here is plain data that round-trips through JSON (``to_dict`` / ``from_dict``), so
every store keeps the same document and the CLI, the web page and the JSON API read the same
fields. Times are aware UTC datetimes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from broker.envelope import Event, format_time, parse_time
from broker.jsontext import dumps_text

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
#: duplicate: the same source+id published again (a second broker message, not a redelivery);
#: unexpected: a type the saga does not know, or one that makes no sense in the instance's state;
#: out_of_order: event times contradict the step order; late: happened (by its event time) after
#: the deadline it was awaited by; after_terminal: happened after the instance finished; orphan:
#: belongs to a saga but no start event was seen for its correlation id; clock_skew: its source's
#: clock disagrees with the monitor's, so its time was corrected; compensation_missing: the saga
#: closed owing a done step's compensation, and the compensation did not come in time.
ANOMALY_KINDS = (
    "duplicate",
    "unexpected",
    "out_of_order",
    "late",
    "after_terminal",
    "orphan",
    "clock_skew",
    "compensation_missing",
)
MAX_DATA_CHARS = 4096
_NEVER = datetime.min.replace(tzinfo=UTC)
_encode_into = msgspec.json.Encoder().encode_into
_loads = msgspec.json.Decoder().decode
_intern = sys.intern
#: Up to how many entries an instance finds an event's identity by scanning its timeline.
_SCANNED = 16


@functools.lru_cache(maxsize=65_536)
def _iso(value: datetime) -> str:
    return format_time(value)


def _time(value: datetime | None) -> str | None:
    """RFC 3339 text; cached, since an instance's times are written again on every event."""
    return _iso(value) if value is not None else None


def _stamp(value: datetime | None) -> datetime | str | None:
    """A time for msgspec to write: itself in UTC (msgspec writes format_time's text), else
    format_time's text."""
    return value if value is None or value.tzinfo is UTC else _iso(value)


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``), or None."""
    if traceparent is None or len(traceparent) < 35 or traceparent[2] != "-":
        return None
    found = traceparent[3:35]
    try:
        valid = int(found, 16) != 0
    except ValueError:
        valid = False
    return found if valid else None


def _dumps(document: dict[str, Any]) -> str:
    """Compact JSON text of a document (msgspec; the standard library for what it refuses)."""
    try:
        return dumps_text(document)
    except (TypeError, ValueError, OverflowError):
        return json.dumps(document, default=str, separators=(",", ":"))


def _parse(value: str | None) -> datetime | None:
    return parse_time(value) if value else None


class Observation(msgspec.Struct, gc=False):
    """One event as the monitor saw it: what the timeline keeps of it.

    A msgspec Struct the garbage collector does not track (it holds no container that could
    lead back to it): a monitor keeps one per event, and the collector's passes over them cost
    more than their application. Its payload is kept as compact JSON (``payload``: bytes) when
    that gives the same value back, and decoded when :attr:`data` is read (the timeline view, a
    payload search); otherwise ``payload`` holds the value itself.
    """

    type: str
    source: str
    id: str
    time: datetime
    topic: str | None = None
    causation: str | None = None
    #: The event's data as compact JSON bytes, or the value itself (see :attr:`data`).
    payload: Any = None
    #: When the monitor received it (its own clock); None for events applied without one.
    arrived: datetime | None = None
    #: Seconds added to the event's own time to correct its source's clock (0: trusted as is).
    skew: float = 0.0
    #: The broker position of the message that carried it, when the backend has one: two
    #: messages at different positions with one source+id are a duplicate, the same position
    #: again is a redelivery.
    delivery: str | None = None
    #: The W3C trace id (32 hex digits) of the event's ``traceparent``: where to look it up
    #: in a tracing backend.
    trace: str | None = None

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclasses were

    def __eq__(self, other: object) -> bool:
        """Equal fields, the data compared decoded."""
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Observation)
        names = self.__struct_fields__
        return all(getattr(self, n) == getattr(other, n) for n in names if n != "payload") and (
            self.payload == other.payload or self.data == other.data
        )

    @property
    def data(self) -> Any:
        """The event's data (abbreviated when large or binary, see :func:`kept_data`)."""
        payload = self.payload
        return _loads(payload) if payload.__class__ is bytes else payload

    @classmethod
    def from_event(
        cls,
        event: Event,
        *,
        topic: str | None,
        now: datetime,
        skew: float = 0.0,
        delivery: str | None = None,
    ) -> Observation:
        """The observation of ``event`` received at ``now``; an event without ``time`` is
        stamped with ``now``, and ``skew`` seconds correct its source's clock."""
        moment = event.time or now
        extensions = event.extensions
        causation = extensions.get("causationid")
        traceparent = extensions.get("traceparent")
        return cls(  # types and sources repeat: one copy of each in memory
            _intern(event.type),
            _intern(event.source),
            event.id,
            moment + timedelta(seconds=skew) if skew else moment,
            topic,
            None if causation is None else str(causation),
            kept_data(event.data),
            now,
            skew,
            delivery,
            None if traceparent is None else trace_id(str(traceparent)),
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


def _compact(data: Any) -> bytes | None:
    """``data``, a JSON object or array, as compact JSON when that is small (kept whole by
    :func:`_bounded`) and decodes to an equal value; else None."""
    if data.__class__ is not dict and data.__class__ is not list:
        return None
    try:
        buffer = bytearray()  # then copied to exact-size bytes (msgspec's own are ~40% larger)
        _encode_into(data, buffer)
        if len(buffer) <= MAX_DATA_CHARS // 2 and _loads(buffer) == data:
            return bytes(buffer)
    except (TypeError, ValueError, msgspec.MsgspecError):
        pass
    return None


def kept_data(data: Any) -> Any:
    """What a timeline keeps of event data: small objects and arrays as compact JSON bytes
    (a third of their decoded size, and nothing for the garbage collector to walk), other
    values as they are, large or binary ones abbreviated."""
    compact = _compact(data)
    return compact if compact is not None else _bounded(data)


class Entry(msgspec.Struct, gc=False, repr_omit_defaults=True):
    """A timeline entry: the observation, its role in the saga and the anomalies it raised.

    Untracked by the garbage collector, like :class:`Observation`."""

    event: Observation
    role: str
    flags: tuple[str, ...] = ()
    #: A second copy of an event already in the timeline: shown, flagged, never applied.
    duplicate: bool = False
    #: The entry's JSON, cached until the entry's flags change.
    encoded: str | None = None
    #: For a step: seconds from the previous step (or the start); worked out by each fold.
    waited: float | None = None
    #: When it happened as the fold orders it: its time, or its cause's if that is later (an
    #: effect cannot happen before its cause; its clock was behind). Worked out by each fold.
    at: datetime = _NEVER

    def __post_init__(self) -> None:
        if self.at is _NEVER:
            self.at = self.event.time

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclasses were

    def __eq__(self, other: object) -> bool:
        """Equal event, role, flags and duplicate mark (what the fold works out is not
        compared, nor the cached JSON)."""
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Entry)
        return (self.event, self.role, self.flags, self.duplicate) == (
            other.event,
            other.role,
            other.flags,
            other.duplicate,
        )

    def to_json(self) -> str:
        """``to_dict`` as JSON text, cached (the stores' document)."""
        if self.encoded is None:
            payload = self.event.payload
            # stored compact already: spliced in as it is, never decoded to be encoded again;
            # times in UTC as msgspec writes them, the same text as format_time's
            data = msgspec.Raw(payload) if payload.__class__ is bytes else payload
            try:
                self.encoded = dumps_text(self._document(data, _stamp))
            except (TypeError, ValueError, OverflowError):  # what msgspec refuses
                self.encoded = _dumps(self.to_dict())
        return self.encoded

    def to_dict(self) -> dict[str, Any]:
        """The entry's JSON document."""
        return self._document(self.event.data, _time)

    def _document(self, data: Any, stamp: Callable[[datetime | None], Any]) -> dict[str, Any]:
        obs = self.event
        return {
            "type": obs.type,
            "source": obs.source,
            "id": obs.id,
            "time": stamp(obs.time),
            "topic": obs.topic,
            "causation": obs.causation,
            "data": data,
            "role": self.role,
            "flags": list(self.flags),
            "arrived": stamp(obs.arrived),
            "skew": obs.skew,
            "delivery": obs.delivery,
            "trace": obs.trace,
            "duplicate": self.duplicate,
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
            _loaded_data(raw.get("data")),
            _parse(raw.get("arrived")),
            float(raw.get("skew") or 0.0),
            raw.get("delivery"),
            raw.get("trace"),
        )
        return cls(obs, raw["role"], tuple(raw.get("flags", ())), bool(raw.get("duplicate")))


def _loaded_data(data: Any) -> Any:
    """Stored data as a timeline keeps it (stored abbreviated already: not again)."""
    compact = _compact(data)
    return compact if compact is not None else data


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
    #: Compensations seen, in event-time order.
    compensations: list[str] = msgspec.field(default_factory=list)
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
        for entries in (self.timeline, self.foreign):
            for entry in entries:
                if not entry.duplicate:
                    out.setdefault(entry.event.key, entry.event.delivery or "")
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
        """``to_dict`` as JSON text, reusing each timeline entry's JSON (the stores' document)."""
        timeline = [msgspec.Raw(entry.to_json()) for entry in self.timeline]
        foreign = [msgspec.Raw(entry.to_json()) for entry in self.foreign]
        try:
            return dumps_text(self._document(timeline, foreign, _stamp))
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
            compensations=list(raw.get("compensations", ())),
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


@dataclasses.dataclass(slots=True)
class Alert:
    """An alert to publish: ``saga.stuck``, ``saga.compensating``, ``saga.anomaly``, ..."""

    type: str
    saga: str
    correlation_id: str
    data: dict[str, Any]
    #: The id, worked out once (an alert is judged again on every event of its instance).
    _id: str | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def event_id(self) -> str:
        """A CloudEvent id derived from what the alert says: a re-sent alert keeps its id, and
        so does the same verdict reached by another monitor or after a restart."""
        if self._id is None:
            self._id = self._derive_id()
        return self._id

    def _derive_id(self) -> str:
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
        if self.type == "saga.stuck":  # two stalls may share the overall deadline
            facts.append(data.get("expected_next"))
        if self.type == "saga.resolved":  # the same resolution whenever it is noticed
            facts = [self.type, self.saga, self.correlation_id, data.get("resolves")]
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
