"""Which prefix of the deliveries handed out from one partition is acked.

Log-based backends (memory, SQLite, Kafka) hand out a partition's entries in offset order but
get them acked in any order; only the highest offset below which *everything* is acked may be
committed, or a crash would skip an unhandled event. :class:`OffsetTracker` keeps the entries
in flight and answers exactly that::

    tracker = OffsetTracker()
    first, second = tracker.add(7), tracker.add(8)
    tracker.ack(second)  # None: 7 is still being handled
    tracker.ack(first)   # 8: everything up to 8 is acked

A backend whose deliveries carry their own ``offset`` and ``acked`` (a :class:`Tracked`) may
:meth:`~OffsetTracker.track` them instead of adding an :class:`InFlight` per delivery.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Collection, Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["InFlight", "OffsetTracker", "Tracked"]


class Tracked(Protocol):
    """What an :class:`OffsetTracker` keeps of an entry: its offset and whether it is acked."""

    offset: int
    acked: bool


class InFlight:
    """One handed-out entry: its offset, whether it is acked, when it was last worked on
    (a ``time.monotonic()`` value, for backends with leases; 0 where nobody asks)."""

    __slots__ = ("acked", "offset", "touched")

    def __init__(self, offset: int, touched: float = 0.0) -> None:
        self.offset = offset
        self.acked = False
        self.touched = touched

    def touch(self) -> None:
        """Note that the entry is still being worked on (a lease keep-alive)."""
        self.touched = time.monotonic()


E = TypeVar("E", bound=Tracked)


class OffsetTracker(Generic[E]):
    """The entries in flight of one partition, in the order they were handed out."""

    __slots__ = ("_entries", "_unacked")

    def __init__(self) -> None:
        self._entries: deque[E] = deque()
        self._unacked = 0

    def add(self: OffsetTracker[InFlight], offset: int, touched: float = 0.0) -> InFlight:
        """Track an entry handed out after every entry tracked so far (``touched``: when, for
        backends that lease entries)."""
        entry = InFlight(offset, touched)
        self._entries.append(entry)
        self._unacked += 1
        return entry

    def track(self, entry: E) -> None:
        """Track ``entry`` (not acked), handed out after every entry tracked so far."""
        self._entries.append(entry)
        self._unacked += 1

    def ack(self, entry: E) -> int | None:
        """Mark ``entry`` acked; the highest offset acked with everything before it, if that
        moved (``None`` when an earlier entry still waits, or ``entry`` was acked already)."""
        if entry.acked:
            return None
        entry.acked = True
        self._unacked -= 1
        entries = self._entries
        done = None
        while entries and entries[0].acked:
            done = entries.popleft().offset
        return done

    def remove(self, gone: Collection[E]) -> None:
        """Stop tracking entries that will never be handled here (given to another member)."""
        if gone:
            self._entries = deque(e for e in self._entries if e not in gone)
            self._unacked = sum(1 for e in self._entries if not e.acked)

    @property
    def unacked(self) -> int:
        """Entries handed out and not acked yet."""
        return self._unacked

    def oldest_unacked(self) -> E | None:
        """The first entry still waiting for its ack."""
        return next((e for e in self._entries if not e.acked), None)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[E]:
        return iter(self._entries)
