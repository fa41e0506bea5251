"""An alert to publish (:class:`Alert`), with an id derived from what it says."""

from __future__ import annotations

import json
import uuid
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
