"""How the SQLite broker stores an event: one ``log`` row with the structured-mode JSON."""

from __future__ import annotations

from broker.envelope import Event
from broker.errors import EnvelopeError

__all__ = ["Row", "decode", "encode", "read"]

#: (topic, event id, partition key, body) as :meth:`Store.append` takes it.
Row = tuple[str, str, str | None, str]


def encode(topic: str, event: Event) -> Row:
    """The ``log`` row of ``event`` published to ``topic``."""
    return topic, event.id, event.partitionkey, event.to_json()


def decode(body: str) -> tuple[Event | None, EnvelopeError | None]:
    """The event in a stored body, or why there is none."""
    try:
        return Event.from_json(body), None
    except EnvelopeError as exc:
        return None, exc


def read(body: str) -> Event:
    """The event in a stored body (raises EnvelopeError)."""
    return Event.from_json(body)
