"""Deferred retries: a retry whose backoff is long goes back to the broker instead of waiting
in the consumer with the delivery's lease held.

When :attr:`Retry.defer_after <broker.policies.Retry.defer_after>` is set and a backoff exceeds
it, the consumer publishes a **retry copy** of the event to the same topic: the event as it
arrived, plus the delayed-delivery extension ``deliverat`` (now + the backoff, see
:mod:`broker.delay`), ``retrygroup`` (the group the copy is for) and ``retryattempt`` (the
number of the attempt it carries, 2 or more). Only once the broker durably accepted the copy
is the original acked; if the publish fails, the consumer waits as before, holding the lease.

Every group receives the copy (a publish reaches every group), so the core acks it without a
handler call in every group but ``retrygroup`` (:func:`is_for_another_group`). The owning group
hands the handler the event without the three extensions (:func:`original`) and goes on
counting from ``retryattempt``: ``max_attempts``, ``dlqattempts`` and the breaker behave as
when the retry waited in the consumer. The copy keeps the event's ``source`` and ``id``, so an
inbox that has not remembered the failed event (a handler that raised is never remembered)
lets it through, and skips a copy delivered twice once one succeeded.
"""

from __future__ import annotations

from datetime import datetime

from broker.delay import DELIVER_AT, deliver_at
from broker.envelope import Event, integer_extension

__all__ = [
    "RETRY_ATTEMPT",
    "RETRY_GROUP",
    "attempt_of",
    "is_for_another_group",
    "original",
    "retry_copy",
]

#: The extension naming the group a retry copy is for.
RETRY_GROUP = "retrygroup"
#: The extension carrying the attempt number a retry copy is for (2 or more).
RETRY_ATTEMPT = "retryattempt"
integer_extension(RETRY_ATTEMPT)

_ADDED = (RETRY_GROUP, RETRY_ATTEMPT, DELIVER_AT)


def retry_copy(event: Event, *, group: str, attempt: int, delay: float, now: datetime) -> Event:
    """The copy of ``event`` (as it arrived) that brings attempt ``attempt`` to ``group`` after
    ``delay`` seconds counted from ``now``."""
    due = deliver_at(delay, None, now)
    return event.with_extensions(**{DELIVER_AT: due, RETRY_GROUP: group, RETRY_ATTEMPT: attempt})


def is_for_another_group(event: Event, group: str) -> bool:
    """Whether ``event`` is a retry copy that some group other than ``group`` asked for."""
    extensions = event.extensions
    if DELIVER_AT not in extensions:  # every retry copy has one: one lookup for most events
        return False
    owner = extensions.get(RETRY_GROUP)
    return owner is not None and owner != group


def attempt_of(event: Event | None) -> int:
    """The attempt a delivery of ``event`` is: ``retryattempt`` for a retry copy, else 1."""
    if event is None:
        return 1
    value = event.extensions.get(RETRY_ATTEMPT)
    if value is None:
        return 1
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return 1


def original(event: Event) -> Event:
    """``event`` without what a retry copy added (the event its handler and a dead letter see);
    ``event`` itself when it is no retry copy."""
    if RETRY_GROUP not in event.extensions:
        return event
    return event.with_extensions(**dict.fromkeys(_ADDED))
