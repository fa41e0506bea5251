"""What a ``memory://`` broker stores: partitioned logs of entries, per topic, per URL name.

Events are kept as the objects that were published (nothing is encoded); each delivery hands
out a copy of one (:func:`handed_copy`), so that what a handler changes in its event no other
group, redelivery or later reader sees, as on a broker that sends bytes. An event slot that
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
from typing import TYPE_CHECKING, Any

from broker.adapters.kit.hold import HoldQueue
from broker.clock import SYSTEM_CLOCK, Clock, Timer
from broker.envelope import Event

if TYPE_CHECKING:
    from broker.adapters.memory.consumer import MemorySubscription

__all__ = [
    "LAGGING",
    "LOGS",
    "Group",
    "Log",
    "Partition",
    "Topic",
    "handed_copy",
    "lagging",
    "partition_for",
]

_new_event = object.__new__
#: The mutable values JSON data is made of (and bytes data that is not bytes).
_CONTAINERS: frozenset[type] = frozenset((dict, list, bytearray))


def handed_copy(event: Event) -> Event:
    """A copy of a stored event for one delivery: its own attributes, extensions and data
    (dicts, lists and bytearrays copied all the way down; other values are immutable once
    JSON, or the publisher's own objects, shared)."""
    copy = _new_event(Event)
    copy.type = event.type
    copy.source = event.source
    copy.id = event.id
    copy.time = event.time
    copy.subject = event.subject
    copy.datacontenttype = event.datacontenttype
    copy.dataschema = event.dataschema
    copy.specversion = event.specversion
    copy.extensions = event.extensions.copy()
    data = event.data
    if data.__class__ is dict:  # the usual JSON object: a flat one needs one dict copy
        data = data.copy()
        for item in data.values():
            if item.__class__ in _CONTAINERS:
                data = _copy_value(event.data)
                break
    elif data.__class__ in _CONTAINERS:
        data = _copy_value(data)
    copy.data = data
    return copy


def _copy_value(value: Any) -> Any:
    """``value`` (a dict, list or bytearray) copied down to its immutable leaves."""
    if isinstance(value, dict):
        copied = value.copy()
        for key, item in copied.items():
            if item.__class__ in _CONTAINERS:
                copied[key] = _copy_value(item)
        return copied
    if isinstance(value, list):
        return [_copy_value(item) if item.__class__ in _CONTAINERS else item for item in value]
    return bytearray(value)


def partition_for(event: Event, partitions: int) -> int:
    """The partition of an event: by ``partitionkey`` when set, else by id."""
    key = event.extensions.get("partitionkey") or event.id
    return zlib.crc32(str(key).encode()) % partitions


class Partition:
    """One partition's log, by offset: the events (None once purged) and their global sequence
    numbers. The numbers live in an array: a long log holds one object per event for the
    garbage collector to walk, not two."""

    __slots__ = ("events", "seqs")

    def __init__(self) -> None:
        self.events: list[Event | None] = []
        self.seqs = array("Q")

    def __len__(self) -> int:
        return len(self.events)

    def kept(self) -> Iterator[tuple[int, Event]]:
        """(sequence number, event) of every event not purged."""
        for seq, event in zip(self.seqs, self.events, strict=True):
            if event is not None:
                yield seq, event


@dataclass(slots=True)
class Group:
    """A group on a topic: committed position and owning member per partition, and what it
    needs to count redeliveries: per partition the offset below which every entry was handed
    out, and how often an entry was handed out again (only entries that were)."""

    name: str
    committed: list[int]
    owners: list[MemorySubscription | None]
    members: list[MemorySubscription] = field(default_factory=list)
    handed: list[int] = field(default_factory=list)
    again: dict[tuple[int, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.handed:
            self.handed = list(self.committed)


#: Keys whose partition a topic remembers (past that, it starts remembering again).
_KEYS_KEPT = 4096

#: Entries of a partition a woken member may leave unacked before a publish into it asks its
#: caller to yield to the event loop (:meth:`Log.deliver`): a publish loop that never awaits
#: anything else hands over to the subscribers every few hundred events instead of piling the
#: whole run up first, as a bounded ``asyncio.Queue`` would.
LAGGING = 256
#: A publish looks for a member that lags when its sequence number has none of these bits.
_LAG_CHECKS = 63


def lagging(topic: Topic) -> bool:
    """Whether a member of a group on ``topic`` that was woken and has not gone back to wait
    since leaves more than :data:`LAGGING` entries of a partition unacked."""
    for group in topic.groups.values():
        for partition, owner, committed in zip(
            topic.partitions, group.owners, group.committed, strict=True
        ):
            if owner is not None and owner.woken and len(partition) - committed > LAGGING:
                return True
    return False


@dataclass(slots=True)
class Topic:
    """A topic: its partitions (lists of entries), its groups, and the partition of the keys
    it saw last (a key's hash is worked out once, not per event)."""

    name: str
    partitions: list[Partition]
    groups: dict[str, Group] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)

    def partition_of(self, event: Event) -> int:
        """The index of ``event``'s partition (see :func:`partition_for`)."""
        key = event.extensions.get("partitionkey")
        if not isinstance(key, str):
            return partition_for(event, len(self.partitions))
        index = self.keys.get(key)
        if index is None:
            index = partition_for(event, len(self.partitions))
            if len(self.keys) >= _KEYS_KEPT:
                self.keys.clear()
            self.keys[key] = index
        return index


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

    def add(self, topic: Topic, event: Event) -> int:
        """Store ``event`` in its partition of ``topic``; the partition's index."""
        index = topic.partition_of(event)
        partition = topic.partitions[index]
        partition.events.append(event)
        partition.seqs.append(next(self.seq))
        return index

    def wake(self, topic: Topic, index: int) -> None:
        """Wake the members that read partition ``index`` of ``topic``."""
        for group in topic.groups.values():
            owner = group.owners[index]
            if owner is not None and not owner.woken:
                owner.woken = True
                owner.wake()

    def deliver(self, name: str, event: Event) -> bool:
        """Append ``event`` and wake the members that read its partition (once per publish:
        :meth:`add`, a known key's partition and :meth:`wake` inline); whether a member of
        the topic lags (:func:`lagging`, looked at one publish in 64), so that the publisher
        should yield to the event loop once."""
        topic = self.topics.get(name) or self.topic(name)
        key = event.extensions.get("partitionkey")
        index = topic.keys.get(key) if isinstance(key, str) else None
        if index is None:
            index = topic.partition_of(event)
        partition = topic.partitions[index]
        partition.events.append(event)
        seq = next(self.seq)
        partition.seqs.append(seq)
        for group in topic.groups.values():
            owner = group.owners[index]
            if owner is not None and not owner.woken:
                owner.woken = True
                owner.wake()
        return not seq & _LAG_CHECKS and lagging(topic)

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
