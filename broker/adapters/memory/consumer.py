"""The consuming side of ``memory://``: group members that share partitions and hand out
their entries, committing the highest contiguously acked offset of each.

Bookkeeping is integers, not objects: a member reads a partition from ``position`` on, the
group's committed offset is where everything before is acked, and an offset acked ahead of an
earlier one waits in a small set until the gap closes. What is in flight is the span between
the two, so nothing per event is kept but the delivery the handler holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence

from broker.adapters.kit import BaseSubscription
from broker.adapters.memory.wire import Group, Partition, Topic, handed_copy
from broker.envelope import Event
from broker.ports import Backlog, Delivery

__all__ = ["MemoryDelivery", "MemorySubscription"]

_NO_HEADERS: dict[str, str] = {}
_new_delivery = object.__new__


class _Part:
    """A member's hold on one partition: where it reads, and what it acked out of order."""

    __slots__ = (
        "ahead",
        "group",
        "index",
        "live",
        "log",
        "position",
        "redeliver",
        "sub",
        "topic",
        "wanted",
    )

    def __init__(self, sub: MemorySubscription, topic: Topic, group: Group, index: int) -> None:
        self.sub = sub
        self.topic = topic
        self.group = group
        self.index = index
        self.log: Partition = topic.partitions[index]
        self.position = group.committed[index]
        #: Offsets acked while an earlier one was not (empty when acks come in order).
        self.ahead: set[int] = set()
        #: Offsets given back (nacked), handed out again before anything new.
        self.redeliver: deque[int] = deque()
        #: Whether this member should keep reading it (False: it goes to another once idle).
        self.wanted = True
        #: False once the member gave it up: a late ack then changes nothing.
        self.live = True

    def in_flight(self) -> int:
        """Entries handed out and not yet committed (acked ahead of a gap included)."""
        return self.position - self.group.committed[self.index]


class MemoryDelivery(Delivery):
    """One entry handed to a member; acking it may move the group's committed position."""

    __slots__ = ("_done", "_offset", "_part")

    # A memory delivery never carries bytes: the Delivery fields that say so are shared.
    body = b""
    headers = _NO_HEADERS
    decode_error = None

    def __init__(self, part: _Part, offset: int, event: Event, redelivered: int) -> None:
        # Delivery's fields, set directly: this runs once per event.
        self.topic = part.topic.name
        self.event = event
        self.redelivered = redelivered
        self._part = part
        self._offset = offset
        self._done = False

    @property
    def position(self) -> str:  # type: ignore[override]  # read-only here: never set
        """``topic/partition/offset``, built when asked (the saga monitor asks)."""
        return f"{self.topic}/{self._part.index}/{self._offset}"

    async def ack(self) -> None:
        if not self._done:
            self._done = True
            self._part.sub.settle(self._part, self._offset)

    def ack_now(self) -> None:
        """:meth:`ack` without awaiting (nothing here waits): what ``ack_many`` calls."""
        if not self._done:
            self._done = True
            self._part.sub.settle(self._part, self._offset)

    async def nack(self) -> None:
        if not self._done:
            self._done = True
            self._part.redeliver.append(self._offset)
            self._part.sub.wake()


class MemorySubscription(BaseSubscription):
    """A member of one group on some topics."""

    def __init__(
        self, topics: list[Topic], group: str, prefetch: int, on_close: Callable[..., None]
    ) -> None:
        self._topics = topics
        self._group_name = group
        self._prefetch = prefetch
        self._on_close = on_close
        self._owned: dict[tuple[str, int], _Part] = {}
        self._parts: list[_Part] = []  # the values of _owned, for round-robin
        self._wakeup = asyncio.Event()
        #: Wake the member up: there may be something to hand out (a bound method: publishes
        #: call it once per event and group).
        self.wake: Callable[[], None] = self._wakeup.set
        #: True from a publish's wake until the member clears its wakeup to wait again: a
        #: publish that finds it True does not call :attr:`wake` (a member woken by another
        #: caller of :attr:`wake` may read False: one call more, never a wakeup less).
        self.woken = False
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
        for part in self._parts:
            part.live = False  # a late ack no longer moves the group (redelivered instead)
            part.group.owners[part.index] = None
        self._owned.clear()
        self._parts = []
        for topic in self._topics:
            group = topic.groups[self._group_name]
            if self in group.members:
                group.members.remove(self)
            _rebalance(topic, group)

    def claim(self, topic: Topic, group: Group, index: int) -> None:
        self._owned[(topic.name, index)] = _Part(self, topic, group, index)
        self._parts = list(self._owned.values())
        group.owners[index] = self
        self.wake()

    def release_if_idle(self, topic: Topic, index: int) -> bool:
        """Give a partition up if nothing of it is in flight; else stop reading it."""
        part = self._owned.get((topic.name, index))
        if part is None:
            return False
        if part.in_flight():
            part.wanted = False
            return False
        part.live = False
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

    def settle(self, part: _Part, offset: int) -> None:
        """``offset`` of ``part`` is acked: commit what is acked without a gap."""
        if not part.live:
            return
        group, index = part.group, part.index
        if group.again:
            group.again.pop((index, offset), None)
        committed = group.committed
        before = committed[index]
        if offset != before:
            if offset > before:
                part.ahead.add(offset)
            return
        offset += 1
        ahead = part.ahead
        while ahead and offset in ahead:
            ahead.remove(offset)
            offset += 1
        committed[index] = offset
        if not part.wanted:
            if offset == part.position:
                _rebalance(part.topic, group)
            self._wakeup.set()
        elif part.position - before >= self._prefetch:  # it was full: it may read again
            self._wakeup.set()

    def poll(self) -> Delivery | None:
        taken = self._collect(1)
        return taken[0] if taken else None

    def _collect(self, limit: int) -> list[Delivery]:
        """Up to ``limit`` deliveries that are ready, a share of each partition in turn."""
        out: list[Delivery] = []
        parts = self._parts
        count = len(parts)
        if not count:
            return out
        share = max(1, limit // count)
        start = self._cursor
        while True:
            progressed = False
            for step in range(count):
                room = limit - len(out)
                if room <= 0:
                    break
                if self._take_from(parts[(start + step) % count], min(room, share), out):
                    progressed = True
                    self._cursor = (start + step + 1) % count
            if not progressed or len(out) >= limit:
                return out

    def _take_from(self, part: _Part, room: int, out: list[Delivery]) -> bool:
        """Add up to ``room`` deliveries of ``part`` to ``out``; whether it read any entry."""
        if part.redeliver:
            return self._take_again(part, room, out)
        if not part.wanted:
            return False
        position, index, group = part.position, part.index, part.group
        room = min(room, self._prefetch - (position - group.committed[index]))
        events = part.log.events
        end = min(len(events), position + room)
        if end <= position:
            return False
        part.position = end
        handed = group.handed[index]
        purged = []
        append = out.append
        for offset in range(position, min(end, handed)):  # handed out before, never acked
            event = events[offset]
            if event is None:
                purged.append(offset)
            else:
                again = _count_again(group, index, offset)
                append(MemoryDelivery(part, offset, handed_copy(event), again))
        topic, new = part.topic.name, _new_delivery
        for offset in range(max(position, handed), end):  # the usual: first deliveries
            event = events[offset]
            if event is None:
                purged.append(offset)
            else:  # MemoryDelivery(part, offset, handed_copy(event), 0), without a call
                delivery = new(MemoryDelivery)
                delivery.topic = topic
                delivery.event = handed_copy(event)
                delivery.redelivered = 0
                delivery._part = part
                delivery._offset = offset
                delivery._done = False
                append(delivery)
        if end > handed:
            group.handed[index] = end
        for offset in purged:  # purged meanwhile: settled without a handler
            self.settle(part, offset)
        return True

    def _take_again(self, part: _Part, room: int, out: list[Delivery]) -> bool:
        """Hand out again up to ``room`` offsets of ``part`` that were nacked."""
        events, group, index = part.log.events, part.group, part.index
        taken = False
        while part.redeliver and room > 0:
            offset = part.redeliver.popleft()
            taken = True
            event = events[offset]
            if event is None:  # purged while it waited to be delivered again
                self.settle(part, offset)
                continue
            again = _count_again(group, index, offset)
            out.append(MemoryDelivery(part, offset, handed_copy(event), again))
            room -= 1
        return taken

    async def take(self, limit: int, wait: float) -> list[Delivery]:
        """Up to ``limit`` deliveries, taken a partition's run at a time (see the base)."""
        batch = self._collect(limit)
        while not batch:
            if self._closed:
                return batch
            self.woken = False
            self._wakeup.clear()
            await self._wakeup.wait()
            batch = self._collect(limit)
        if wait > 0 and len(batch) < limit:
            deadline = time.monotonic() + wait
            while len(batch) < limit and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await self.wait_ready(left)
                batch.extend(self._collect(limit - len(batch)))
        return batch

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Ack each delivery, none of them awaited (a batch handler's, at once)."""
        for delivery in deliveries:
            if isinstance(delivery, MemoryDelivery):
                delivery.ack_now()
            else:
                await delivery.ack()

    async def wait_ready(self, timeout: float | None) -> None:
        self.woken = False
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
            self.woken = False
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


def _count_again(group: Group, index: int, offset: int) -> int:
    """One more delivery of an offset this group was handed before: how many before this."""
    key = (index, offset)
    count = group.again[key] = group.again.get(key, 0) + 1
    return count


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
