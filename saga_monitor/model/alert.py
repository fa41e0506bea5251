"""An alert to publish (:class:`Alert`), with an id derived from what it says."""

from __future__ import annotations

import hashlib
import json
import uuid
from json.encoder import encode_basestring_ascii
from typing import Any

import msgspec


class Alert(msgspec.Struct, gc=False, repr_omit_defaults=True):
    """An alert to publish: ``saga.stuck``, ``saga.compensating``, ``saga.anomaly``, ...

    A msgspec Struct the garbage collector does not track (its data leads nowhere back to
    it): the saga machine keeps the alerts an instance's history implies with the instance,
    and a tracked object per kept instance is walked by every full collection. Equality
    ignores the cached id."""

    type: str
    saga: str
    correlation_id: str
    data: dict[str, Any]
    #: The id, worked out once (an alert is judged again on every event of its instance).
    _id: str | None = None

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Alert)
        return (self.type, self.saga, self.correlation_id, self.data) == (
            other.type,
            other.saga,
            other.correlation_id,
            other.data,
        )

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
        return _uuid5("choreo-saga-alert:" + _dumps_facts(facts))

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


#: What ``uuid.uuid5(uuid.NAMESPACE_URL, name)`` hashes before the name.
_NAMESPACE = uuid.NAMESPACE_URL.bytes


def _dumps_facts(facts: list[Any]) -> str:
    """``json.dumps(facts)`` (its separators, ASCII only) for a list of text, None and lists of
    text, written here; anything else by ``json.dumps`` itself. Alert ids are derived from this
    text, so it must not change by a byte (tests/saga_monitor/test_alert_ids.py)."""
    parts = []
    for fact in facts:
        if fact is None:
            parts.append("null")
        elif fact.__class__ is str:
            parts.append(encode_basestring_ascii(fact))
        elif fact.__class__ is list and all(item.__class__ is str for item in fact):
            parts.append("[" + ", ".join([encode_basestring_ascii(item) for item in fact]) + "]")
        else:
            return json.dumps(facts)
    return "[" + ", ".join(parts) + "]"


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(uuid.NAMESPACE_URL, name))`` without the UUID object in between."""
    digest = bytearray(hashlib.sha1(_NAMESPACE + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
