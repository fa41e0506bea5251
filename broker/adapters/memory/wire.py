"""What a ``memory://`` broker stores: partitioned logs of entries, per topic, per URL name.

Events are kept as the objects that were published (nothing is encoded); an entry whose event
is ``None`` was purged. Events with one ``partitionkey`` share a partition, so they keep their
order. Each group keeps a committed position per partition and knows its members.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.envelope import Event

if TYPE_CHECKING:
    from broker.adapters.memory.consumer import MemorySubscription

__all__ = ["LOGS", "Entry", "Group", "Log", "Topic", "partition_for"]


def partition_for(event: Event, partitions: int) -> int:
    """The partition of an event: by ``partitionkey`` when set, else by id."""
    key = event.partitionkey or event.id
    return zlib.crc32(key.encode()) % partitions


@dataclass(slots=True)
class Entry:
    """One published event in a partition."""

    seq: int
    event: Event | None  # None once purged
    deliveries: int = 0


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
    partitions: list[list[Entry]]
    groups: dict[str, Group] = field(default_factory=dict)


class Log:
    """The shared state behind every adapter of one ``memory://name`` URL."""

    def __init__(self, default_partitions: int) -> None:
        self.default_partitions = default_partitions
        self.topics: dict[str, Topic] = {}
        self.seq = itertools.count(1)

    def topic(self, name: str, partitions: int | None = None) -> Topic:
        """The topic called ``name``, created with ``partitions`` when missing."""
        topic = self.topics.get(name)
        if topic is None:
            count = partitions or self.default_partitions
            topic = Topic(name, [[] for _ in range(count)])
            self.topics[name] = topic
        return topic

    def append(self, name: str, event: Event) -> tuple[Topic, int]:
        """Store ``event`` in its partition of ``name``; the topic and the partition index."""
        topic = self.topic(name)
        index = partition_for(event, len(topic.partitions))
        topic.partitions[index].append(Entry(next(self.seq), event))
        return topic, index


#: One log per ``memory://name`` in this process.
LOGS: dict[str, Log] = {}
