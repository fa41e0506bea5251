"""Batches that span partitions: the records several partitions (or topics) returned, as one
sequence in event-time order, each partition's own order kept.

A batch reader (:meth:`BaseSubscription.take <broker.adapters.kit.BaseSubscription.take>`)
that handed out one partition's records after another's would split the events that belong
together (a saga's steps, published on several topics at about the same time) over several
batches; merged by event time they arrive together. The merge never reorders a partition:
it only chooses which partition's next record comes next, by the time of its event, so an
event whose time is out of step only moves the records of other partitions around it.

Merging what one read returned is not enough while a backlog is read: a broker returns a
bounded amount per partition (a fetch's bytes, a share of the prefetch window) or one topic's
messages before another's, so a read may hold the orders of an hour and the payments of a
minute. :class:`Horizon` keeps each partition's records (a *lane*) and releases them only up
to the time that every lane still behind (its broker said more records follow) has reached:
the rest waits for the lagging lanes' next records, and a batch then holds one span of time
from every partition. A lane that is caught up holds nobody back (a live stream is not
delayed), and when the horizon has not moved for ``hold_limit`` seconds while records wait
(a lane said to be behind sends nothing), everything held is let go.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Generic, TypeVar

from broker.envelope import Event

__all__ = ["HOLD_LIMIT", "Horizon", "event_time", "merge_lanes"]

T = TypeVar("T")
L = TypeVar("L", bound=Hashable)
#: Where an undecodable or untimed event sorts: before every timed one.
_EARLY = -1e18
#: How long records wait for a horizon that does not move (seconds): a safety valve for a
#: broker whose "more to come" turns out wrong, never reached while the lagging lanes come.
HOLD_LIMIT = 2.0


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


class _Lane(Generic[T]):
    __slots__ = ("items", "more", "reached")

    def __init__(self) -> None:
        #: Held (key, item) pairs, in the lane's order.
        self.items: list[tuple[float, T]] = []
        #: Whether the broker said more records follow the last one read.
        self.more = False
        #: The latest key read from the lane (held or released).
        self.reached = float("-inf")


def _first(entry: tuple[float, int, object]) -> float:
    return entry[0]


class Horizon(Generic[L, T]):
    """Lanes of records released by event time up to what the lagging lanes reached (see
    the module docstring)::

        horizon = Horizon(key=lambda record: event_time(record.event))
        horizon.add("orders/0", records, more=True)   # the broker has more after these
        horizon.add("payments/0", others, more=False)
        ready = horizon.release()   # by time, none later than the last of "orders/0"
    """

    def __init__(self, key: Callable[[T], float], *, hold_limit: float = HOLD_LIMIT) -> None:
        self._key = key
        self._lanes: dict[L, _Lane[T]] = {}
        self.hold_limit = hold_limit
        #: How many items are held.
        self.held = 0
        #: The horizon at the last release, and since when (``time.monotonic()``) it stands.
        self._last = float("-inf")
        self._moved = time.monotonic()

    def add(self, lane: L, items: Iterable[T], *, more: bool) -> None:
        """Append ``items`` (in the lane's order) to ``lane``; ``more``: whether the broker
        has records after them (the lane is behind)."""
        state = self._lanes.get(lane)
        if state is None:
            state = self._lanes[lane] = _Lane()
        key = self._key
        held = state.items
        before = len(held)
        held.extend([(key(item), item) for item in items])
        if len(held) > before:
            latest = max(moment for moment, _ in held[before:])
            state.reached = max(state.reached, latest)
        state.more = more
        if len(held) > before and not self.held:  # holding starts: the horizon's clock too
            self._last, self._moved = float("-inf"), time.monotonic()
        self.held += len(held) - before

    def behind(self, lane: L, more: bool = True) -> None:
        """Say whether ``lane`` has records to come before any of them was read (a backlog
        known from the broker): until its first ones come, the others wait for it."""
        state = self._lanes.get(lane)
        if state is None:
            state = self._lanes[lane] = _Lane()
        state.more = more

    def drop(self, lane: L) -> list[T]:
        """Forget ``lane`` (a partition given to another member); returns what it held."""
        state = self._lanes.pop(lane, None)
        if state is None:
            return []
        self.held -= len(state.items)
        return [item for _, item in state.items]

    def horizon(self) -> float:
        """Up to which key items are released now (everything once it stood still for
        ``hold_limit`` seconds with items held)."""
        limit = min((s.reached for s in self._lanes.values() if s.more), default=float("inf"))
        now = time.monotonic()
        if limit > self._last:
            self._moved = now
        elif now - self._moved >= self.hold_limit:
            return float("inf")
        self._last = limit
        return limit

    def waiting(self) -> float | None:
        """Seconds until held items are released whatever the lanes do (None: none held)."""
        if not self.held:
            return None
        return max(0.0, self._moved + self.hold_limit - time.monotonic())

    def release(self, limit: int | None = None) -> list[T]:
        """The held items up to the horizon, by key (each lane's order kept): the first
        ``limit`` of them (None: all); the others stay held, in their lanes' order."""
        if not self.held:
            return []
        horizon = self.horizon()
        runs: list[list[tuple[float, int, T]]] = []
        owners: list[_Lane[T]] = []
        for state in self._lanes.values():
            held = state.items
            if not held:
                continue
            count = len(held)
            if state.reached > horizon:  # the lane's prefix up to the horizon
                count = 0
                for moment, _ in held:
                    if moment > horizon:
                        break
                    count += 1
            if count:
                index = len(owners)
                runs.append([(moment, index, item) for moment, item in held[:count]])
                owners.append(state)
                del held[:count]
        if not runs:
            return []
        merged = runs[0] if len(runs) == 1 else list(heapq.merge(*runs, key=_first))
        if limit is not None and len(merged) > limit:
            self._give_back(merged[limit:], owners)
            del merged[limit:]
        self.held -= len(merged)
        return [item for _, _, item in merged]

    @staticmethod
    def _give_back(rest: list[tuple[float, int, T]], owners: list[_Lane[T]]) -> None:
        """Put released items beyond a limit back at the front of their lanes, in order."""
        back: dict[int, list[tuple[float, T]]] = {}
        for moment, index, item in rest:
            back.setdefault(index, []).append((moment, item))
        for index, items in back.items():
            owners[index].items[:0] = items
