"""What a handler is handling, so events it publishes inherit causation, correlation and trace.

Inside a handler, :func:`current_event` is the event being handled. For an event published from
there, :func:`derive_extensions` fills in ``causationid`` (the handled event's id),
``correlationid`` (the handled event's correlation) and a child ``traceparent`` (same trace, new
span); outside a handler it starts a new trace. Values already set on the event are kept.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from collections.abc import Iterator, Sequence
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

from broker.envelope import Event, ExtensionValue

if TYPE_CHECKING:
    from broker.ports import Delivery

__all__ = [
    "NO_DELIVERIES",
    "current_deliveries",
    "current_delivery",
    "current_event",
    "current_handling",
    "derive_extensions",
    "enter_handler",
    "leave_handler",
    "new_traceparent",
    "new_traceparents",
    "reset_current",
    "set_current",
    "set_current_batch",
]

#: What the running handler handles: (event, its delivery, the deliveries of a batch).
_Handling = tuple["Event | None", "Delivery | None", "Sequence[Delivery]"]
_handling: ContextVar[_Handling | None] = ContextVar("choreo_handling", default=None)
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")
NO_DELIVERIES: tuple[Delivery, ...] = ()
_bits = random.getrandbits


def current_event() -> Event | None:
    """The event the running handler is handling, or ``None`` outside handlers (and in batch
    handlers, which handle several)."""
    handling = _handling.get()
    return None if handling is None else handling[0]


def current_delivery() -> Delivery | None:
    """The broker message carrying the event being handled (its topic, position and
    redelivery count), or ``None`` outside handlers (and in batch handlers)."""
    handling = _handling.get()
    return None if handling is None else handling[1]


def current_deliveries() -> Sequence[Delivery]:
    """In a batch handler, the broker messages carrying its events, in the order of the list
    the handler was given (their topics, positions and redelivery counts); else empty."""
    handling = _handling.get()
    return NO_DELIVERIES if handling is None else handling[2]


def set_current(event: Event, delivery: Delivery | None = None) -> Token[_Handling | None]:
    """Make ``event`` (carried by ``delivery``) the current one (the consumer does this around
    handler calls)."""
    return _handling.set((event, delivery, NO_DELIVERIES))


def set_current_batch(deliveries: Sequence[Delivery]) -> Token[_Handling | None]:
    """Make ``deliveries`` the batch being handled (around batch handler calls)."""
    return _handling.set((None, None, deliveries))


def reset_current(token: Token[_Handling | None]) -> None:
    """Undo :func:`set_current` or :func:`set_current_batch`."""
    _handling.reset(token)


#: What the running handler handles, ``(event, delivery, deliveries)``, or None outside
#: handlers: what :func:`current_event` reads, for the bus's publish (once per event).
current_handling = _handling.get

#: :func:`set_current` and :func:`reset_current` without a call around them, for the
#: consumer's loop (once per event): ``token = enter_handler((event, delivery,
#: NO_DELIVERIES))``, then ``leave_handler(token)``.
enter_handler = _handling.set
leave_handler = _handling.reset


#: Traceparents of new traces, made 256 at a time from one ``os.urandom`` (a trace id and a
#: span id of random hex each). ``next`` on the list's iterator is atomic, so threads never
#: share one; a forked child makes its own.
_TRACES_AT_ONCE = 256
_traces: Iterator[str] = iter(())


def _new_traces() -> None:
    global _traces
    _traces = iter(())


os.register_at_fork(after_in_child=_new_traces)


_LINE = 56  # len("00-<32 digits>-<16 digits>-01\n")
#: The columns of a traceparent line that are not random digits, and what each holds in
#: every line of a chunk.
_FIXED_COLUMNS = tuple(
    (column, bytes([char]) * _TRACES_AT_ONCE)
    for column, char in enumerate(b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01\n")
    if column < 3 or column in (35, 52, 53, 54, 55)
)


def _trace_chunk() -> Iterator[str]:
    """The next traceparents: 48 random hex digits each (a trace id and a span id), made as
    lines of random hex digits whose eight fixed columns are then written a column at a time
    (8 slice copies for the chunk, not 48 nor one formatting per traceparent; the random
    digits of the fixed columns are thrown away)."""
    lines = bytearray(os.urandom(_LINE // 2 * _TRACES_AT_ONCE).hex().encode())
    for column, chars in _FIXED_COLUMNS:
        lines[column::_LINE] = chars
    return iter(lines.decode().split())


def new_traceparent(parent: str | None = None) -> str:
    """A W3C traceparent: a child span of ``parent`` when it is valid, else a new trace."""
    global _traces
    if parent:
        match = _TRACEPARENT.match(parent)
        if match:
            return f"00-{match.group(2)}-{_bits(64):016x}-{match.group(4)}"
    found = next(_traces, None)
    if found is None:
        _traces = chunk = _trace_chunk()
        found = next(chunk)
    return found


def new_traceparents(count: int) -> list[str]:
    """``count`` new traces, as :func:`new_traceparent` without a parent hands them out."""
    global _traces
    found = list(itertools.islice(_traces, count))
    while len(found) < count:
        _traces = chunk = _trace_chunk()
        found += itertools.islice(chunk, count - len(found))
    return found


def derive_extensions(extensions: dict[str, ExtensionValue]) -> None:
    """Fill causation, correlation and trace into ``extensions`` (in place) from the handler."""
    handling = _handling.get()
    parent = None if handling is None else handling[0]
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
