"""Items held back until a wall-clock time, released in (time, arrival) order.

Adapters that emulate delayed delivery keep their early events here: the memory broker until
it appends them to the log, the Kafka consumer until it hands them out (see
:mod:`broker.delay`). Equal times keep arrival order, so a key's events due together stay in
publish order::

    held = HoldQueue[str]()
    held.push(time.time() + 1, "later")
    held.pop_due(time.time())  # [] for one more second
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["HoldQueue"]

T = TypeVar("T")


class HoldQueue(Generic[T]):
    """A heap of items by due time (epoch seconds)."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()

    def push(self, due: float, item: T) -> None:
        """Hold ``item`` until ``due``."""
        heapq.heappush(self._heap, (due, next(self._seq), item))

    def next_due(self) -> float | None:
        """When the earliest item is due; None when nothing is held."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float, limit: int | None = None) -> list[T]:
        """The items due at ``now`` (up to ``limit``), earliest first, no longer held."""
        heap = self._heap
        out: list[T] = []
        while heap and heap[0][0] <= now and (limit is None or len(out) < limit):
            out.append(heapq.heappop(heap)[2])
        return out

    def discard(self, gone: Callable[[T], bool]) -> int:
        """Stop holding the items for which ``gone`` is true; how many were dropped."""
        kept = [entry for entry in self._heap if not gone(entry[2])]
        dropped = len(self._heap) - len(kept)
        if dropped:
            heapq.heapify(kept)
            self._heap = kept
        return dropped

    def __len__(self) -> int:
        return len(self._heap)
