"""The consuming side of ``memory://``: group members that share partitions and hand out
their entries, committing the highest contiguously acked offset of each."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from broker.adapters.kit import InFlight, OffsetTracker
from broker.adapters.memory.wire import Entry, Group, Topic
from broker.ports import Backlog, Delivery

__all__ = ["MemoryDelivery", "MemorySubscription"]


@dataclass(slots=True)
class _Partition:
    topic: Topic
    group: Group
    index: int
    position: int
    tracker: OffsetTracker = field(default_factory=OffsetTracker)
    redeliver: deque[InFlight] = field(default_factory=deque)


class MemoryDelivery(Delivery):
    """One entry handed to a member; acking it may move the group's committed position."""

    __slots__ = ("_done", "_flight", "_part", "_sub")

    def __init__(
        self, sub: MemorySubscription, part: _Partition, flight: InFlight, entry: Entry
    ) -> None:
        assert entry.event is not None
        super().__init__(
            part.topic.name,
            entry.event,
            redelivered=entry.deliveries - 1,
            position=f"{part.topic.name}/{part.index}/{flight.offset}",
        )
        self._sub = sub
        self._part = part
        self._flight = flight
        self._done = False

    async def ack(self) -> None:
        if not self._done:
            self._done = True
            self._sub.settle(self._part, self._flight)

    async def nack(self) -> None:
        if not self._done:
            self._done = True
            self._part.redeliver.append(self._flight)
            self._sub.wake()


class MemorySubscription:
    """A member of one group on some topics."""

    def __init__(
        self, topics: list[Topic], group: str, prefetch: int, on_close: Callable[..., None]
    ) -> None:
        self._topics = topics
        self._group_name = group
        self._prefetch = prefetch
        self._on_close = on_close
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
                group = Group(self._group_name, start, [None] * len(topic.partitions))
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

    def take(self, topic: Topic, group: Group, index: int) -> None:
        start = group.committed[index]
        self._owned[(topic.name, index)] = _Partition(topic, group, index, start)
        group.owners[index] = self
        self.wake()

    def release_if_idle(self, topic: Topic, index: int) -> bool:
        part = self._owned.get((topic.name, index))
        if part is None or part.tracker or part.redeliver:
            return False
        del self._owned[(topic.name, index)]
        part.group.owners[index] = None
        return True

    def wants(self, topic: Topic, index: int) -> bool:
        group = topic.groups[self._group_name]
        return _desired_owner(group, index) is self

    # -- delivery --------------------------------------------------------------------------

    def wake(self) -> None:
        self._wakeup.set()

    def settle(self, part: _Partition, flight: InFlight) -> None:
        done = part.tracker.ack(flight)
        if done is not None:
            part.group.committed[part.index] = done + 1
        if not part.tracker and not part.redeliver and not self.wants(part.topic, part.index):
            _rebalance(part.topic, part.group)
        self.wake()

    def _next(self) -> MemoryDelivery | None:
        parts = list(self._owned.values())
        for step in range(len(parts)):
            part = parts[(self._cursor + step) % len(parts)]
            delivery = self._next_from(part)
            if delivery is not None:
                self._cursor = (self._cursor + step + 1) % len(parts)
                return delivery
        return None

    def _next_from(self, part: _Partition) -> MemoryDelivery | None:
        log = part.topic.partitions[part.index]
        if part.redeliver:
            flight = part.redeliver.popleft()
            entry = log[flight.offset]
            entry.deliveries += 1
            return MemoryDelivery(self, part, flight, entry)
        if len(part.tracker) >= self._prefetch or not self.wants(part.topic, part.index):
            return None
        while part.position < len(log):
            offset = part.position
            part.position += 1
            entry = log[offset]
            flight = part.tracker.add(offset)
            if entry.event is None:  # purged: settle silently
                self.settle(part, flight)
                continue
            entry.deliveries += 1
            return MemoryDelivery(self, part, flight, entry)
        return None

    async def backlog(self) -> Backlog:
        """Per partition ``topic/index``: the log length and the group's committed offset."""
        appended: dict[str, int] = {}
        acked: dict[str, int] = {}
        for topic in self._topics:
            group = topic.groups[self._group_name]
            for index, log in enumerate(topic.partitions):
                appended[f"{topic.name}/{index}"] = len(log)
                acked[f"{topic.name}/{index}"] = group.committed[index]
        return Backlog(appended, acked)

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        while not self._closed:
            delivery = self._next()
            if delivery is not None:
                return delivery
            self._wakeup.clear()
            await self._wakeup.wait()
        raise StopAsyncIteration

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.leave()
        self._on_close(self)
        self.wake()


def _desired_owner(group: Group, index: int) -> MemorySubscription | None:
    if not group.members:
        return None
    return group.members[index % len(group.members)]


def _rebalance(topic: Topic, group: Group) -> None:
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
