"""Delivery policies, applied once in the core for every adapter.

A :class:`Policy` bundles what happens around a handler call:

* :class:`Retry` - attempts with exponential backoff, jitter and a maximum delay;
* :class:`DeadLetter` - where exhausted, expired or undecodable events go (named by a template,
  see :mod:`broker.deadletter`);
* TTL - ``on_expired``: an expired event goes to the DLQ (reason ``expired``) or is dropped;
* an optional :class:`Inbox` that skips events already handled by the group (by source + id);
* an optional :class:`CircuitBreaker` that pauses consumption after repeated dead-lettering;
* ``handler_timeout``: a handler call that takes longer is cancelled and counts as a failed
  attempt (retried, then dead-lettered with a ``HandlerTimeoutError``);
* ``on_undecodable``: bytes that are not a CloudEvent go to the DLQ, or are wrapped as a
  ``legacy_type`` event with a generated id and delivered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sqlite3
import time
from collections import OrderedDict
from pathlib import Path
from typing import Literal, Protocol

from broker import deadletter
from broker.errors import ConfigurationError
from broker.sqlstore import use_wal

__all__ = [
    "CircuitBreaker",
    "DeadLetter",
    "Inbox",
    "MemoryInbox",
    "Policy",
    "Retry",
    "SQLiteInbox",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """How often and how patiently a failing handler is called again.

    Attempt ``n`` (1-based) that fails waits ``initial_delay * multiplier**(n-1)``, capped at
    ``max_delay``, randomised by +/- ``jitter`` (a fraction), before attempt ``n+1``.

    A wait longer than ``defer_after`` seconds is not spent in the consumer holding the
    delivery's lease: the event goes back to the broker as a delayed copy for the failing group
    only (see :mod:`broker.deferral`), and the original is acked. ``None`` always waits in the
    consumer. With the defaults (``max_delay`` 30 s, ``defer_after`` 30 s) no retry is deferred.
    """

    max_attempts: int = 3
    initial_delay: float = 0.1
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    defer_after: float | None = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ConfigurationError("retry delays must not be negative")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"jitter is a fraction between 0 and 1, got {self.jitter}")
        if self.defer_after is not None and not 0 <= self.defer_after < float("inf"):
            raise ConfigurationError(
                f"defer_after is seconds (0 or more) or None, got {self.defer_after}"
            )

    def defers(self, wait: float) -> bool:
        """Whether a backoff of ``wait`` seconds goes back to the broker as a delayed copy."""
        return self.defer_after is not None and wait > self.defer_after

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        if self.jitter:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, min(base, self.max_delay))


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """Where dead events go: ``topic_template`` formatted with ``topic`` and ``group``."""

    enabled: bool = True
    topic_template: str = deadletter.DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        try:
            deadletter.is_dead_letter_topic("", self.topic_template)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc

    def topic_for(self, topic: str, group: str) -> str:
        """The dead-letter topic for events of ``topic`` handled by ``group``."""
        return deadletter.dead_letter_topic(topic, group, self.topic_template)

    def origin_of(self, dlq_topic: str) -> str | None:
        """The topic whose dead letters ``dlq_topic`` holds (None if it is not a DLQ topic)."""
        return deadletter.origin_of(dlq_topic, self.topic_template)

    def is_topic(self, name: str) -> bool:
        """Whether ``name`` is a dead-letter topic under the template."""
        return deadletter.is_dead_letter_topic(name, self.topic_template)


@dataclasses.dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """Pause a subscription after ``threshold`` events in a row were dead-lettered.

    While open nothing is consumed; after ``cooldown`` seconds one event is tried (half-open).
    If it succeeds the breaker closes; if it fails it is held, not dead-lettered, and the
    breaker opens again, so a dead downstream does not flood the DLQ.
    """

    threshold: int = 5
    cooldown: float = 30.0

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ConfigurationError(f"breaker threshold must be at least 1, got {self.threshold}")
        if self.cooldown <= 0:
            raise ConfigurationError(f"breaker cooldown must be positive, got {self.cooldown}")


class Inbox(Protocol):
    """Remembers which (source, id) a group has handled, for the idempotent consumer."""

    async def seen(self, group: str, source: str, event_id: str) -> bool:
        """Whether the group already handled this event."""
        ...

    async def remember(self, group: str, source: str, event_id: str) -> None:
        """Record that the group handled this event."""
        ...


class MemoryInbox:
    """An in-process inbox keeping the last ``capacity`` ids per group."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._seen: dict[str, OrderedDict[tuple[str, str], None]] = {}

    async def seen(self, group: str, source: str, event_id: str) -> bool:
        return (source, event_id) in self._seen.get(group, {})

    async def remember(self, group: str, source: str, event_id: str) -> None:
        entries = self._seen.setdefault(group, OrderedDict())
        entries[(source, event_id)] = None
        while len(entries) > self._capacity:
            entries.popitem(last=False)


class SQLiteInbox:
    """A durable inbox in a SQLite file, shared by processes; entries older than ``retention``
    seconds are pruned."""

    def __init__(self, path: str | Path, retention: float = 7 * 86400) -> None:
        self._path = str(path)
        self._retention = retention
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        use_wal(self._db)
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS inbox (grp TEXT, source TEXT, id TEXT, at REAL,"
            " PRIMARY KEY (grp, source, id))"
        )
        self._lock = asyncio.Lock()

    async def seen(self, group: str, source: str, event_id: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM inbox WHERE grp=? AND source=? AND id=?", (group, source, event_id)
        ).fetchone()
        return row is not None

    async def remember(self, group: str, source: str, event_id: str) -> None:
        async with self._lock:
            now = time.time()
            self._db.execute(
                "INSERT OR IGNORE INTO inbox VALUES (?, ?, ?, ?)", (group, source, event_id, now)
            )
            if random.random() < 0.001:
                self._db.execute("DELETE FROM inbox WHERE at < ?", (now - self._retention,))

    def close(self) -> None:
        """Close the database file."""
        self._db.close()


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """Everything that happens around a handler call, configurable per subscription."""

    retry: Retry = Retry()
    dead_letter: DeadLetter = DeadLetter()
    on_expired: Literal["dlq", "drop"] = "dlq"
    on_undecodable: Literal["dlq", "wrap"] = "dlq"
    legacy_type: str = "choreograph.legacy"
    inbox: Inbox | None = None
    breaker: CircuitBreaker | None = None
    #: Handlers running at once; events with one partition key never run concurrently.
    concurrency: int = 1
    #: Seconds a handler call may take; past it the call is cancelled and counts as a failed
    #: attempt (:class:`~broker.errors.HandlerTimeoutError`). None: no limit.
    handler_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.on_expired not in ("dlq", "drop"):
            raise ConfigurationError(f"on_expired must be 'dlq' or 'drop', not {self.on_expired!r}")
        if self.on_undecodable not in ("dlq", "wrap"):
            raise ConfigurationError(
                f"on_undecodable must be 'dlq' or 'wrap', not {self.on_undecodable!r}"
            )
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, got {self.concurrency}")
        timeout = self.handler_timeout
        if timeout is not None and not 0 < timeout < float("inf"):
            raise ConfigurationError(
                f"handler_timeout must be a number of seconds above 0, got {timeout}"
            )
