"""The SQLite adapter: one database thread per adapter, group-committed publishes, and the
inspection of topics (``browse``, ``purge``, ``list_topics``)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

from broker.adapters.kit import BaseAdapter, parse_settings
from broker.adapters.sqlite.consumer import SQLiteSubscription
from broker.adapters.sqlite.settings import SQLiteSettings
from broker.adapters.sqlite.store import Store
from broker.adapters.sqlite.wire import Row, encode, read
from broker.delay import DELIVER_AT, held_until
from broker.envelope import Event
from broker.errors import BrokerUnavailableError, ClosedError, ConfigurationError, PublishError
from broker.ports import Capabilities, Chooser, TopicInfo

__all__ = ["CAPABILITIES", "SQLiteAdapter"]

#: Seconds between looks for delayed events other processes scheduled.
_LOOK_AGAIN = 0.25

T = TypeVar("T")

#: Ordered keys, replay and selective delete; no native TTL or DLQ, no delivery count.
CAPABILITIES = Capabilities(ordered_keys=True, replay=True, selective_delete=True)


class SQLiteAdapter(BaseAdapter):
    """The embedded backend: a partitioned log in one SQLite file, shared by processes."""

    def __init__(self, url: str = "sqlite:///.choreo/broker.db", **options: Any) -> None:
        super().__init__(url)
        self.settings, _ = parse_settings(SQLiteSettings, url, options)
        self._url = url
        path = urlsplit(url).path
        self.path = path[1:] if path.startswith("/") else path
        if not self.path:
            raise ConfigurationError(
                f"{url!r} names no file; use sqlite:///relative/path.db or sqlite:////abs/path.db"
            )
        self.partitions = self.settings.partitions
        self.visibility_timeout = self.settings.visibility_timeout
        self.rebalance_interval = min(1.0, self.visibility_timeout / 3)
        self.commit_interval = 0.05
        self._executor: ThreadPoolExecutor | None = None
        self._store: Store | None = None
        self.subscriptions: set[SQLiteSubscription] = set()
        self._pending: list[tuple[Row, float | None, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None
        #: The earliest delayed event known to be due (epoch s), and when to look again for
        #: those other processes scheduled.
        self._due: float | None = None
        self._look_again = 0.0

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
                Store,
                self.path,
                synchronous=self.settings.synchronous,
                busy_timeout=self.settings.busy_timeout,
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
        row = encode(topic, event)  # data JSON cannot hold fails here, for this caller only
        due = self._scheduled(event) if DELIVER_AT in event.extensions else None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, due, future))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        await future

    async def publish_many(
        self, topic: str, events: Sequence[Event], *, ttl: float | None = None
    ) -> list[Exception | None]:
        """One transaction for the whole list; an event that cannot be stored fails alone."""
        if self._executor is None:
            raise ClosedError(f"the adapter for {self._url} is not connected")
        outcomes: list[Exception | None] = []
        rows: list[Row] = []
        delayed: list[tuple[Row, float]] = []
        slots: list[int] = []  # per stored event: its place in rows + delayed, for the outcome
        for event in events:
            try:
                row = encode(topic, event)
            except (TypeError, ValueError) as exc:  # data JSON cannot hold
                outcomes.append(exc)
                slots.append(-1)
                continue
            outcomes.append(None)
            due = self._scheduled(event)
            if due is None:
                slots.append(len(rows))
                rows.append(row)
            else:
                slots.append(-2 - len(delayed))  # delayed ones are numbered after the rows
                delayed.append((row, due))
        if rows or delayed:
            results = await self._append(rows, delayed)
            for index, slot in enumerate(slots):
                if slot != -1:
                    outcomes[index] = results[slot if slot >= 0 else len(rows) - 2 - slot]
            if any(error is None for error in results[: len(rows)]):
                self._wake({topic})
        return outcomes

    async def _append(
        self, rows: list[Row], delayed: Sequence[tuple[Row, float]] = ()
    ) -> list[Exception | None]:
        """Store ``rows`` in the log and ``delayed`` (row, due) pairs in ``scheduled`` in one
        transaction: one outcome per row, ``rows`` first. A failure that is not the database's
        own is narrowed down row by row, so it fails exactly the rows it concerns."""
        every = [*rows, *(row for row, _ in delayed)]
        try:
            results = await self.run(self.store.append, rows, self.partitions, delayed)
        except (sqlite3.Error, ClosedError) as exc:
            return [self._not_stored(len(every), exc)] * len(every)
        except Exception as exc:
            if len(every) == 1:
                return [self._refused(every[0], exc)]
        else:
            pairs = zip(every, results, strict=True)
            return [None if error is None else self._refused(row, error) for row, error in pairs]
        outcomes: list[Exception | None] = []
        for row in rows:
            outcomes.extend(await self._append([row]))
        for pair in delayed:
            outcomes.extend(await self._append([], [pair]))
        return outcomes

    def _refused(self, row: Row, exc: BaseException) -> PublishError:
        error = PublishError(
            f"the SQLite broker {self.path!r} cannot store event {row[1]!r} of topic "
            f"{row[0]!r}: {exc}"
        )
        error.__cause__ = exc
        return error

    def _not_stored(self, count: int, exc: BaseException) -> PublishError:
        return PublishError(
            f"the SQLite broker {self.path!r} did not store {count} event(s): {exc}; check "
            f"the file is writable and not locked for {self.settings.busy_timeout:.0f}s by "
            "another process"
        )

    def _wake(self, topics: set[str]) -> None:
        for sub in self.subscriptions:
            if topics.intersection(sub.topics):
                sub.wake()

    async def _flush(self) -> None:
        batch: list[tuple[Row, float | None, asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                now = [(row, future) for row, due, future in batch if due is None]
                later = [(row, due, future) for row, due, future in batch if due is not None]
                rows = [row for row, _ in now]
                results = await self._append(rows, [(row, due) for row, due, _ in later])
                futures = [future for _, future in now] + [future for _, _, future in later]
                for future, error in zip(futures, results, strict=True):
                    if future.done():
                        continue
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(error)
                stored = zip(rows, results, strict=False)  # the log rows come first
                self._wake({row[0] for row, error in stored if error is None})
        finally:
            self._flushing = None
            for _, _, future in batch + self._pending:  # cancelled or closed: nobody waits forever
                if not future.done():
                    future.set_exception(ClosedError(f"the adapter for {self._url} stopped"))

    # -- delayed events ----------------------------------------------------------------------

    def _scheduled(self, event: Event) -> float | None:
        """When ``event`` is due if that is later than now (it goes to ``scheduled``)."""
        due = held_until(event)
        if due is None:
            return None
        if self._due is None or due < self._due:
            self._due = due
        return due

    async def promote_due(self) -> None:
        """Move due delayed events into the log (called by subscriptions as they poll): when
        the earliest known one is due, and every :data:`_LOOK_AGAIN` s for those other
        processes scheduled."""
        now = time.time()
        if now < self._look_again and (self._due is None or now < self._due):
            return
        self._look_again = now + _LOOK_AGAIN
        due = await self.run(self.store.next_due)
        if due is not None and due <= now:
            topics, due = await self.run(self.store.promote, self.partitions)
            self._wake(topics)
        self._due = due

    # -- subscribing and inspection --------------------------------------------------------

    async def open_subscription(
        self, topics: tuple[str, ...], group: str, from_beginning: bool, prefetch: int
    ) -> SQLiteSubscription:
        sub = SQLiteSubscription(self, topics, group, prefetch)
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
        return [read(body) for body in bodies]

    async def purge(
        self, topic: str, ids: Collection[str] | None = None, *, among: int | None = None
    ) -> int:
        return await self.run(self.store.purge, topic, ids, among)

    async def purge_chosen(self, topic: str, choose: Chooser) -> int:
        def chosen(bodies: list[str]) -> Collection[str]:
            return choose([read(body) for body in bodies])

        return await self.run(self.store.purge_chosen, topic, chosen)

    async def delete_topic(self, topic: str) -> None:
        """Delete ``topic``, its events and its groups' positions."""
        await self.run(self.store.delete_topic, topic)
