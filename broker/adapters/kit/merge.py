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
import itertools
import operator
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from functools import partial
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
#: A held (key, item) entry's key, and its item.
_KEY = operator.itemgetter(0)
_ITEM = operator.itemgetter(1)


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


def _ascending(run: list[tuple[float, T]]) -> bool:
    keys = list(map(_KEY, run))
    return all(map(operator.le, keys, keys[1:]))


def _merged(runs: list[list[tuple[float, T]]]) -> list[tuple[float, T]]:
    """The (key, item) entries of ``runs`` merged by key, ties by run, each run's order kept
    (items are never compared). Runs whose keys ascend (the usual case: events timed as they
    were published) are sorted together, in C (stable: equal keys keep the runs' order);
    otherwise a k-way merge of the runs' heads, a Python generator several times slower."""
    if all(map(_ascending, runs)):
        return sorted(itertools.chain.from_iterable(runs), key=_KEY)
    return list(heapq.merge(*runs, key=_KEY))


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
        key = self._key
        self.add_keyed(lane, [(key(item), item) for item in items], more=more)

    def add_keyed(self, lane: L, keyed: list[tuple[float, T]], *, more: bool) -> None:
        """:meth:`add` of (key, item) pairs whose keys the caller worked out (no call of the
        key function per item)."""
        state = self._lanes.get(lane)
        if state is None:
            state = self._lanes[lane] = _Lane()
        held = state.items
        before = len(held)
        if keyed:
            held += keyed
            state.reached = max(state.reached, *map(_KEY, keyed))
        state.more = more
        if len(held) > before and not self.held:  # holding starts: the horizon's clock too
            self._last, self._moved = float("-inf"), time.monotonic()
        self.held += len(held) - before

    def count(self, lane: L) -> int:
        """How many items ``lane`` holds."""
        state = self._lanes.get(lane)
        return 0 if state is None else len(state.items)

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
        runs: list[list[tuple[float, T]]] = []
        owners: list[_Lane[T]] = []
        for state in self._lanes.values():
            held = state.items
            if not held:
                continue
            count = len(held)
            if state.reached > horizon:  # the lane's prefix up to the horizon (keys <= it)
                count = len(
                    list(itertools.takewhile(partial(operator.ge, horizon), map(_KEY, held)))
                )
            if count:
                runs.append(held[:count])
                owners.append(state)
                del held[:count]
        if not runs:
            return []
        merged = runs[0] if len(runs) == 1 else _merged(runs)
        if limit is not None and len(merged) > limit:
            self._give_back(merged[limit:], runs, owners)
            del merged[limit:]
        self.held -= len(merged)
        return list(map(_ITEM, merged))

    @staticmethod
    def _give_back(
        rest: list[tuple[float, T]], runs: list[list[tuple[float, T]]], owners: list[_Lane[T]]
    ) -> None:
        """Put released (key, item) entries beyond a limit back at the front of the lanes they
        came from (``owners[i]`` gave ``runs[i]``), in order."""
        owner = {id(entry): lane for lane, run in zip(owners, runs, strict=True) for entry in run}
        back: dict[int, tuple[_Lane[T], list[tuple[float, T]]]] = {}
        for entry in rest:
            lane = owner[id(entry)]
            back.setdefault(id(lane), (lane, []))[1].append(entry)
        for lane, entries in back.values():
            lane.items[:0] = entries
