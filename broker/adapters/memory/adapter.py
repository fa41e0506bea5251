"""The ``memory://`` adapter: publishing into the shared in-process log, and inspection."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import urlsplit

from broker.adapters.kit import BaseAdapter, parse_settings
from broker.adapters.memory.consumer import MemorySubscription
from broker.adapters.memory.settings import MemorySettings
from broker.adapters.memory.wire import LOGS, Log, handed_copy, lagging
from broker.delay import DELIVER_AT, held_until
from broker.envelope import Event
from broker.errors import ClosedError
from broker.ports import Capabilities, Chooser, TopicInfo

__all__ = ["CAPABILITIES", "MemoryAdapter"]

#: Everything but native TTL and DLQ (the core provides both).
CAPABILITIES = Capabilities(
    ordered_keys=True, replay=True, selective_delete=True, delivery_count=True
)


class MemoryAdapter(BaseAdapter):
    """The in-process backend (``memory://`` or ``memory://name``)."""

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        super().__init__(url)
        self.settings, _ = parse_settings(MemorySettings, url, options)
        self._url = url
        parts = urlsplit(url)
        self._log = LOGS.setdefault(parts.netloc + parts.path, Log(self.settings.partitions))
        self.subscriptions: set[MemorySubscription] = set()
        self._closed = False

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    async def connect(self) -> None:
        self._closed = False

    async def close(self) -> None:
        for sub in list(self.subscriptions):
            await sub.close()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the adapter for {self._url} is closed")

    async def publish(self, topic: str, event: Event, *, ttl: float | None = None) -> None:
        if self.publish_now(topic, event, ttl):
            await asyncio.sleep(0)  # a subscriber lags far behind: let it run

    def publish_now(self, topic: str, event: Event, ttl: float | None = None) -> bool:
        """:meth:`publish` without awaiting: what the bus calls. True when a subscriber of
        the topic lags far behind (:data:`~broker.adapters.memory.wire.LAGGING`): the caller
        then yields to the event loop once before going on, so that it runs."""
        if self._closed:
            self._check_open()
        if DELIVER_AT in event.extensions and (due := held_until(event, self.clock)) is not None:
            self._log.hold(topic, event, due, self.clock)
            return False
        return self._log.deliver(topic, event)

    async def publish_many(
        self, topic: str, events: Sequence[Event], *, ttl: float | None = None
    ) -> list[Exception | None]:
        self._check_open()
        outcomes: list[Exception | None] = []
        touched: set[int] = set()
        log, clock = self._log, self.clock
        state = log.topic(topic)
        for event in events:
            try:  # an event the log cannot take (a key it cannot hash) fails alone
                if DELIVER_AT in event.extensions and (due := held_until(event, clock)):
                    log.hold(topic, event, due, clock)
                else:
                    touched.add(log.add(state, event))
            except (TypeError, ValueError) as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        for index in touched:
            log.wake(state, index)
        if lagging(state):  # as publish: let a subscriber that lags far behind run
            await asyncio.sleep(0)
        return outcomes

    async def open_subscription(
        self, topics: tuple[str, ...], group: str, from_beginning: bool, prefetch: int
    ) -> MemorySubscription:
        self._check_open()
        states = [self._log.topic(name) for name in topics]
        sub = MemorySubscription(states, group, prefetch, self.subscriptions.discard)
        sub.join(from_beginning)
        self.subscriptions.add(sub)
        self._log.arm()
        return sub

    async def create_topic(self, topic: str, *, partitions: int | None = None) -> None:
        self._log.topic(topic, partitions)

    async def list_topics(self) -> list[TopicInfo]:
        return [
            TopicInfo(
                name,
                messages=sum(1 for p in t.partitions for _ in p.kept()),
                partitions=len(t.partitions),
                groups=tuple(sorted(t.groups)),
            )
            for name, t in sorted(self._log.topics.items())
        ]

    async def browse(self, topic: str, *, limit: int = 100) -> list[Event]:
        return self.events(topic)[:limit]

    def events(self, topic: str | None) -> list[Event]:
        """Every event ``topic`` (None: any topic) holds, not purged, in publish order (copies),
        without awaiting: what :mod:`broker.testing` asserts on."""
        if topic is None:
            states = list(self._log.topics.values())
        else:
            state = self._log.topics.get(topic)
            states = [state] if state is not None else []
        kept = sorted(
            (entry for s in states for p in s.partitions for entry in p.kept()),
            key=lambda e: e[0],
        )
        return [handed_copy(event) for _, event in kept]

    def topic_names(self) -> list[str]:
        """The topics of this broker, sorted, without awaiting."""
        return sorted(self._log.topics)

    async def delete_topic(self, topic: str) -> None:
        """Forget ``topic`` and everything in it (a requester's reply topic, when it stops)."""
        self._log.topics.pop(topic, None)

    async def purge_chosen(self, topic: str, choose: Chooser) -> int:
        """Delete what ``choose`` picks among the events of ``topic`` (one read, no await
        in between: nothing can be appended meanwhile)."""
        events = self.events(topic)
        return await self.purge(topic, choose(events), among=len(events))

    async def purge(
        self, topic: str, ids: Collection[str] | None = None, *, among: int | None = None
    ) -> int:
        state = self._log.topics.get(topic)
        if state is None:
            return 0
        wanted = set(ids) if ids is not None else None
        seen = sorted((entry for p in state.partitions for entry in p.kept()), key=lambda e: e[0])[
            :among
        ]
        chosen = {seq for seq, event in seen if wanted is None or event.id in wanted}
        count = 0
        for partition in state.partitions:
            events = partition.events
            for offset, event in enumerate(events):
                if event is not None and partition.seqs[offset] in chosen:
                    events[offset] = None
                    count += 1
        return count
