"""What a ``memory://`` broker stores: partitioned logs of entries, per topic, per URL name.

Events are kept as the objects that were published (nothing is encoded); an event slot that
holds ``None`` was purged. Events with one ``partitionkey`` share a partition, so they keep their
order. Each group keeps a committed position per partition and knows its members.
"""

from __future__ import annotations

import asyncio
import itertools
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.adapters.kit.hold import HoldQueue
from broker.clock import SYSTEM_CLOCK, Clock, Timer
from broker.envelope import Event

if TYPE_CHECKING:
    from broker.adapters.memory.consumer import MemorySubscription

__all__ = ["LOGS", "Group", "Log", "Partition", "Topic", "partition_for"]


def partition_for(event: Event, partitions: int) -> int:
    """The partition of an event: by ``partitionkey`` when set, else by id."""
    key = event.extensions.get("partitionkey") or event.id
    return zlib.crc32(str(key).encode()) % partitions


class Partition:
    """One partition's log, by offset: the events (None once purged), their global sequence
    numbers and how often each was delivered. Numbers live in arrays: a long log holds one
    object per event for the garbage collector to walk, not three."""

    __slots__ = ("deliveries", "events", "seqs")

    def __init__(self) -> None:
        self.events: list[Event | None] = []
        self.seqs = array("Q")
        self.deliveries = array("L")

    def __len__(self) -> int:
        return len(self.events)

    def append(self, seq: int, event: Event) -> None:
        """Add ``event`` at the next offset."""
        self.events.append(event)
        self.seqs.append(seq)
        self.deliveries.append(0)

    def kept(self) -> Iterator[tuple[int, Event]]:
        """(sequence number, event) of every event not purged."""
        for seq, event in zip(self.seqs, self.events, strict=True):
            if event is not None:
                yield seq, event


@dataclass(slots=True)
class Group:
    """A group on a topic: committed position and owning member per partition."""

    name: str
    committed: list[int]
    owners: list[MemorySubscription | None]
    members: list[MemorySubscription] = field(default_factory=list)


@dataclass(slots=True)
class Topic:
    """A topic: its partitions (lists of entries) and its groups."""

    name: str
    partitions: list[Partition]
    groups: dict[str, Group] = field(default_factory=dict)


class Log:
    """The shared state behind every adapter of one ``memory://name`` URL."""

    def __init__(self, default_partitions: int) -> None:
        self.default_partitions = default_partitions
        self.topics: dict[str, Topic] = {}
        self.seq = itertools.count(1)
        #: Delayed events (topic, event) not appended yet, and the timer of the earliest.
        self.held: HoldQueue[tuple[str, Event]] = HoldQueue()
        self._timer: Timer | None = None
        #: The clock the scheduler's timer runs on: the holding adapter's (the bus's).
        self.clock: Clock = SYSTEM_CLOCK
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._timer_due = 0.0

    def topic(self, name: str, partitions: int | None = None) -> Topic:
        """The topic called ``name``, created with ``partitions`` when missing."""
        topic = self.topics.get(name)
        if topic is None:
            count = partitions or self.default_partitions
            topic = Topic(name, [Partition() for _ in range(count)])
            self.topics[name] = topic
        return topic

    def append(self, name: str, event: Event) -> tuple[Topic, int]:
        """Store ``event`` in its partition of ``name``; the topic and the partition index."""
        topic = self.topics.get(name) or self.topic(name)
        index = partition_for(event, len(topic.partitions))
        topic.partitions[index].append(next(self.seq), event)
        return topic, index

    def deliver(self, name: str, event: Event) -> None:
        """Append ``event`` and wake the members that read its partition."""
        topic, index = self.append(name, event)
        for group in topic.groups.values():
            owner = group.owners[index]
            if owner is not None:
                owner.wake()

    # -- delayed events: the broker's scheduler ----------------------------------------------

    def hold(self, name: str, event: Event, due: float, clock: Clock) -> None:
        """Append ``event`` to ``name`` at ``due`` (epoch seconds on ``clock``, the holding
        adapter's), not before."""
        self.held.push(due, (name, event))
        self.clock = clock
        self.arm()

    def arm(self) -> None:
        """Set the timer for the earliest held event (again on this event loop if the loop
        that set it is gone)."""
        due = self.held.next_due()
        if due is None:
            return
        timer, armed = self._timer, self._timer_loop
        live = timer is not None and armed is not None and not armed.is_closed()
        if live and self._timer_due <= due:
            return
        if timer is not None:
            timer.cancel()
        clock = self.clock
        self._timer_due, self._timer_loop = due, asyncio.get_running_loop()
        self._timer = clock.call_later(due - clock.now().timestamp(), self._release)

    def _release(self) -> None:
        self._timer = None
        for name, event in self.held.pop_due(self.clock.now().timestamp()):
            self.deliver(name, event)
        if self.held:
            self.arm()


#: One log per ``memory://name`` in this process.
LOGS: dict[str, Log] = {}
