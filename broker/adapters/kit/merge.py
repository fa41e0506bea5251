"""Batches that span partitions: the records several partitions (or topics) returned, as one
sequence in event-time order, each partition's own order kept.

A batch reader (:meth:`BaseSubscription.take <broker.adapters.kit.BaseSubscription.take>`)
that handed out one partition's records after another's would split the events that belong
together (a saga's steps, published on several topics at about the same time) over several
batches; merged by event time they arrive together. The merge never reorders a partition:
it only chooses which partition's next record comes next, by the time of its event, so an
event whose time is out of step only moves the records of other partitions around it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import TypeVar

from broker.envelope import Event

__all__ = ["event_time", "merge_lanes"]

T = TypeVar("T")
#: Where an undecodable or untimed event sorts: before every timed one.
_EARLY = -1e18


def event_time(event: Event | None) -> float:
    """The time of ``event`` in seconds since the epoch (early when it has none)."""
    if event is None or event.time is None:
        return _EARLY
    return event.time.timestamp()


def merge_lanes(lanes: Sequence[list[T]], key: Callable[[T], float]) -> list[T]:
    """The items of ``lanes`` (one list per partition, in its order) as one list by ``key``,
    each lane's order kept whatever its keys say (a k-way merge of the lanes' heads)."""
    if len(lanes) <= 1:
        return list(lanes[0]) if lanes else []
    return list(heapq.merge(*lanes, key=key))
