"""One event as the monitor saw it (:class:`Observation`), and what a timeline keeps of its data.

Small JSON objects and arrays are kept as compact JSON bytes, decoded when read; large or binary
data is abbreviated (:func:`kept_data`).
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timedelta
from typing import Any

import msgspec

from broker.envelope import Event

MAX_DATA_CHARS = 4096
_encode_into = msgspec.json.Encoder().encode_into
_loads = msgspec.json.Decoder().decode
_intern = sys.intern
_hex32 = re.compile("[0-9a-f]{32}").fullmatch
_ZEROS = "0" * 32


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``), or None."""
    if traceparent is None or len(traceparent) < 35 or traceparent[2] != "-":
        return None
    found = traceparent[3:35]
    if _hex32(found):  # the common case, without parsing a 128-bit number
        return None if found == _ZEROS else found
    try:  # what else int() reads as hexadecimal (signs, underscores, spaces) is kept as before
        valid = int(found, 16) != 0
    except ValueError:
        valid = False
    return found if valid else None


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
        return cls.observe(event, topic, now, skew, delivery)

    @classmethod
    def observe(
        cls,
        event: Event,
        topic: str | None,
        now: datetime,
        skew: float = 0.0,
        delivery: str | None = None,
    ) -> Observation:
        """:meth:`from_event` with positional arguments (the monitor's call, once an event)."""
        moment = event.time or now
        extensions = event.extensions
        causation = extensions.get("causationid")
        traceparent = extensions.get("traceparent")
        data = event.data
        payload = _compact_json(data) if data.__class__ is dict or data.__class__ is list else None
        return cls(  # types and sources repeat: one copy of each in memory
            _intern(event.type),
            _intern(event.source),
            event.id,
            moment + timedelta(seconds=skew) if skew else moment,
            topic,
            None if causation is None else str(causation),
            _bounded(data) if payload is None else payload,
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
    return _compact_json(data)


def _compact_json(data: dict[str, Any] | list[Any]) -> bytes | None:
    """:func:`_compact` of a dict or a list."""
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


def _loaded_data(data: Any) -> Any:
    """Stored data as a timeline keeps it (stored abbreviated already: not again)."""
    compact = _compact(data)
    return compact if compact is not None else data
