"""What an instance records about each event: its timeline :class:`Entry` (the observation,
its role and its flags) and the :class:`Anomaly` records it raised, with their JSON documents."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from broker.envelope import parse_time
from saga_monitor.model.documents import _dumps, _parse, _stamp, _time
from saga_monitor.model.observation import Observation, _loaded_data

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
_NEVER = datetime.min.replace(tzinfo=UTC)


class _EntryDocument(msgspec.Struct):
    """The fields of an entry's JSON document (``Entry.to_dict``), in its order: msgspec
    writes a Struct without building a dict first."""

    type: str
    source: str
    id: str
    time: Any
    topic: str | None
    causation: str | None
    data: Any
    role: str
    flags: tuple[str, ...]
    arrived: Any
    skew: float
    delivery: str | None
    trace: str | None
    duplicate: bool


_encode = msgspec.json.Encoder().encode


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
        encoded = self.encoded
        if encoded is None:
            obs = self.event
            payload = obs.payload
            # stored compact already: spliced in as it is, never decoded to be encoded again;
            # times in UTC as msgspec writes them, the same text as format_time's
            data = msgspec.Raw(payload) if payload.__class__ is bytes else payload
            document = _EntryDocument(
                obs.type,
                obs.source,
                obs.id,
                _stamp(obs.time),
                obs.topic,
                obs.causation,
                data,
                self.role,
                self.flags,
                _stamp(obs.arrived),
                obs.skew,
                obs.delivery,
                obs.trace,
                self.duplicate,
            )
            try:
                encoded = _encode(document).decode()
            except (TypeError, ValueError, OverflowError):  # what msgspec refuses
                encoded = _dumps(self.to_dict())
            self.encoded = encoded
        return encoded

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
