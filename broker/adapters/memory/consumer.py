"""The consuming side of ``memory://``: group members that share partitions and hand out
their entries, committing the highest contiguously acked offset of each."""

from __future__ import annotations

import asyncio
import contextlib
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.adapters.kit import BaseSubscription, InFlight, OffsetTracker
from broker.adapters.memory.wire import Group, Topic
from broker.envelope import Event
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
    #: Whether this member should keep reading it (False: it goes to another once idle).
    wanted: bool = True


class MemoryDelivery(Delivery):
    """One entry handed to a member; acking it may move the group's committed position."""

    __slots__ = ("_done", "_flight", "_part", "_sub")

    def __init__(
        self,
        sub: MemorySubscription,
        part: _Partition,
        flight: InFlight,
        event: Event,
        redelivered: int,
    ) -> None:
        topic = part.topic.name
        # Delivery's fields, set directly: this runs once per event.
        self.topic = topic
        self.position = f"{topic}/{part.index}/{flight.offset}"
        self.event = event
        self.body = b""
        self.headers = _NO_HEADERS
        self.redelivered = redelivered
        self.decode_error = None
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


_NO_HEADERS: dict[str, str] = {}


class MemorySubscription(BaseSubscription):
    """A member of one group on some topics."""

    def __init__(
        self, topics: list[Topic], group: str, prefetch: int, on_close: Callable[..., None]
    ) -> None:
        self._topics = topics
        self._group_name = group
        self._prefetch = prefetch
        self._on_close = on_close
        self._owned: dict[tuple[str, int], _Partition] = {}
        self._parts: list[_Partition] = []  # the values of _owned, for round-robin
        self._wakeup = asyncio.Event()
        self._closed = False
        self._cursor = 0

    @property
    def closed(self) -> bool:
        return self._closed

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
        self._parts = []
        for topic in self._topics:
            group = topic.groups[self._group_name]
            if self in group.members:
                group.members.remove(self)
            _rebalance(topic, group)

    def claim(self, topic: Topic, group: Group, index: int) -> None:
        start = group.committed[index]
        self._owned[(topic.name, index)] = _Partition(topic, group, index, start)
        self._parts = list(self._owned.values())
        group.owners[index] = self
        self.wake()

    def release_if_idle(self, topic: Topic, index: int) -> bool:
        """Give a partition up if nothing of it is in flight; else stop reading it."""
        part = self._owned.get((topic.name, index))
        if part is None:
            return False
        if part.tracker or part.redeliver:
            part.wanted = False
            return False
        del self._owned[(topic.name, index)]
        self._parts = list(self._owned.values())
        part.group.owners[index] = None
        return True

    def keep(self, topic: Topic, index: int) -> None:
        """Go on reading a partition this member owns and should own."""
        part = self._owned.get((topic.name, index))
        if part is not None:
            part.wanted = True

    # -- delivery --------------------------------------------------------------------------

    def wake(self) -> None:
        self._wakeup.set()

    def settle(self, part: _Partition, flight: InFlight) -> None:
        done = part.tracker.ack(flight)
        if done is not None:
            part.group.committed[part.index] = done + 1
        if not part.wanted and not part.tracker and not part.redeliver:
            _rebalance(part.topic, part.group)
        self._wakeup.set()

    def poll(self) -> MemoryDelivery | None:
        parts = self._parts
        count = len(parts)
        for step in range(count):
            part = parts[(self._cursor + step) % count]
            delivery = self._next_from(part)
            if delivery is not None:
                self._cursor = (self._cursor + step + 1) % count
                return delivery
        return None

    def _next_from(self, part: _Partition) -> MemoryDelivery | None:
        log = part.topic.partitions[part.index]
        if part.redeliver:
            flight = part.redeliver.popleft()
            return self._deliver(part, flight, log.events[flight.offset], log.deliveries)
        if not part.wanted or len(part.tracker) >= self._prefetch:
            return None
        events = log.events
        while part.position < len(events):
            offset = part.position
            part.position += 1
            event = events[offset]
            flight = part.tracker.add(offset)
            if event is None:  # purged: settle silently
                self.settle(part, flight)
                continue
            return self._deliver(part, flight, event, log.deliveries)
        return None

    def _deliver(
        self, part: _Partition, flight: InFlight, event: Event | None, counts: array[int]
    ) -> MemoryDelivery | None:
        if event is None:  # purged while it waited to be delivered again
            self.settle(part, flight)
            return None
        offset = flight.offset
        counts[offset] += 1
        return MemoryDelivery(self, part, flight, event, counts[offset] - 1)

    async def wait_ready(self, timeout: float | None) -> None:
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

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

    async def __anext__(self) -> Delivery:
        while not self._closed:
            delivery = self.poll()
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
            if owner is not None:
                owner.keep(topic, index)
            continue
        if owner is not None and not owner.release_if_idle(topic, index):
            continue
        if desired is not None:
            desired.claim(topic, group, index)
