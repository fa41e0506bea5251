"""The SQLite adapter: one database thread per adapter, group-committed publishes, and the
inspection of topics (``browse``, ``purge``, ``list_topics``)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

from broker.adapters.kit import BaseAdapter, parse_settings
from broker.adapters.sqlite.consumer import SQLiteSubscription
from broker.adapters.sqlite.settings import SQLiteSettings
from broker.adapters.sqlite.store import Store
from broker.adapters.sqlite.wire import Row, encode, read
from broker.envelope import Event
from broker.errors import BrokerUnavailableError, ClosedError, ConfigurationError, PublishError
from broker.ports import Capabilities, TopicInfo

__all__ = ["CAPABILITIES", "SQLiteAdapter"]

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
        self._pending: list[tuple[Row, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

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
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        await future

    async def publish_many(
        self, topic: str, events: Sequence[Event], *, ttl: float | None = None
    ) -> list[Exception | None]:
        """One transaction for the whole list (every event is stored, or none is)."""
        if self._executor is None:
            raise ClosedError(f"the adapter for {self._url} is not connected")
        outcomes: list[Exception | None] = []
        rows = []
        for event in events:
            try:
                rows.append(encode(topic, event))
            except (TypeError, ValueError) as exc:  # data JSON cannot hold
                outcomes.append(exc)
            else:
                outcomes.append(None)
        if rows:
            try:
                await self.run(self.store.append, rows, self.partitions)
            except (sqlite3.Error, ClosedError) as exc:
                error = self._not_stored(len(rows), exc)
                return [outcome or error for outcome in outcomes]
            self._wake({topic})
        return outcomes

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
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                rows = [row for row, _ in batch]
                try:
                    await self.run(self.store.append, rows, self.partitions)
                except (sqlite3.Error, ClosedError) as exc:
                    error = self._not_stored(len(rows), exc)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
                self._wake({row[0] for row, _ in batch})
        finally:
            self._flushing = None

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

    async def purge(self, topic: str, ids: Collection[str] | None = None) -> int:
        return await self.run(self.store.purge, topic, ids)

    async def delete_topic(self, topic: str) -> None:
        """Delete ``topic``, its events and its groups' positions."""
        await self.run(self.store.delete_topic, topic)
