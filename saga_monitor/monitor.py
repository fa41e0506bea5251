"""The :class:`SagaMonitor`: subscribes to the saga topics, applies events, watches deadlines.

It never orchestrates and never writes to the services' topics: it reads as its own group
(``choreo-saga-monitor``), dead-letters nothing, and publishes only alerts, as CloudEvents, on
``alerts_topic`` (``saga.stuck``, ``saga.compensating``, ``saga.compensated``, ``saga.failed``,
``saga.completed``, ``saga.anomaly``; the data carries saga, correlation id, state, what is
expected next and by when).

Events are applied in batches, each in one store transaction together with the alerts it
raises (an outbox); alerts are published after the commit and deleted once the broker accepted
them, and a delivery is acknowledged only after its batch committed. Every ``tick_interval``
seconds (by ``clock``) the monitor advances its watermark (:mod:`saga_monitor.watermark`) and
judges the instances whose deadlines it passed, so an instance gets stuck without any further
event, a deadline that passed while the monitor was down is reported once it has caught up, and
nothing is judged overdue while the monitor is still reading what it missed.

    monitor = SagaMonitor(load_definitions("sagas.yaml"), bus, open_saga_store())
    await monitor.start()      # subscribes, reports overdue deadlines, starts the timer
    ...
    await monitor.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from broker import Bus, DeadLetter, Event, Policy, Retry, Subscriber
from broker.context import current_delivery
from broker.observability import get_logger
from saga_monitor import metrics
from saga_monitor.correlator import Correlator, Received
from saga_monitor.definitions import Definitions
from saga_monitor.errors import SagaError
from saga_monitor.machine import Outcome
from saga_monitor.model import utcnow
from saga_monitor.store import SagaStore
from saga_monitor.watermark import SourceClocks, Watermark

__all__ = ["MONITOR_POLICY", "SagaMonitor", "summarise"]

#: Retry store hiccups patiently; never dead-letter into the services' DLQ topics. Sixteen
#: lanes (by partition key, so one key stays in order) feed the group commit.
MONITOR_POLICY = Policy(
    retry=Retry(max_attempts=8, initial_delay=0.05, max_delay=5.0),
    dead_letter=DeadLetter(enabled=False),
    on_expired="drop",
    on_undecodable="wrap",
    concurrency=16,
)

Clock = Callable[[], datetime]


class SagaMonitor:
    """Correlates the events on a :class:`~broker.Bus` into saga instances in a store."""

    def __init__(
        self,
        definitions: Definitions,
        bus: Bus,
        store: SagaStore,
        *,
        alerts_topic: str | None = "saga.alerts",
        group: str = "choreo-saga-monitor",
        clock: Clock = utcnow,
        tick_interval: float = 1.0,
        retention: float | None = 7 * 86400.0,
        from_beginning: bool = False,
        topics: tuple[str, ...] | None = None,
        max_delay: float = 2.0,
        skew_tolerance: float = 1.0,
    ) -> None:
        self.definitions = definitions
        self.bus = bus
        self.store = store
        self.alerts_topic = alerts_topic
        self.group = group
        self.clock = clock
        self.tick_interval = tick_interval
        self.retention = retention
        self.from_beginning = from_beginning
        self.topics = topics if topics is not None else definitions.all_topics
        if not self.topics:
            raise SagaError(
                "the saga definitions name no topics to watch; add `topics: [...]` at the top "
                "of the file or to a saga"
            )
        self.correlator = Correlator(definitions, skew_tolerance=skew_tolerance)
        #: How long an event may take from its own time to the broker (see watermark.py).
        self.max_delay = max_delay
        self.clocks = SourceClocks(skew_tolerance)
        self.watermark = Watermark([], max_delay=max_delay, floor=store.watermark(group))
        #: This monitor among the group's members (host, process, run), as the store knows it.
        self.member = f"{group}/{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        #: The watermark verdicts are judged against: the lowest of the group's live members'
        #: (each knows the events it holds; a store shared by several monitors needs them all).
        self.verdicts_at: datetime | None = self.watermark.value
        self.applied = 0
        self.alerts_published = 0
        self._subscribers: list[Subscriber] = []
        self._timer: asyncio.Task[None] | None = None
        self._stopping = False
        self._flush_lock = asyncio.Lock()
        self._log = get_logger("choreo.saga", group=group)
        self._last_prune: datetime | None = None
        self._last_counts: datetime | None = None
        self._batcher = _GroupCommit(self)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> SagaMonitor:
        """Publish leftover alerts, subscribe, start the timer (which judges the deadlines as
        soon as the watermark shows the monitor caught up)."""
        await self.bus.start()
        # Known to the group before it takes any event: until this member has a watermark of
        # its own, the group's verdicts wait for it.
        self.store.record_monitor(self.member, None, float("inf"), self.clock())
        await self.flush_alerts()
        subscribing = [
            self.bus.subscribe(
                topic,
                self._handler_for(topic),
                group=self.group,
                policy=MONITOR_POLICY,
                from_beginning=self.from_beginning,
            )
            for topic in self.topics
        ]  # together: a Kafka group then rebalances once, not once per topic
        results = await asyncio.gather(*subscribing, return_exceptions=True)
        self._subscribers.extend(r for r in results if isinstance(r, Subscriber))
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await self.stop()
            raise failure
        self.watermark = Watermark(
            self._subscribers, max_delay=self.max_delay, floor=self.watermark.value
        )
        self._batcher.start()
        self._stopping = False
        self._timer = asyncio.create_task(self._tick_forever(), name="choreo:saga-timer")
        self._log.info("saga monitor started", topics=list(self.topics))
        return self

    async def stop(self) -> None:
        """Stop the timer and the subscriptions; events in flight are redelivered later."""
        if self._timer is not None:
            # The flag ends the loop even if a client library swallows the cancellation
            # (nats-py's flush does, when it lands there mid-publish).
            self._stopping = True
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        subscribers, self._subscribers = self._subscribers, []
        await asyncio.gather(*(s.stop() for s in subscribers), return_exceptions=True)
        await self._batcher.stop()

    async def run(self) -> None:
        """Start, then run until cancelled; stops cleanly."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> SagaMonitor:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- events ----------------------------------------------------------------------------

    def _handler_for(self, topic: str) -> Callable[[Event], Awaitable[None]]:
        async def handle(event: Event) -> None:
            delivery = current_delivery()
            if delivery is None:
                await self._batcher.submit(Received(event, topic))
                return
            position = delivery.position
            redelivered = delivery.redelivered > 0
            await self._batcher.submit(Received(event, topic, position, redelivered))

        return handle

    async def apply(self, event: Event, *, topic: str | None = None) -> Outcome:
        """Apply one event now (what the subscriptions do for each delivery)."""
        (outcome,) = await self.apply_many([Received(event, topic)])
        return outcome

    async def apply_many(self, items: list[Received]) -> list[Outcome]:
        """Apply events in one store transaction, then publish the alerts they raised."""
        now = self.clock()
        corrected = [self._corrected(item, now) for item in items]
        before = self.correlator.uncorrelated
        outcomes = self.correlator.apply_many(
            self.store, corrected, now=now, watermark=self.verdicts_at
        )
        self.applied += len(items)
        if self.correlator.uncorrelated != before:
            metrics.EVENTS.labels("uncorrelated").inc(self.correlator.uncorrelated - before)
        for outcome in outcomes:
            metrics.EVENTS.labels("applied" if outcome.changed else "ignored").inc()
            metrics.record(outcome)
        if any(outcome.alerts for outcome in outcomes):
            await self._flush_quietly()
        return outcomes

    def _corrected(self, item: Received, now: datetime) -> Received:
        """``item`` with the correction its source's clock needs (learning from it)."""
        event = item.event
        if event.time is None:
            return item
        skew = self.clocks.correction(event.source, event.time, now)
        return Received(item.event, item.topic, item.delivery, item.redelivered, skew)

    async def _flush_quietly(self) -> None:
        """Publish alerts; if the broker refuses, they wait in the outbox for the next tick."""
        try:
            await self.flush_alerts()
        except Exception as exc:  # the state is committed: never fail (and redeliver) for this
            self._log.warning("alerts not published yet", error=f"{type(exc).__name__}: {exc}")

    # -- the clock -------------------------------------------------------------------------

    async def check(self, now: datetime | None = None) -> Outcome:
        """Advance the watermark at ``now`` (default: the clock), judge the instances whose
        deadlines it passed, and alert."""
        now = now or self.clock()
        oldest = self._batcher.oldest(now)
        own = await self.watermark.refresh(now, oldest)
        self.store.record_monitor(self.member, own, self.watermark.lag, now)
        watermark = self._group_watermark(now)
        lag = self._lag(watermark, now)
        self.store.record_monitor(self.group, watermark, lag, now)
        metrics.LAG.set(lag if watermark is not None else 0.0)
        self.verdicts_at = watermark
        if watermark is None:
            return Outcome()  # nothing known yet: every verdict waits
        outcome = self.correlator.tick(self.store, watermark)
        metrics.record(outcome)
        if outcome.alerts:
            await self.flush_alerts()
        if self._last_counts is None or now - self._last_counts >= timedelta(seconds=5):
            self._last_counts = now  # a GROUP BY over every instance: not on every tick
            metrics.set_counts(self.correlator.machines, self.store.counts())
        self._maybe_prune(now)
        return outcome

    def _group_watermark(self, now: datetime) -> datetime | None:
        """The lowest watermark of the group's members that recorded one lately (this one
        included); None while one of them knows nothing yet."""
        quiet = timedelta(seconds=max(10.0, 10 * self.tick_interval))
        members = [
            status
            for status in self.store.monitors()
            if status.name.startswith(f"{self.group}/") and now - status.updated <= quiet
        ]
        marks = [status.watermark for status in members]
        if not marks or any(mark is None for mark in marks):
            return None
        return min(mark for mark in marks if mark is not None)

    def _lag(self, watermark: datetime | None, now: datetime) -> float:
        """How far ``watermark`` trails ``now`` beyond the allowed delivery delay."""
        if watermark is None:
            return float("inf")
        live = now - timedelta(seconds=self.max_delay)
        return max(0.0, (live - watermark).total_seconds())

    def _maybe_prune(self, now: datetime) -> None:
        if self.retention is None:
            return
        if self._last_prune is not None and now - self._last_prune < timedelta(minutes=1):
            return
        self._last_prune = now
        pruned = self.store.prune(now - timedelta(seconds=self.retention))
        if pruned:
            self._log.info("pruned finished saga instances", count=pruned)

    async def _tick_forever(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.tick_interval)
            try:
                await self.check()
            except Exception as exc:  # keep ticking; the store may come back
                self._log.error("deadline check failed", error=f"{type(exc).__name__}: {exc}")

    # -- alerts ----------------------------------------------------------------------------

    async def flush_alerts(self) -> int:
        """Publish the alerts waiting in the store's outbox; returns how many were sent."""
        sent = 0
        async with self._flush_lock:
            while pending := self.store.pending_alerts():
                for seq, alert in pending:
                    if self.alerts_topic:
                        event = Event(
                            type=alert.type,
                            source=f"/choreo/saga-monitor/{self.group}",
                            id=alert.event_id,
                            data=alert.data,
                            subject=alert.saga,
                        )
                        await self.bus.publish(
                            self.alerts_topic,
                            event,
                            correlation_id=alert.correlation_id,
                            key=alert.correlation_id,
                        )
                        metrics.ALERTS.labels(alert.type).inc()
                    self.store.delete_alerts([seq])
                    sent += 1
        self.alerts_published += sent
        return sent


class _GroupCommit:
    """Collects the events handlers submit and applies them together, one commit per batch.

    Each handler waits for its batch's commit, so its delivery is acked only after its event
    is durably applied (a crash before the commit means redelivery, as without batching).
    """

    def __init__(self, monitor: SagaMonitor, max_batch: int = 256) -> None:
        self._monitor = monitor
        self._max = max_batch
        self._queue: list[tuple[Received, asyncio.Future[Outcome], datetime]] = []
        self._applying: list[datetime] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="choreo:saga-commit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, future, _ in self._queue:
            future.cancel()
        self._queue.clear()

    def oldest(self, now: datetime) -> datetime:
        """When the oldest event not applied yet was received (``now`` when there is none)."""
        times = [received for _, _, received in self._queue[:1]] + self._applying[:1]
        return min(times, default=now)

    async def submit(self, item: Received) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future, self._monitor.clock()))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(0)  # let the other lanes add theirs
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            if not self._queue:
                self._wake.clear()
            batch = [entry for entry in batch if not entry[1].done()]
            if not batch:
                continue
            self._applying = [batch[0][2]]
            try:
                outcomes = await self._monitor.apply_many([item for item, _, _ in batch])
            except Exception as exc:  # every handler of the batch fails and is retried
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self._applying = []
            for (_, future, _), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)


def summarise(store: SagaStore, saga: str | None = None) -> dict[str, int]:
    """Instances per state (all sagas, or one), e.g. ``{"completed": 3, "stuck": 1}``."""
    totals: dict[str, int] = {}
    for (name, state), count in sorted(store.counts().items()):
        if saga is None or name == saga:
            totals[state] = totals.get(state, 0) + count
    return totals
