"""Stuck because of a dead letter: link a stuck instance to the dead letter that explains it.

A stuck instance waits for an event type. When a dead-letter topic of the watched topics holds
an event of the same correlation id that is either that awaited type, or one the instance saw
(its cause: the service that should have reacted to it gave up on it), the instance's wait has
a cause, recorded in the store and shown by ``choreo saga ls|show|owes`` and the console::

    inventory.reserved for order-0013: the order.placed event is in orders.dlq
    (group inventory-service), ValueError: malformed SKU

When several dead letters qualify, the one the awaited step's owning service dead-lettered is
preferred, then the awaited type itself, then the latest. The :class:`DeadLetterLinker` reads
the dead-letter topics with :meth:`broker.Bus.dead_letters` (without consuming them): call
:meth:`~DeadLetterLinker.link` once, or :meth:`~DeadLetterLinker.run` it next to the monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from broker import BrokerError, Bus, Event, deadletter
from broker.observability import get_logger
from saga_monitor.board import Owners, learn_owners, sample
from saga_monitor.definitions import Definitions
from saga_monitor.model import Instance
from saga_monitor.queries import Query, awaited
from saga_monitor.store import SagaStore

__all__ = ["DeadLetterLinker", "describe_cause"]


def describe_cause(cause: dict[str, Any]) -> str:
    """The one line that says why an instance waits."""
    group = f" (group {cause['group']})" if cause.get("group") else ""
    return (
        f"{cause['awaiting']} for {cause['correlation_id']}: the {cause['event_type']} event "
        f"is in {cause['dlq_topic']}{group}, {cause['error']}"
    )


class DeadLetterLinker:
    """Finds the dead letters that explain stuck instances (see the module docstring)."""

    def __init__(
        self,
        definitions: Definitions,
        bus: Bus,
        store: SagaStore,
        *,
        topics: tuple[str, ...] | None = None,
        interval: float = 10.0,
        limit: int = 10_000,
    ) -> None:
        self.definitions = definitions
        self.bus = bus
        self.store = store
        self.topics = topics if topics is not None else definitions.all_topics
        self.interval = interval
        self.limit = limit
        self._linked: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger("choreo.saga.dead_letters")

    async def letters(self) -> list[tuple[str, Event]]:
        """(dead-letter topic, dead letter) of every watched topic's DLQ (missing ones skipped)."""
        found: list[tuple[str, Event]] = []
        for topic in dict.fromkeys(self.bus.dead_letter_topic(t) for t in self.topics):
            try:
                entries = await self.bus.dead_letters(topic, limit=self.limit)
            except BrokerError:
                continue  # no such topic (yet): nothing dead-lettered there
            found.extend((topic, entry) for entry in entries)
        return found

    async def link(self) -> int:
        """Record the cause of each stuck instance a dead letter explains (and forget causes
        that no longer hold); returns how many instances have one."""
        stuck = self.store.search(Query(state="stuck", limit=self.limit)).items
        letters = await self.letters() if stuck else []
        owners = learn_owners(self.definitions, sample(self.store)) if stuck else None
        linked: set[tuple[str, str]] = set()
        for instance in stuck:
            cause = self._cause(instance, letters, owners) if owners is not None else None
            key = (instance.saga, instance.correlation_id)
            if cause is not None:
                self.store.record_cause(instance.saga, instance.correlation_id, cause)
                linked.add(key)
            elif key in self._linked:
                self.store.record_cause(instance.saga, instance.correlation_id, None)
        self._linked = linked
        return len(linked)

    def _cause(
        self, instance: Instance, letters: list[tuple[str, Event]], owners: Owners
    ) -> dict[str, Any] | None:
        try:
            correlation = self.definitions.get(instance.saga).correlation
        except LookupError:
            return None
        wanted = awaited(instance)
        seen = {entry.event.id for entry in instance.timeline}
        best: tuple[tuple[int, int, str], dict[str, Any]] | None = None
        for dlq_topic, letter in letters:
            if correlation.extract(letter) != instance.correlation_id:
                continue
            if letter.type not in wanted and letter.id not in seen:
                continue
            info = deadletter.info(letter)
            group = info.group if info else ""
            target = letter.type if letter.type in wanted else (wanted[0] if wanted else "?")
            rank = (
                int(group == owners.of(target)),
                int(letter.type in wanted),
                info.time if info else "",
            )
            cause = {
                "saga": instance.saga,
                "correlation_id": instance.correlation_id,
                "awaiting": target,
                "event_type": letter.type,
                "event_id": letter.id,
                "dlq_topic": dlq_topic,
                "group": group,
                "reason": info.reason if info else "",
                "error": (info.error if info else "") or "no error recorded",
            }
            if best is None or rank > best[0]:
                best = (rank, cause)
        if best is None:
            return None
        return {**best[1], "text": describe_cause(best[1])}

    async def run(self) -> None:
        """Link every ``interval`` seconds until cancelled (a failing pass is logged)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.link()
            except Exception as exc:  # the broker or the store may come back
                self._log.warning("dead-letter check failed", error=f"{type(exc).__name__}: {exc}")

    async def __aenter__(self) -> DeadLetterLinker:
        self._task = asyncio.create_task(self.run(), name="choreo:saga-dead-letters")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
