"""What a handler is handling, so events it publishes inherit causation, correlation and trace.

Inside a handler, :func:`current_event` is the event being handled. For an event published from
there, :func:`derive_extensions` fills in ``causationid`` (the handled event's id),
``correlationid`` (the handled event's correlation) and a child ``traceparent`` (same trace, new
span); outside a handler it starts a new trace. Values already set on the event are kept.
"""

from __future__ import annotations

import random
import re
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

from broker.envelope import Event, ExtensionValue

if TYPE_CHECKING:
    from broker.ports import Delivery

__all__ = [
    "current_delivery",
    "current_event",
    "derive_extensions",
    "new_traceparent",
    "reset_current",
    "set_current",
]

_current: ContextVar[Event | None] = ContextVar("choreo_current_event", default=None)
_delivery: ContextVar[Delivery | None] = ContextVar("choreo_current_delivery", default=None)
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def current_event() -> Event | None:
    """The event the running handler is handling, or ``None`` outside handlers."""
    return _current.get()


def current_delivery() -> Delivery | None:
    """The broker message carrying the event being handled (its topic, position and
    redelivery count), or ``None`` outside handlers."""
    return _delivery.get()


def set_current(
    event: Event, delivery: Delivery | None = None
) -> tuple[Token[Event | None], Token[Delivery | None]]:
    """Make ``event`` (carried by ``delivery``) the current one (the consumer does this around
    handler calls)."""
    return _current.set(event), _delivery.set(delivery)


def reset_current(tokens: tuple[Token[Event | None], Token[Delivery | None]]) -> None:
    """Undo :func:`set_current`."""
    _current.reset(tokens[0])
    _delivery.reset(tokens[1])


def new_traceparent(parent: str | None = None) -> str:
    """A W3C traceparent: a child span of ``parent`` when it is valid, else a new trace."""
    span = f"{random.getrandbits(64):016x}"
    match = _TRACEPARENT.match(parent) if parent else None
    if match:
        return f"00-{match.group(2)}-{span}-{match.group(4)}"
    return f"00-{random.getrandbits(128):032x}-{span}-01"


def derive_extensions(extensions: dict[str, ExtensionValue]) -> None:
    """Fill causation, correlation and trace into ``extensions`` (in place) from the handler."""
    parent = _current.get()
    if parent is None:
        if "traceparent" not in extensions:
            extensions["traceparent"] = new_traceparent()
        return
    extensions.setdefault("causationid", parent.id)
    if parent.correlationid is not None:
        extensions.setdefault("correlationid", parent.correlationid)
    extensions.setdefault("traceparent", new_traceparent(parent.traceparent))
    if parent.extensions.get("tracestate") is not None:
        extensions.setdefault("tracestate", parent.extensions["tracestate"])
