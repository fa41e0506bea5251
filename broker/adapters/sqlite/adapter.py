"""``sqlite:///path/to/broker.db``: the embedded default broker, durable and multi-process.

Topics are partitioned logs in one SQLite file (WAL mode). Each group keeps a committed position
per partition; its subscriptions - in this process or others - lease partitions for a fair
share and renew the leases while they make progress. A delivery not acked within
``visibility_timeout`` (or a process that dies) lets the lease lapse, and the partition resumes
elsewhere after the last committed event. Same-key events share a partition: ordered per group.

Options (query string): ``partitions`` (8, for new topics), ``visibility_timeout`` (30 s),
``poll_interval`` (0.05 s, how often other processes' events are looked for),
``synchronous`` (``NORMAL``: durable across application crashes; ``FULL`` for power loss).

All database work runs on one thread per adapter; concurrent publishes are group-committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from broker.adapters.sqlite_store import Store
from broker.envelope import Event
from broker.errors import (
    BrokerUnavailableError,
    ClosedError,
    ConfigurationError,
    EnvelopeError,
    PublishError,
)
from broker.ports import Capabilities, Delivery, TopicInfo

__all__ = ["SQLiteAdapter"]

T = TypeVar("T")

CAPABILITIES = Capabilities(
    native_ttl=False,
    native_dlq=False,
    ordered_keys=True,
    replay=True,
    selective_delete=True,
    delivery_count=False,
)


@dataclass(slots=True)
class _Partition:
    topic: str
    part: int
    position: int  # last seq fetched
    inflight: deque[list[Any]] = field(default_factory=deque)  # [seq, acked, started]
    committed: int = 0
    dirty: bool = False
    revoking: bool = False


class _SQLiteDelivery(Delivery):
    __slots__ = ("_entry", "_part", "_sub")

    def __init__(self, sub: _SQLiteSubscription, part: _Partition, entry: list[Any], body: str):
        try:
            event: Event | None = Event.from_json(body)
            error = None
        except EnvelopeError as exc:
            event, error = None, exc
        super().__init__(part.topic, event, body=body.encode(), decode_error=error)
        self._sub = sub
        self._part = part
        self._entry = entry

    async def ack(self) -> None:
        self._sub.settle(self._part, self._entry)

    async def nack(self) -> None:
        self._sub.give_back(self._part)

    async def keep_alive(self) -> None:
        self._entry[2] = time.monotonic()


class _SQLiteSubscription:
    def __init__(
        self, adapter: SQLiteAdapter, topics: Sequence[str], group: str, prefetch: int
    ) -> None:
        self._adapter = adapter
        self._topics = tuple(topics)
        self._group = group
        self._prefetch = prefetch
        self._member = f"{time.time():.6f}-{uuid.uuid4().hex[:8]}"
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._dropped: set[tuple[str, int]] = set()
        self._buffer: deque[tuple[_Partition, list[Any], str]] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._next_rebalance = 0.0
        self._last_commit = time.monotonic()

    # -- bookkeeping called by deliveries --------------------------------------------------

    def settle(self, part: _Partition, entry: list[Any]) -> None:
        entry[1] = True
        while part.inflight and part.inflight[0][1]:
            part.committed = part.inflight.popleft()[0]
            part.dirty = True

    def give_back(self, part: _Partition) -> None:
        key = (part.topic, part.part)
        if self._parts.get(key) is part:
            self._dropped.add(key)
            self._next_rebalance = 0.0
            self._wakeup.set()

    def wake(self) -> None:
        self._wakeup.set()

    # -- the loop --------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._buffer:
                part, entry, body = self._buffer.popleft()
                if self._parts.get((part.topic, part.part)) is part:
                    entry[2] = time.monotonic()
                    return _SQLiteDelivery(self, part, entry, body)
                continue
            await self._maintain()
            if await self._fill():
                continue
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._adapter.poll_interval)

    async def _maintain(self) -> None:
        """Commit what is acked (batched) and rebalance when it is due."""
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
        self._next_rebalance = time.monotonic() + adapter.rebalance_interval
        await self._commit()
        for key in self._dropped:
            self._parts.pop(key, None)
        self._dropped.clear()
        now = time.monotonic()
        busy = {k for k, p in self._parts.items() if p.inflight}
        stale = {
            k
            for k, p in self._parts.items()
            if any(not e[1] and now - e[2] > adapter.visibility_timeout for e in p.inflight)
        }
        result = await adapter.run(
            adapter.store.rebalance,
            self._topics,
            self._group,
            self._member,
            lease=adapter.visibility_timeout,
            held=set(self._parts),
            busy=busy,
            stale=stale,
        )
        for key in (*result.released, *result.lost):
            self._parts.pop(key, None)
        for key in result.revoking:
            self._revoke(key)
        for claim in result.claimed:
            self._parts[(claim.topic, claim.part)] = _Partition(
                claim.topic, claim.part, claim.committed, committed=claim.committed
            )

    def _revoke(self, key: tuple[str, int]) -> None:
        """Stop fetching from a partition another member should get; drop what is unstarted."""
        part = self._parts.get(key)
        if part is None or part.revoking:
            return
        part.revoking = True
        unstarted = {id(e) for p, e, _ in self._buffer if p is part}
        if unstarted:
            self._buffer = deque(item for item in self._buffer if item[0] is not part)
            part.inflight = deque(e for e in part.inflight if id(e) not in unstarted)
        self._next_rebalance = min(self._next_rebalance, time.monotonic() + 0.05)

    async def _fill(self) -> bool:
        wanted = []
        share = max(1, self._prefetch // max(1, len(self._parts)))
        for part in self._parts.values():
            room = share - len(part.inflight)
            if room > 0 and not part.revoking:
                wanted.append((part.topic, part.part, part.position, room))
        if not wanted:
            return False
        rows = await self._adapter.run(self._adapter.store.fetch, wanted)
        for topic, index, seq, body in rows:
            owned = self._parts.get((topic, index))
            if owned is None or seq <= owned.position:
                continue
            owned.position = seq
            entry: list[Any] = [seq, False, time.monotonic()]
            owned.inflight.append(entry)
            self._buffer.append((owned, entry, body))
        return bool(rows)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        self._adapter.subscriptions.discard(self)
        try:
            await self._commit()
            await self._adapter.run(
                self._adapter.store.leave, self._topics, self._group, self._member
            )
        except (sqlite3.Error, ClosedError):
            pass  # the leases lapse by themselves; nothing acked is lost beyond redelivery

    async def join(self, from_beginning: bool) -> None:
        await self._adapter.run(
            self._adapter.store.join,
            self._topics,
            self._group,
            from_beginning=from_beginning,
            partitions=self._adapter.partitions,
        )
        await self._rebalance()


class SQLiteAdapter:
    """The embedded backend: a partitioned log in one SQLite file, shared by processes."""

    def __init__(
        self,
        url: str = "sqlite:///.choreo/broker.db",
        *,
        partitions: int | str = 8,
        visibility_timeout: float | str = 30.0,
        poll_interval: float | str = 0.05,
        synchronous: str = "NORMAL",
        busy_timeout: float | str = 30.0,
    ) -> None:
        self._url = url
        path = urlsplit(url).path
        self.path = path[1:] if path.startswith("/") else path
        if not self.path:
            raise ConfigurationError(
                f"{url!r} names no file; use sqlite:///relative/path.db or sqlite:////abs/path.db"
            )
        self.partitions = _positive(int, partitions, "partitions")
        self.visibility_timeout = _positive(float, visibility_timeout, "visibility_timeout")
        self.poll_interval = _positive(float, poll_interval, "poll_interval")
        self.busy_timeout = _positive(float, busy_timeout, "busy_timeout")
        self.rebalance_interval = min(1.0, self.visibility_timeout / 3)
        self.commit_interval = 0.05
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigurationError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self._synchronous = synchronous.upper()
        self._executor: ThreadPoolExecutor | None = None
        self._store: Store | None = None
        self.subscriptions: set[_SQLiteSubscription] = set()
        self._pending: list[tuple[str, Event, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self._url

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    @property
    def store(self) -> Store:
        if self._store is None:
            raise ClosedError(f"the adapter for {self._url} is not connected")
        return self._store

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the database thread."""
        if self._executor is None:
            raise ClosedError(f"the adapter for {self._url} is not connected")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def connect(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="choreo-sqlite")
        try:
            self._store = await self.run(
                Store, self.path, synchronous=self._synchronous, busy_timeout=self.busy_timeout
            )
        except (sqlite3.Error, OSError) as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise BrokerUnavailableError(
                f"cannot open the SQLite broker {self.path!r} ({exc}); check that its "
                "directory is writable"
            ) from exc

    async def close(self) -> None:
        if self._executor is None:
            return
        for sub in list(self.subscriptions):
            await sub.close()
        if self._flushing is not None:
            await self._flushing
        store, self._store = self._store, None
        if store is not None:
            await self.run(store.close)
        self._executor.shutdown(wait=True)
        self._executor = None

    # -- publishing (group commit) ---------------------------------------------------------

    async def publish(self, topic: str, event: Event, *, ttl: float | None = None) -> None:
        if self._executor is None:
            raise ClosedError(f"the adapter for {self._url} is not connected")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((topic, event, future))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                rows = [(t, e.id, e.partitionkey, e.to_json()) for t, e, _ in batch]
                try:
                    await self.run(self.store.append, rows, self.partitions)
                except (sqlite3.Error, ClosedError) as exc:
                    error = PublishError(
                        f"the SQLite broker {self.path!r} did not store {len(rows)} event(s): "
                        f"{exc}; check the file is writable and not locked for "
                        f"{self.busy_timeout:.0f}s by another process"
                    )
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)
                topics = {t for t, _, _ in batch}
                for sub in self.subscriptions:
                    if topics.intersection(sub._topics):
                        sub.wake()
        finally:
            self._flushing = None

    # -- subscribing and inspection --------------------------------------------------------

    async def subscribe(
        self,
        topics: Sequence[str],
        group: str,
        *,
        from_beginning: bool = False,
        prefetch: int = 100,
    ) -> _SQLiteSubscription:
        sub = _SQLiteSubscription(self, topics, group, max(1, prefetch))
        await sub.join(from_beginning)
        self.subscriptions.add(sub)
        return sub

    async def create_topic(self, topic: str, *, partitions: int | None = None) -> None:
        await self.run(self.store.ensure_topic, topic, partitions or self.partitions)

    async def list_topics(self) -> list[TopicInfo]:
        rows = await self.run(self.store.topics)
        return [TopicInfo(n, messages=c, partitions=p, groups=tuple(g)) for n, p, c, g in rows]

    async def browse(self, topic: str, *, limit: int = 100) -> list[Event]:
        bodies = await self.run(self.store.browse, topic, limit)
        return [Event.from_json(body) for body in bodies]

    async def purge(self, topic: str, ids: Collection[str] | None = None) -> int:
        return await self.run(self.store.purge, topic, ids)


def _positive(kind: Callable[[Any], T], value: Any, name: str) -> T:
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        converted = None
    if converted is None or converted <= 0:  # type: ignore[operator]
        raise ConfigurationError(
            f"sqlite:// option {name} must be a positive number, not {value!r}"
        )
    return converted
