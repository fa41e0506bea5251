"""Delayed delivery: when an event may be handed to a handler, once, for every adapter.

A publish with ``delay=`` (seconds or a :class:`~datetime.timedelta`) or ``deliver_at=`` (an
aware :class:`~datetime.datetime`) carries its delivery time on the wire as the CloudEvents
extension ``deliverat`` (RFC 3339, UTC), next to ``expiration``. No group sees the event before
that moment; each adapter makes it so its own way (see ``docs/delivery.md``):

* ``memory://`` keeps a timer per delayed event and appends it to the log when it is due;
* ``sqlite://`` keeps delayed events in a ``scheduled`` table and moves them into the log when
  due (any connected subscriber does it, so a crash of the publisher loses nothing);
* Kafka holds an early record in the consumer, out of the prefetch window, and commits only
  below it, so a crash delivers it again;
* RabbitMQ parks it in a wait queue (``x-message-ttl``) that dead-letters it back to the topic;
* NATS JetStream keeps it in the work-queue stream ``CHOREO_DELAYED``, from which a mover
  publishes it to its topic when due (an early message read by a group's consumer is given
  back with ``-NAK {"delay": ...}``).

The core checks once more before a handler runs (:func:`wait_seconds`) and waits out what is
left, so a clock running behind on the publisher's side cannot hand an event out early.
A TTL still counts from publish: an event is released at ``min(deliverat, expiration)``, so
an event whose TTL passes first is expired by the TTL policy at its expiry time.
"""

from __future__ import annotations

import contextlib
import math
import time
from datetime import UTC, datetime, timedelta

from broker.clock import Clock
from broker.envelope import Event, format_time, parse_time
from broker.errors import ConfigurationError, EnvelopeError

__all__ = ["DELIVER_AT", "deliver_at", "due_at", "due_from_text", "held_until", "wait_seconds"]

#: The CloudEvents extension carrying the delivery time (RFC 3339).
DELIVER_AT = "deliverat"


def deliver_at(
    delay: float | timedelta | None, at: datetime | None, now: datetime | None = None
) -> str | None:
    """The ``deliverat`` value for a publish's ``delay=``/``deliver_at=`` (None for neither).

    Raises :class:`~broker.errors.ConfigurationError` for both at once, a naive datetime, or
    a negative or non-numeric delay.
    """
    if delay is None and at is None:
        return None
    if delay is not None and at is not None:
        raise ConfigurationError("give delay= or deliver_at=, not both")
    if at is not None:
        if not isinstance(at, datetime):
            raise ConfigurationError(f"deliver_at must be a datetime, not {type(at).__name__}")
        if at.tzinfo is None or at.utcoffset() is None:
            raise ConfigurationError(
                f"deliver_at={at.isoformat()} has no time zone; give an aware datetime, "
                "e.g. datetime(2026, 12, 1, 9, tzinfo=UTC)"
            )
        return format_time(at.astimezone(UTC))
    seconds = _seconds(delay)
    return format_time((now or datetime.now(UTC)) + timedelta(seconds=seconds))


def _seconds(delay: object) -> float:
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, int | float) and not isinstance(delay, bool):
        seconds = float(delay)
    else:
        raise ConfigurationError(
            f"delay must be seconds or a timedelta, not {type(delay).__name__}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigurationError(f"a delay must be zero or positive, got {seconds}s")
    return seconds


def due_at(event: Event) -> float | None:
    """When ``event`` may be released to a group (epoch seconds): the earlier of its
    ``deliverat`` and its ``expiration`` (so the TTL policy sees an expired event then);
    None when it has no delivery time. An unreadable ``deliverat`` counts as none."""
    raw = event.extensions.get(DELIVER_AT)
    if raw is None:
        return None
    try:
        due = parse_time(str(raw)).timestamp()
    except EnvelopeError:
        return None
    expiry = event.extensions.get("expiration")
    if expiry is not None:
        with contextlib.suppress(EnvelopeError):
            due = min(due, parse_time(str(expiry)).timestamp())
    return due


def due_from_text(deliverat: str | None, expiration: str | None) -> float | None:
    """:func:`due_at` from the raw header values (for adapters that peek before decoding)."""
    if not deliverat:
        return None
    try:
        due = parse_time(deliverat).timestamp()
        if expiration:
            due = min(due, parse_time(expiration).timestamp())
    except EnvelopeError:
        return None
    return due


def held_until(event: Event, clock: Clock | None = None) -> float | None:
    """When ``event`` is due (epoch seconds) if that is still to come on ``clock`` (default:
    the system's), else None: whether an adapter must hold it back. Cheap for an event
    without ``deliverat``."""
    if DELIVER_AT not in event.extensions:
        return None
    due = due_at(event)
    now = time.time() if clock is None else clock.now().timestamp()
    return due if due is not None and due > now else None


def wait_seconds(event: Event, now: float | None = None) -> float:
    """Seconds until ``event`` may be handed to a handler (0 when it may be now)."""
    due = due_at(event)
    if due is None:
        return 0.0
    return max(0.0, due - (time.time() if now is None else now))
