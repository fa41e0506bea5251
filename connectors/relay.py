"""The relay core: read committed changes from a source, publish them, then confirm.

A :class:`Source` (one per database: ``relay_postgres``, ``relay_mysql``, ``relay_sqlite``)
hands out :class:`Change` batches of committed outbox rows in commit order, each with the
position that follows it. :class:`Relay` routes every row (:class:`~connectors.routing.Router`),
publishes it through a :class:`broker.Bus` and only then calls :meth:`Source.confirm`: a crash
loses nothing and re-sends at most the unconfirmed tail.

Rows with the same ``aggregateid`` are published one after the other in commit order; different
aggregates are published concurrently, and up to ``max_in_flight`` changes are in flight at once
(read ahead while earlier ones are being published). Changes are confirmed strictly in order.
A publish that fails because the broker is away is retried with backoff until it succeeds or the
relay is stopped (the position is then not confirmed); a row the broker refuses for what it is
(codec/schema, envelope) is dead-lettered. A database lost while relaying
(:class:`~connectors.errors.DatabaseUnavailableError`) is reopened with backoff and the source
resumes from its confirmed position. Either outage is told once when it starts, reminded at most
every ``still_down_every`` seconds, and told once when it ends (:class:`Outage`), not per retry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from broker import Bus, deadletter
from broker.adapters.kit import Backoff, Stopped, keep_trying
from broker.errors import BrokerUnavailableError, EnvelopeError, PayloadError
from broker.observability import get_logger
from connectors.errors import DatabaseUnavailableError, RelayLockedError
from connectors.routing import OutboxRow, Routed, Router

__all__ = ["RELAYED", "Change", "Outage", "Relay", "RelayStats", "Source"]

STILL_DOWN_EVERY = 60.0  # seconds between reminders while the database or broker stays away
BROKER_AWAY = (
    "broker unavailable; outbox rows wait in the database, nothing is lost",
    "broker still unavailable; outbox rows wait in the database",
    "broker available again; relaying the waiting rows",
)
DATABASE_AWAY = (
    "database connection lost; reconnecting (nothing unconfirmed is skipped)",
    "database still unavailable",
    "database reconnected; resuming from the confirmed position",
)

RELAYED = Counter("choreo_outbox_relayed", "Outbox rows published by a relay", ["relay"])
DEAD_LETTERED = Counter(
    "choreo_outbox_dead_lettered", "Outbox rows sent to the DLQ topic", ["relay", "reason"]
)
PUBLISH_ERRORS = Counter(
    "choreo_outbox_publish_errors", "Publishes that failed and were retried", ["relay"]
)
LAG_SECONDS = Gauge(
    "choreo_outbox_lag_seconds", "Commit time to broker acceptance of the last change", ["relay"]
)
COMMIT_TO_PUBLISH = Histogram(
    "choreo_outbox_commit_to_publish_seconds",
    "Time from the database commit to the broker accepting the change",
    ["relay"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


@dataclasses.dataclass(slots=True)
class Change:
    """Committed rows (one or more whole transactions) and the position right after them."""

    rows: list[OutboxRow]
    position: Any
    committed_at: datetime | None = None


class Source(Protocol):
    """Where committed outbox rows come from."""

    name: str

    async def open(self) -> None:
        """Connect and lock the position; raise RelayLockedError if another relay holds it."""
        ...

    async def next_change(self, timeout: float) -> Change | None:
        """The next committed rows, or None when nothing arrived within ``timeout`` seconds."""
        ...

    async def confirm(self, change: Change) -> None:
        """Durably record that everything up to ``change.position`` was published."""
        ...

    async def heartbeat(self) -> None:
        """Called when idle: keep the position fresh (e.g. so a slot does not retain WAL)."""
        ...

    async def close(self) -> None: ...


class Outage:
    """Tells an outage once when it starts, at most every ``every`` seconds while it lasts, and
    once when it ends (with how long it lasted), however many retries it takes."""

    def __init__(self, log: Any, every: float, messages: tuple[str, str, str]) -> None:
        self._log = log
        self.every = every
        self._messages = messages  # when it starts, while it lasts, when it ends
        self._since: float | None = None  # monotonic start of the current outage
        self._said = 0.0
        self._ended = -math.inf  # when the last outage ended

    def failed(self, error: BaseException, started: float | None = None, **fields: Any) -> None:
        """An attempt begun at ``started`` (monotonic) failed with ``error``."""
        now = time.monotonic()
        said = deadletter.describe(error)
        if self._since is None:
            if started is not None and started < self._ended:
                return  # begun before the end of the last outage: not a new one
            self._since = self._said = now
            self._log.warning(self._messages[0], error=said, **fields)
        elif now - self._said >= self.every:  # a reminder, not a flood
            self._said = now
            self._log.warning(self._messages[1], error=said, away_for=round(now - self._since, 3))

    def succeeded(self) -> None:
        """An attempt worked: an outage in progress ends here."""
        if self._since is not None:
            self._ended = time.monotonic()
            self._log.info(self._messages[2], away_for=round(self._ended - self._since, 3))
            self._since = None


@dataclasses.dataclass(slots=True)
class RelayStats:
    """Counters of one relay run."""

    relayed: int = 0
    dead_lettered: int = 0
    publish_errors: int = 0
    changes: int = 0
    reconnects: int = 0


class Relay:
    """Publishes a source's committed outbox rows to a broker, confirming after acceptance."""

    def __init__(
        self,
        source: Source,
        bus: Bus,
        router: Router,
        *,
        idle_timeout: float = 1.0,
        retry_initial: float = 0.05,
        retry_max: float = 2.0,
        max_in_flight: int = 4,
        still_down_every: float = STILL_DOWN_EVERY,
    ) -> None:
        self.source = source
        self.bus = bus
        self.router = router
        self.idle_timeout = idle_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._backoff = Backoff(retry_initial, retry_max)
        self.max_in_flight = max_in_flight
        self.stats = RelayStats()
        self._stopping = asyncio.Event()
        self._window: deque[tuple[Change, asyncio.Future[bool]]] = deque()
        self._window_changed = asyncio.Event()
        self._reading = True
        self._lane_tails: dict[str, asyncio.Task[bool]] = {}
        self._relayed = RELAYED.labels(source.name)
        self._errors = PUBLISH_ERRORS.labels(source.name)
        self._lag = LAG_SECONDS.labels(source.name)
        self._log = get_logger("connectors.relay", relay=source.name)
        self._broker = Outage(self._log, still_down_every, BROKER_AWAY)
        self._database = Outage(self._log, still_down_every, DATABASE_AWAY)

    def stop(self) -> None:
        """Ask the relay to finish the change in hand and return from :meth:`run`."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> RelayStats:
        """Relay until :meth:`stop`; the source and the bus are opened and closed here.

        A database that cannot be reached at start is an error; one lost while relaying is
        reported once and reconnected with backoff, resuming from the confirmed position.
        """
        await self.source.open()
        try:
            if not await self._start_bus():
                return self.stats
            while True:
                try:
                    await self._stream()
                    return self.stats
                except DatabaseUnavailableError as exc:
                    if self.stopping or not await self._reconnect(exc):
                        return self.stats
        finally:
            await self.source.close()
            await self.bus.stop()

    async def _stream(self) -> None:
        self._reading = True
        confirmer = asyncio.create_task(self._confirm_in_order())
        try:
            await self._read_and_publish(confirmer)
        finally:
            self._reading = False
            self._window_changed.set()
            try:
                await confirmer
            finally:
                await self._cancel_leftovers()

    async def _reconnect(self, lost: DatabaseUnavailableError) -> bool:
        """Reopen the source after ``lost``, with backoff, until it works or the relay is
        stopped (False); says so once when lost and once when back."""
        self.stats.reconnects += 1
        self._database.failed(lost)
        await self.source.close()
        try:
            await keep_trying(
                lambda _: self.source.open(),
                timeout=None,
                retriable=lambda exc: isinstance(exc, DatabaseUnavailableError | RelayLockedError),
                backoff=self._backoff,
                before_retry=lambda exc, _: self._database.failed(exc),
                stop=self._stopping,
            )
        except Stopped:
            return False
        self._database.succeeded()
        return True

    async def _start_bus(self) -> bool:
        """Connect to the broker, waiting (saying so once, then reminding) while it is away."""
        started = 0.0

        async def start() -> None:
            nonlocal started
            started = time.monotonic()
            await self.bus.start()

        def unavailable(exc: BaseException, _: float) -> None:
            self._count_error()
            self._broker.failed(exc, started, broker=self.bus.url)

        try:
            await keep_trying(
                lambda _: start(),
                timeout=None,
                retriable=lambda exc: isinstance(exc, BrokerUnavailableError),
                backoff=self._backoff,
                before_retry=unavailable,
                stop=self._stopping,
            )
        except Stopped:
            return False
        self._broker.succeeded()
        return True

    def _count_error(self) -> None:
        self.stats.publish_errors += 1
        self._errors.inc()

    async def _read_and_publish(self, confirmer: asyncio.Task[None]) -> None:
        """Read changes and start publishing them, up to ``max_in_flight`` unconfirmed."""
        while not self.stopping and not confirmer.done():
            if len(self._window) >= self.max_in_flight:
                await self._window_moved()
                continue
            change = await self.source.next_change(self.idle_timeout)
            if change is None:
                if not self._window:
                    self._lag.set(0)  # caught up
                    await self.source.heartbeat()
                continue
            self._window.append((change, self._start_publishing(change)))
            self._window_changed.set()

    async def _confirm_in_order(self) -> None:
        """Confirm changes in source order, each once all of its rows were accepted."""
        try:
            await self._confirm_loop()
        finally:
            self._window_changed.set()  # never leave the reader waiting on a dead confirmer

    async def _confirm_loop(self) -> None:
        while self._window or self._reading:
            if not self._window:
                await self._window_moved()
                continue
            change, published = self._window[0]
            if not await published:
                self._stopping.set()  # stopped while the broker was away: confirm nothing more
                return
            await self.source.confirm(change)
            self._window.popleft()
            self._window_changed.set()
            self._observe(change)

    async def _cancel_leftovers(self) -> None:
        pending = [f for _, f in self._window if not f.done()]
        pending += [t for t in self._lane_tails.values() if not t.done()]
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._window.clear()

    async def _window_moved(self) -> None:
        self._window_changed.clear()
        await self._window_changed.wait()

    def _start_publishing(self, change: Change) -> asyncio.Future[bool]:
        """Publish ``change`` row by row per aggregate, after that aggregate's earlier rows.

        Different aggregates go concurrently, also across changes in flight; the same aggregate
        is one chain of tasks, so its order is the source's commit order.
        """
        lanes: dict[str, list[OutboxRow]] = {}
        for row in change.rows:
            lanes.setdefault(str(row.aggregateid), []).append(row)
        tasks = [self._chain(key, rows) for key, rows in lanes.items()]
        if not tasks:
            done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            done.set_result(True)
            return done
        return asyncio.ensure_future(_all_true(tasks))

    def _chain(self, key: str, rows: list[OutboxRow]) -> asyncio.Task[bool]:
        previous = self._lane_tails.get(key)
        task = asyncio.create_task(self._publish_lane(rows, previous))
        self._lane_tails[key] = task

        def forget(done: asyncio.Task[bool]) -> None:
            if self._lane_tails.get(key) is done:
                del self._lane_tails[key]

        task.add_done_callback(forget)
        return task

    async def _publish_lane(
        self, rows: Sequence[OutboxRow], previous: asyncio.Task[bool] | None
    ) -> bool:
        if previous is not None and not await previous:
            return False
        for row in rows:
            if not await self._publish_row(row):
                return False
        return True

    async def _publish_row(self, row: OutboxRow) -> bool:
        """Publish one row (or its dead letter), retrying while the broker is away; False
        when the relay was stopped first."""
        routed = self.router.route_row(row)
        try:
            try:
                await self._publish_retrying(row, routed)
            except (PayloadError, EnvelopeError) as exc:
                refused = isinstance(exc, PayloadError)
                reason = deadletter.SCHEMA_MISMATCH if refused else deadletter.UNDECODABLE
                dead = self.router.dead_letter(row, reason, exc, routed.topic)
                await self._publish_retrying(row, Routed(self.router.dlq_topic, dead, dead=True))
        except Stopped:
            return False
        return True

    async def _publish_retrying(self, row: OutboxRow, routed: Routed) -> None:
        """Publish until the broker accepts; a refusal of the row itself is raised at once."""
        started = 0.0

        async def publish() -> None:
            nonlocal started
            started = time.monotonic()
            await self._publish(routed)

        def failed(exc: BaseException, pause: float) -> None:
            self._count_error()
            self._broker.failed(exc, started, broker=self.bus.url, topic=routed.topic)
            self._log.debug(
                "outbox publish failed; retrying",
                topic=routed.topic,
                event_id=row.id,
                error=deadletter.describe(exc),
                retry_in=round(pause, 3),
            )

        await keep_trying(
            lambda _: publish(),
            timeout=None,
            retriable=lambda exc: (
                isinstance(exc, Exception) and not isinstance(exc, PayloadError | EnvelopeError)
            ),
            backoff=self._backoff,
            before_retry=failed,
            stop=self._stopping,
        )
        self._broker.succeeded()

    async def _publish(self, routed: Routed) -> None:
        if routed.dead:  # dead letters keep the raw row: no codec, published as they are
            await self.bus.publish_event(routed.topic, routed.event)
        else:
            await self.bus.publish(routed.topic, routed.event)
        if routed.dead:
            self.stats.dead_lettered += 1
            dead = deadletter.info(routed.event)
            reason = dead.reason if dead else ""
            DEAD_LETTERED.labels(self.source.name, reason).inc()
            self._log.warning(
                "outbox row dead-lettered",
                topic=routed.topic,
                event_id=routed.event.id,
                reason=reason,
                error=dead.error if dead else None,
            )
        else:
            self.stats.relayed += 1
            self._relayed.inc()

    def _observe(self, change: Change) -> None:
        self.stats.changes += 1
        if change.committed_at is not None:
            lag = max(0.0, time.time() - change.committed_at.astimezone(UTC).timestamp())
            self._lag.set(lag)
            COMMIT_TO_PUBLISH.labels(self.source.name).observe(lag)


async def _all_true(tasks: list[asyncio.Task[bool]]) -> bool:
    return all(await asyncio.gather(*tasks))
