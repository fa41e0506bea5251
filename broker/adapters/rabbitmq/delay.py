"""Delayed delivery on RabbitMQ: per-delay wait queues that dead-letter back to the topic.

An event with a ``deliverat`` in the future is published (with confirms, persistent) to the
durable queue ``choreo.delay.<ms>.<topic>``, declared with ``x-message-ttl=<ms>`` and the
topic's exchange as its ``x-dead-letter-exchange`` (routing key: the topic). Nobody consumes
a wait queue: RabbitMQ expires each message at the queue's TTL, in order (one TTL per queue,
so no message waits behind a longer one), and dead-letters it to the topic's exchange, where
every group's queue gets it as if it had just been published.

The wait is the time left, rounded *up* to a step of at most 1/128 of it (and at least
50 ms), so one wait queue serves many publishes and the event is never early; a wait queue
nobody used for ten minutes past its TTL deletes itself (``x-expires``). The
``rabbitmq_delayed_message_exchange`` plugin is not used: it is not installed by default, it
keeps its messages on one node only, and RabbitMQ no longer develops it.
"""

from __future__ import annotations

import math
from typing import Any

from broker.errors import ConfigurationError

__all__ = ["MAX_WAIT_MS", "WAIT_PREFIX", "is_wait_queue", "wait_arguments", "wait_ms", "wait_queue"]

#: The name prefix of wait queues.
WAIT_PREFIX = "choreo.delay."
#: The longest ``x-message-ttl`` RabbitMQ takes (about 49.7 days).
MAX_WAIT_MS = 2**32 - 1
#: The shortest step between wait queues (ms).
_MIN_STEP_MS = 50
#: How long an unused wait queue outlives its TTL (ms).
_KEEP_MS = 600_000


def wait_ms(seconds: float, topic: str) -> int:
    """The wait queue's TTL for an event due in ``seconds``: rounded up to the queue grid."""
    ms = max(1, math.ceil(seconds * 1000))
    step = max(_MIN_STEP_MS, 1 << max(0, ms.bit_length() - 8))
    ms = -(-ms // step) * step
    if ms > MAX_WAIT_MS:
        raise ConfigurationError(
            f"RabbitMQ can hold an event at most {MAX_WAIT_MS // 86_400_000} days "
            f"(x-message-ttl); the event for {topic} is due in {seconds / 86_400:.0f} days: "
            "publish it later, or from a scheduler"
        )
    return ms


def wait_queue(topic: str, ms: int) -> str:
    """The name of the wait queue of ``topic`` with a TTL of ``ms``."""
    return f"{WAIT_PREFIX}{ms}.{topic}"


def is_wait_queue(queue: str) -> bool:
    """Whether ``queue`` is a wait queue (a death there is a delay, not an expiry)."""
    return queue.startswith(WAIT_PREFIX)


def wait_arguments(topic: str, ms: int) -> dict[str, Any]:
    """The arguments of a wait queue: its TTL, where its messages go, when it goes away."""
    return {
        "x-message-ttl": ms,
        "x-dead-letter-exchange": topic,
        "x-dead-letter-routing-key": topic,
        "x-expires": min(MAX_WAIT_MS, ms + _KEEP_MS),
    }
