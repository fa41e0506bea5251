"""The consuming side of the SQLite broker: a group member that leases partitions, fetches
their rows, hands them out and commits the highest contiguously acked ``seq`` of each.

For a batch subscription (:meth:`SQLiteSubscription.merge_partitions`), the rows the fetches
bring from the partitions are merged by event time up to the time every partition with more
rows reached (:class:`broker.adapters.kit.Horizon`): a batch spans them, and a partition that
got its share of a fetch from an earlier stretch of time holds the others' later rows back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.adapters.kit import BaseSubscription, Horizon, InFlight, OffsetTracker, event_time
from broker.adapters.sqlite.owner import new_member_id
from broker.adapters.sqlite.wire import decode
from broker.envelope import Event
from broker.errors import ClosedError, EnvelopeError
from broker.observability import get_logger
from broker.ports import Backlog, Delivery

if TYPE_CHECKING:
    from broker.adapters.sqlite.adapter import SQLiteAdapter

__all__ = ["SQLiteDelivery", "SQLiteSubscription"]

_log = get_logger("choreo.sqlite")
#: A fetched row: its partition, its place in the partition's tracker, its body and, when a
#: batch read decoded it to merge the partitions, what it decodes to.
_Decoded = tuple[Event | None, EnvelopeError | None]
_Row = tuple["_Partition", InFlight, str, _Decoded | None]


@dataclass(slots=True)
class _Partition:
    topic: str
    part: int
    position: int  # last seq fetched
    committed: int = 0
    tracker: OffsetTracker[InFlight] = field(default_factory=OffsetTracker)
    dirty: bool = False
    revoking: bool = False


class SQLiteDelivery(Delivery):
    """One row of a leased partition."""

    __slots__ = ("_flight", "_part", "_sub")

    def __init__(
        self,
        sub: SQLiteSubscription,
        part: _Partition,
        flight: InFlight,
        body: str,
        decoded: _Decoded | None = None,
    ):
        event, error = decode(body) if decoded is None else decoded
        super().__init__(
            part.topic,
            event,
            body=body.encode() if event is None else b"",  # kept for what is undecodable
            decode_error=error,
            position=f"{part.topic}/{part.part}/{flight.offset}",
        )
        self._sub = sub
        self._part = part
        self._flight = flight

    async def ack(self) -> None:
        self._sub.settle(self._part, self._flight)

    def ack_now(self) -> None:
        """:meth:`ack` without awaiting (settling never waits; the acked offsets are
        committed in batches by the subscription's loop): what the consumers call."""
        self._sub.settle(self._part, self._flight)

    async def nack(self) -> None:
        self._sub.give_back(self._part)

    async def keep_alive(self) -> None:
        self._flight.touch()


def _time_of(row: _Row) -> float:
    decoded = row[3]
    return event_time(decoded[0] if decoded is not None else None)


class SQLiteSubscription(BaseSubscription):
    """A member of one group on some topics, in this process."""

    def __init__(
        self, adapter: SQLiteAdapter, topics: Sequence[str], group: str, prefetch: int
    ) -> None:
        self._adapter = adapter
        self.topics = tuple(topics)
        self._group = group
        self._prefetch = prefetch
        self._member = new_member_id()
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._dropped: set[tuple[str, int]] = set()
        self._buffer: deque[_Row] = deque()
        self._wakeup = asyncio.Event()
        #: Whether the last fetch found a partition's share of the prefetch window full (an
        #: ack that makes room there wakes the take waiting for it).
        self._full = False
        self._closed = False
        self._next_rebalance = 0.0
        self._last_commit = time.monotonic()
        #: Set by :meth:`merge_partitions`: fetched rows wait here to be merged by event time.
        self._horizon: Horizon[tuple[str, int], _Row] | None = None

    # -- bookkeeping called by deliveries --------------------------------------------------

    def settle(self, part: _Partition, flight: InFlight) -> None:
        done = part.tracker.ack(flight)
        if done is not None:
            part.committed = done
            part.dirty = True
            if self._full:  # room in a full prefetch window: a take waiting for it fetches now
                self._full = False
                self._wakeup.set()

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Settle each delivery (a batch handler's, at once: no coroutine per delivery)."""
        settle = self.settle
        for delivery in deliveries:
            if isinstance(delivery, SQLiteDelivery):
                settle(delivery._part, delivery._flight)
            else:
                await delivery.ack()
        if deliveries:  # room in the prefetch window: a take waiting for more fetches now
            self._wakeup.set()

    def give_back(self, part: _Partition) -> None:
        key = (part.topic, part.part)
        if self._parts.get(key) is part:
            self._dropped.add(key)
            self._next_rebalance = 0.0
            self._wakeup.set()

    def wake(self) -> None:
        self._wakeup.set()

    # -- the loop --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def poll(self) -> SQLiteDelivery | None:
        buffer = self._buffer
        while buffer and not self._closed:
            part, flight, body, decoded = buffer.popleft()
            if self._parts.get((part.topic, part.part)) is part:
                flight.touch()
                return SQLiteDelivery(self, part, flight, body, decoded)
        return None

    def poll_many(self, limit: int) -> list[Delivery]:
        """Up to ``limit`` deliveries from the buffer: :meth:`poll` for many, with one clock
        reading and one check of each partition's lease for the lot."""
        buffer, parts = self._buffer, self._parts
        if self._closed or not buffer:
            return []
        owned: dict[int, bool] = {}
        now = time.monotonic()
        batch: list[Delivery] = []
        while buffer and len(batch) < limit:
            part, flight, body, decoded = buffer.popleft()
            mine = owned.get(id(part))
            if mine is None:
                mine = owned[id(part)] = parts.get((part.topic, part.part)) is part
            if mine:
                flight.touched = now
                batch.append(SQLiteDelivery(self, part, flight, body, decoded))
        return batch

    def merge_partitions(self) -> None:
        """Read for a batch subscription: the partitions merged by event time, with twice the
        prefetch window. The horizon keeps rows fetched from the partitions that are ahead in
        time until the lagging ones reach them, and those rows count in the window: with only
        ``2 * max_batch`` (the default), the batch handled and the held rows left room for
        part of the next batch (a quarter, reading a saga backlog over four topics), which
        came short and the one after it only once the first was acked."""
        self._horizon = Horizon(_time_of)
        self._prefetch *= 2

    async def wait_ready(self, timeout: float | None) -> None:
        """Commit and rebalance when due, fetch; if nothing came, wait for a publish in this
        process (or the poll interval, for other processes' publishes)."""
        self._wakeup.clear()  # before the fetch: an ack or a publish meanwhile is not lost
        await self._maintain()
        if await self._fill():
            return
        wait = self._adapter.settings.poll_interval
        held = self._horizon.waiting() if self._horizon is not None else None
        if held is not None:
            wait = min(wait, held)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._wakeup.wait(), wait if timeout is None else min(wait, timeout)
            )

    async def _maintain(self) -> None:
        """Commit what is acked (batched) and rebalance when it is due."""
        await self._adapter.promote_due()
        now = time.monotonic()
        if now - self._last_commit >= self._adapter.commit_interval:
            await self._commit()
        if now >= self._next_rebalance:
            await self._rebalance()

    async def _commit(self) -> None:
        self._last_commit = time.monotonic()
        dirty = [p for p in self._parts.values() if p.dirty]
        if not dirty:
            return
        for part in dirty:
            part.dirty = False
        positions = [(p.topic, p.part, p.committed) for p in dirty]
        await self._adapter.run(self._adapter.store.commit, self._group, self._member, positions)

    async def _rebalance(self) -> None:
        adapter = self._adapter
        lease = adapter.settings.visibility_timeout
        self._next_rebalance = time.monotonic() + adapter.rebalance_interval
        await self._commit()
        for key in self._dropped:
            self._forget(key)
        self._dropped.clear()
        now = time.monotonic()
        busy = {k for k, p in self._parts.items() if p.tracker}
        stale = {
            k
            for k, p in self._parts.items()
            if any(not e.acked and now - e.touched > lease for e in p.tracker)
        }
        result = await adapter.run(
            adapter.store.rebalance,
            self.topics,
            self._group,
            self._member,
            lease=lease,
            held=set(self._parts),
            busy=busy,
            stale=stale,
        )
        if result.reaped:
            _log.info(
                "reclaimed the leases of dead members", group=self._group, members=result.reaped
            )
        for key in (*result.released, *result.lost):
            self._forget(key)
        for key in result.revoking:
            self._revoke(key)
        for claim in result.claimed:
            self._parts[(claim.topic, claim.part)] = _Partition(
                claim.topic, claim.part, claim.committed, committed=claim.committed
            )

    def _forget(self, key: tuple[str, int]) -> None:
        self._parts.pop(key, None)
        if self._horizon is not None:
            self._horizon.drop(key)

    def _revoke(self, key: tuple[str, int]) -> None:
        """Stop fetching from a partition another member should get; drop what is unstarted."""
        part = self._parts.get(key)
        if part is None or part.revoking:
            return
        part.revoking = True
        unstarted = {flight for p, flight, _, _ in self._buffer if p is part}
        if unstarted:
            self._buffer = deque(item for item in self._buffer if item[0] is not part)
        if self._horizon is not None:
            unstarted.update(flight for _, flight, _, _ in self._horizon.drop(key))
        part.tracker.remove(unstarted)
        self._next_rebalance = min(self._next_rebalance, time.monotonic() + 0.05)

    async def _fill(self) -> bool:
        wanted = []
        share = max(1, self._prefetch // max(1, len(self._parts)))
        full = False
        for part in self._parts.values():
            room = share - len(part.tracker)
            if room <= 0:
                full = True
            elif not part.revoking:
                wanted.append((part.topic, part.part, part.position, room))
        self._full = full
        if not wanted:
            return self._release()
        rows = await self._adapter.run(self._adapter.store.fetch, wanted)
        now = time.monotonic()
        if self._horizon is not None:
            self._hold(wanted, rows, now)
            return self._release() or bool(rows)
        buffer = self._buffer
        for topic, index, seq, body in rows:
            owned = self._parts.get((topic, index))
            if owned is None or seq <= owned.position:
                continue
            owned.position = seq
            buffer.append((owned, owned.tracker.add(seq, now), body, None))
        return bool(rows)

    def _hold(
        self,
        wanted: list[tuple[str, int, int, int]],
        rows: list[tuple[str, int, int, str]],
        now: float,
    ) -> None:
        """Decode the fetched rows into their partitions' lanes; a partition that returned
        as many rows as asked has more (it holds the others' later rows back)."""
        assert self._horizon is not None
        lanes: dict[tuple[str, int], list[_Row]] = {}
        for topic, index, seq, body in rows:
            owned = self._parts.get((topic, index))
            if owned is None or seq <= owned.position:
                continue
            owned.position = seq
            row: _Row = (owned, owned.tracker.add(seq, now), body, decode(body))
            lanes.setdefault((topic, index), []).append(row)
        for topic, index, _, limit in wanted:
            lane = lanes.get((topic, index), [])
            self._horizon.add((topic, index), lane, more=len(lane) >= limit)

    def _release(self) -> bool:
        """Move the rows the horizon lets go to the buffer; whether there were any."""
        if self._horizon is None:
            return False
        released = self._horizon.release()
        self._buffer.extend(released)
        return bool(released)

    async def backlog(self) -> Backlog:
        """Per partition ``topic/part``: one past its last ``seq``, and one past the group's
        committed ``seq`` (or this member's acked one, not flushed yet, where it is ahead)."""
        rows = await self._adapter.run(self._adapter.store.backlog, self.topics, self._group)
        appended: dict[str, int] = {}
        acked: dict[str, int] = {}
        for topic, index, last, committed in rows:
            own = self._parts.get((topic, index))
            done = max(committed, own.committed) if own is not None else committed
            appended[f"{topic}/{index}"] = last + 1
            acked[f"{topic}/{index}"] = done + 1
        return Backlog(appended, acked)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        self._adapter.subscriptions.discard(self)
        try:
            await self._commit()
            await self._adapter.run(
                self._adapter.store.leave, self.topics, self._group, self._member
            )
        except (sqlite3.Error, ClosedError):
            pass  # the leases lapse by themselves; nothing acked is lost beyond redelivery

    async def join(self, from_beginning: bool) -> None:
        await self._adapter.run(
            self._adapter.store.join,
            self.topics,
            self._group,
            from_beginning=from_beginning,
            partitions=self._adapter.partitions,
        )
        await self._rebalance()
