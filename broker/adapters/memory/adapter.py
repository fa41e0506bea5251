"""``memory://[name]``: an in-process broker with the same semantics as the durable ones.

Topics are partitioned logs (events with one ``partitionkey`` share a partition, so they keep
their order). Each group keeps a committed position per partition; a group's subscriptions
split the partitions between them and a partition changes hands only once its owner has no
unacked delivery left in it. Adapters built from the same URL in one process share one broker,
so several services (or tests) can talk through ``memory://name``. Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import itertools
import zlib
from collections import deque
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from broker.envelope import Event
from broker.errors import ClosedError, ConfigurationError
from broker.ports import Capabilities, Delivery, TopicInfo

__all__ = ["MemoryAdapter"]

CAPABILITIES = Capabilities(
    native_ttl=False,
    native_dlq=False,
    ordered_keys=True,
    replay=True,
    selective_delete=True,
    delivery_count=True,
)


def partition_for(event: Event, partitions: int) -> int:
    """The partition of an event: by ``partitionkey`` when set, else by id."""
    key = event.partitionkey or event.id
    return zlib.crc32(key.encode()) % partitions


@dataclass(slots=True)
class _Entry:
    seq: int
    event: Event | None  # None once purged
    deliveries: int = 0


@dataclass(slots=True)
class _Group:
    name: str
    committed: list[int]
    owners: list[_MemorySubscription | None]
    members: list[_MemorySubscription] = field(default_factory=list)


@dataclass(slots=True)
class _Topic:
    name: str
    partitions: list[list[_Entry]]
    groups: dict[str, _Group] = field(default_factory=dict)


class _Broker:
    """The shared state behind every adapter of one ``memory://name`` URL."""

    def __init__(self, default_partitions: int) -> None:
        self.default_partitions = default_partitions
        self.topics: dict[str, _Topic] = {}
        self.seq = itertools.count(1)

    def topic(self, name: str, partitions: int | None = None) -> _Topic:
        topic = self.topics.get(name)
        if topic is None:
            count = partitions or self.default_partitions
            topic = _Topic(name, [[] for _ in range(count)])
            self.topics[name] = topic
        return topic


_BROKERS: dict[str, _Broker] = {}


@dataclass(slots=True)
class _Partition:
    topic: _Topic
    group: _Group
    index: int
    position: int
    inflight: deque[list[int]] = field(default_factory=deque)  # [offset, acked]
    redeliver: deque[int] = field(default_factory=deque)


class _MemoryDelivery(Delivery):
    __slots__ = ("_done", "_offset", "_part", "_sub")

    def __init__(
        self, sub: _MemorySubscription, part: _Partition, offset: int, entry: _Entry
    ) -> None:
        assert entry.event is not None
        super().__init__(part.topic.name, entry.event, redelivered=entry.deliveries - 1)
        self._sub = sub
        self._part = part
        self._offset = offset
        self._done = False

    async def ack(self) -> None:
        if not self._done:
            self._done = True
            self._sub.settle(self._part, self._offset)

    async def nack(self) -> None:
        if not self._done:
            self._done = True
            self._part.redeliver.append(self._offset)
            self._sub.wake()


class _MemorySubscription:
    def __init__(self, adapter: MemoryAdapter, topics: list[_Topic], group: str, prefetch: int):
        self._adapter = adapter
        self._topics = topics
        self._group_name = group
        self._prefetch = prefetch
        self._owned: dict[tuple[str, int], _Partition] = {}
        self._wakeup = asyncio.Event()
        self._closed = False
        self._cursor = 0

    # -- membership ------------------------------------------------------------------------

    def join(self, from_beginning: bool) -> None:
        for topic in self._topics:
            group = topic.groups.get(self._group_name)
            if group is None:
                start = [0 if from_beginning else len(p) for p in topic.partitions]
                group = _Group(self._group_name, start, [None] * len(topic.partitions))
                topic.groups[self._group_name] = group
            group.members.append(self)
            _rebalance(topic, group)

    def leave(self) -> None:
        for (topic_name, index), part in list(self._owned.items()):
            part.group.owners[index] = None
            del self._owned[(topic_name, index)]
        for topic in self._topics:
            group = topic.groups[self._group_name]
            if self in group.members:
                group.members.remove(self)
            _rebalance(topic, group)

    def take(self, topic: _Topic, group: _Group, index: int) -> None:
        start = group.committed[index]
        self._owned[(topic.name, index)] = _Partition(topic, group, index, start)
        group.owners[index] = self
        self.wake()

    def release_if_idle(self, topic: _Topic, index: int) -> bool:
        part = self._owned.get((topic.name, index))
        if part is None or part.inflight or part.redeliver:
            return False
        del self._owned[(topic.name, index)]
        part.group.owners[index] = None
        return True

    def wants(self, topic: _Topic, index: int) -> bool:
        group = topic.groups[self._group_name]
        return _desired_owner(group, index) is self

    # -- delivery --------------------------------------------------------------------------

    def wake(self) -> None:
        self._wakeup.set()

    def settle(self, part: _Partition, offset: int) -> None:
        for item in part.inflight:
            if item[0] == offset:
                item[1] = 1
                break
        while part.inflight and part.inflight[0][1]:
            done = part.inflight.popleft()[0]
            part.group.committed[part.index] = done + 1
        if not part.inflight and not part.redeliver and not self.wants(part.topic, part.index):
            _rebalance(part.topic, part.group)
        self.wake()

    def _next(self) -> _MemoryDelivery | None:
        parts = list(self._owned.values())
        for step in range(len(parts)):
            part = parts[(self._cursor + step) % len(parts)]
            delivery = self._next_from(part)
            if delivery is not None:
                self._cursor = (self._cursor + step + 1) % len(parts)
                return delivery
        return None

    def _next_from(self, part: _Partition) -> _MemoryDelivery | None:
        log = part.topic.partitions[part.index]
        if part.redeliver:
            offset = part.redeliver.popleft()
            entry = log[offset]
            entry.deliveries += 1
            return _MemoryDelivery(self, part, offset, entry)
        if len(part.inflight) >= self._prefetch or not self.wants(part.topic, part.index):
            return None
        while part.position < len(log):
            offset = part.position
            part.position += 1
            entry = log[offset]
            part.inflight.append([offset, 0])
            if entry.event is None:  # purged: settle silently
                self.settle(part, offset)
                continue
            entry.deliveries += 1
            return _MemoryDelivery(self, part, offset, entry)
        return None

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            if self._closed:
                raise StopAsyncIteration
            delivery = self._next()
            if delivery is not None:
                return delivery
            self._wakeup.clear()
            await self._wakeup.wait()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.leave()
        self._adapter.subscriptions.discard(self)
        self.wake()


def _desired_owner(group: _Group, index: int) -> _MemorySubscription | None:
    if not group.members:
        return None
    return group.members[index % len(group.members)]


def _rebalance(topic: _Topic, group: _Group) -> None:
    """Hand each partition to its desired member once its current owner is idle on it."""
    for index in range(len(topic.partitions)):
        desired = _desired_owner(group, index)
        owner = group.owners[index]
        if owner is desired:
            continue
        if owner is not None and not owner.release_if_idle(topic, index):
            continue
        if desired is not None:
            desired.take(topic, group, index)


class MemoryAdapter:
    """The in-process backend (``memory://`` or ``memory://name``)."""

    def __init__(self, url: str = "memory://", *, partitions: int | str = 4) -> None:
        try:
            count = int(partitions)
        except ValueError:
            count = 0
        if count < 1:
            raise ConfigurationError(
                f"memory:// partitions must be a positive integer, not {partitions!r}"
            )
        self._url = url
        name = urlsplit(url).netloc + urlsplit(url).path
        self._broker = _BROKERS.setdefault(name, _Broker(count))
        self.subscriptions: set[_MemorySubscription] = set()
        self._closed = False

    @property
    def url(self) -> str:
        return self._url

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
        self._check_open()
        state = self._broker.topic(topic)
        index = partition_for(event, len(state.partitions))
        state.partitions[index].append(_Entry(next(self._broker.seq), event))
        for group in state.groups.values():
            owner = group.owners[index]
            if owner is not None:
                owner.wake()

    async def subscribe(
        self,
        topics: Sequence[str],
        group: str,
        *,
        from_beginning: bool = False,
        prefetch: int = 100,
    ) -> _MemorySubscription:
        self._check_open()
        states = [self._broker.topic(name) for name in topics]
        sub = _MemorySubscription(self, states, group, max(1, prefetch))
        sub.join(from_beginning)
        self.subscriptions.add(sub)
        return sub

    async def create_topic(self, topic: str, *, partitions: int | None = None) -> None:
        self._broker.topic(topic, partitions)

    async def list_topics(self) -> list[TopicInfo]:
        return [
            TopicInfo(
                name,
                messages=sum(1 for p in t.partitions for e in p if e.event is not None),
                partitions=len(t.partitions),
                groups=tuple(sorted(t.groups)),
            )
            for name, t in sorted(self._broker.topics.items())
        ]

    async def browse(self, topic: str, *, limit: int = 100) -> list[Event]:
        state = self._broker.topics.get(topic)
        if state is None:
            return []
        entries = sorted(
            (e for p in state.partitions for e in p if e.event is not None), key=lambda e: e.seq
        )
        return [e.event for e in entries[:limit] if e.event is not None]

    async def purge(self, topic: str, ids: Collection[str] | None = None) -> int:
        state = self._broker.topics.get(topic)
        if state is None:
            return 0
        wanted = set(ids) if ids is not None else None
        count = 0
        for partition in state.partitions:
            for entry in partition:
                if entry.event is not None and (wanted is None or entry.event.id in wanted):
                    entry.event = None
                    count += 1
        return count
