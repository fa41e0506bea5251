"""The :class:`SagaMonitor`: subscribes to the saga topics, applies events, watches deadlines.

It never orchestrates and never writes to the services' topics: it reads as its own group
(``choreo-saga-monitor``), dead-letters nothing, and publishes only alerts, as CloudEvents, on
``alerts_topic`` (``saga.stuck``, ``saga.compensating``, ``saga.compensated``, ``saga.failed``,
``saga.completed``, ``saga.anomaly``; the data carries saga, correlation id, state, what is
expected next and by when).

The monitor reads its topics through one batch subscription (:meth:`broker.Bus.subscribe_batch`,
up to ``batch_size`` events a call): each batch is applied in memory and written in ONE store
transaction together with the alerts it raises (an outbox); the broker messages are acknowledged
only after that commit (a crash before it means redelivery, and the redelivered messages are
recognised by their broker positions). Alerts are published after the commit and deleted once
the broker accepted them. Every ``tick_interval``
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
import gc
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TypeVar

from broker import Bus, DeadLetter, Event, Policy, Retry, Subscriber
from broker.clock import SYSTEM_CLOCK, Clock
from broker.context import current_deliveries
from broker.observability import get_logger
from saga_monitor import metrics
from saga_monitor.collector import FREEZER
from saga_monitor.correlator import Correlator, Received
from saga_monitor.definitions import Definitions
from saga_monitor.errors import SagaError
from saga_monitor.machine import Outcome
from saga_monitor.model import Alert
from saga_monitor.store import SagaStore, ThreadedStore
from saga_monitor.watermark import SourceClocks, Watermark

__all__ = ["BATCH_SIZE", "MONITOR_POLICY", "STOP_TIMEOUT", "SagaMonitor", "summarise"]

#: Retry store hiccups patiently (a failed batch is retried whole); never dead-letter into the
#: services' DLQ topics. One batch at a time: the batch is the unit of commit.
MONITOR_POLICY = Policy(
    retry=Retry(max_attempts=8, initial_delay=0.05, max_delay=5.0),
    dead_letter=DeadLetter(enabled=False),
    on_expired="drop",
    on_undecodable="wrap",
    concurrency=1,
)
#: The most events per batch (one store transaction each), and how long a batch waits to fill
#: up. A batch holds what the broker has ready, so the size adapts to the backlog: a few events
#: each when the monitor keeps up, thousands while it catches up, when each instance is then
#: judged and written once for several of its events (4,000 rather than 500 wrote a SQLite
#: catch-up's instances 2.4 times each instead of 3, and applied it 1.3x as fast).
BATCH_SIZE = 4000
BATCH_WAIT = 0.01
#: The cyclic collector's young-generation threshold while a monitor runs (Python's default is
#: 700 allocations): see :func:`_fewer_collections`.
GC_YOUNG_THRESHOLD = 50_000
#: How long :meth:`SagaMonitor.stop` lets the batch being applied commit (and be acked) before
#: it closes the subscriptions anyway; see :meth:`SagaMonitor.stop`.
STOP_TIMEOUT = 10.0
#: How long a stop that timed out keeps cancelling the store's statement, and how often.
CANCEL_WAIT = 1.0
CANCEL_EVERY = 0.05

#: What the monitor's ``clock`` may be: a :class:`broker.clock.Clock` (its deadlines and its
#: timer then follow it, e.g. a :class:`broker.testing.VirtualClock`), or a function returning
#: the current time (the timer then sleeps on the system clock).
MonitorClock = Clock | Callable[[], datetime]
_T = TypeVar("_T")


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
        clock: MonitorClock | None = None,
        tick_interval: float = 1.0,
        retention: float | None = 7 * 86400.0,
        from_beginning: bool = False,
        topics: tuple[str, ...] | None = None,
        max_delay: float = 2.0,
        skew_tolerance: float = 1.0,
        batch_size: int = BATCH_SIZE,
        batch_wait: float | None = None,
        retain_acknowledged: float | None = None,
        retain_stuck: float | None = None,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.definitions = definitions
        self.bus = bus
        self.store = store
        self.alerts_topic = alerts_topic
        self.group = group
        timer = clock if isinstance(clock, Clock) else bus.clock
        #: The monitor's "now": event arrival, the watermark, deadlines, pruning.
        self.clock: Callable[[], datetime] = (
            clock.now if isinstance(clock, Clock) else clock or bus.clock.now
        )
        self._sleep = timer.sleep
        self.tick_interval = tick_interval
        self.retention = retention
        #: How long acknowledged instances (after their last ack) and stuck ones (after they
        #: got stuck) are kept; None keeps them until they finish.
        self.retain_acknowledged = retain_acknowledged
        self.retain_stuck = retain_stuck
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
        #: Since when the broker does not answer (None: it does), as the watermark found.
        self.broker_lost: datetime | None = None
        self._subscribers: list[Subscriber] = []
        self._timer: asyncio.Task[None] | None = None
        #: Set by :meth:`stop`: the timer ends even when a broker call swallowed its cancellation.
        self._stopping = False
        self._flush_lock = asyncio.Lock()
        self._log = get_logger("choreo.saga", group=group)
        self._last_prune: datetime | None = None
        self._last_counts: datetime | None = None
        #: When :meth:`start` ran: before the group's first watermark, the lag gauge shows how
        #: long verdicts have waited since then.
        self._started: datetime | None = None
        #: The most events per batch (one store transaction each), and how long (real
        #: seconds) a batch waits to fill up once it has one: BATCH_WAIT on the system clock,
        #: none on another (a test's virtual clock: a batch is then what is there when taken).
        self.batch_size = batch_size
        if batch_wait is None:
            batch_wait = BATCH_WAIT if timer is SYSTEM_CLOCK else 0.0
        self.batch_wait = batch_wait
        #: When the batch being applied was received (None between batches).
        self._applying: datetime | None = None
        #: How many events the store is applying right now (0 between batches).
        self._in_store = 0
        #: How long :meth:`stop` waits for the store to finish the batch it is applying.
        self.stop_timeout = stop_timeout
        #: The thread batches are applied in, for a store whose transactions may run off the
        #: event loop's thread (see :attr:`SqlSagaStore.threadsafe
        #: <saga_monitor.store_sql.SqlSagaStore.threadsafe>`); None: applied in place.
        #: Made by :meth:`start`, ended by :meth:`stop`.
        self._worker: ThreadPoolExecutor | None = None
        #: The apply thread's id (what a stop that timed out cancels the statement of).
        self._applier: int | None = None
        #: Whether :meth:`start` raised the collector's threshold (:meth:`stop` restores it).
        self._collections_lowered = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> SagaMonitor:
        """Publish leftover alerts, subscribe, start the timer (which judges the deadlines as
        soon as the watermark shows the monitor caught up)."""
        await self.bus.start()
        # Known to the group before it takes any event: until this member has a watermark of
        # its own, the group's verdicts wait for it.
        self._started = self.clock()
        self.store.record_monitor(self.member, None, float("inf"), self._started)
        if self._worker is None and isinstance(self.store, ThreadedStore) and self.store.threadsafe:
            self._worker = ThreadPoolExecutor(
                1, thread_name_prefix=f"choreo-saga-apply {self.member}"
            )
            self._applier = await asyncio.get_running_loop().run_in_executor(
                self._worker, threading.get_ident
            )
        await self.flush_alerts()
        if not self._collections_lowered:  # restored by stop(), which a failure below calls
            _fewer_collections(True)
            FREEZER.hold()
            self._collections_lowered = True
        try:  # one subscription over every topic: a Kafka group rebalances once
            subscriber = await self.bus.subscribe_batch(
                self.topics,
                self._apply_batch,
                group=self.group,
                policy=MONITOR_POLICY,
                from_beginning=self.from_beginning,
                max_batch=self.batch_size,
                max_wait=self.batch_wait,
            )
        except BaseException:
            await self.stop()
            raise
        self._subscribers.append(subscriber)
        self.watermark = Watermark(
            self._subscribers, max_delay=self.max_delay, floor=self.watermark.value
        )
        self._stopping = False
        self._timer = asyncio.create_task(self._tick_forever(), name="choreo:saga-timer")
        self._log.info("saga monitor started", topics=list(self.topics))
        return self

    async def stop(self) -> None:
        """Stop the timer and the subscriptions; events in flight are redelivered later.

        A batch being applied gets ``stop_timeout`` seconds to commit (it is then acked). A
        store that does not answer by then (locked by another process, a slow disk) does not
        hold the stop: the subscriptions close without acking the batch, the statement the
        apply thread waits in is cancelled (see :meth:`_leave`), and an error line says how
        many events were left unapplied. Those events are read again on the next start (acks
        follow the commit), where a commit that still happened is recognised by the events'
        broker positions.
        """
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_timeout
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        subscribers, self._subscribers = self._subscribers, []
        await asyncio.gather(
            *(s.stop(grace=self.stop_timeout) for s in subscribers), return_exceptions=True
        )
        worker, self._worker = self._worker, None
        clean = True
        if worker is not None:  # the handlers have returned or were cancelled
            clean = await self._leave(worker, max(0.5, deadline - loop.time()))
        if clean and self._started is not None:
            self._started = None
            self._record_stopped()
        if self._collections_lowered:
            self._collections_lowered = False
            _fewer_collections(False)
            FREEZER.release()

    def _record_stopped(self) -> None:
        """Tell the views that this member (and, until another member records, its group)
        stopped: its silence from now on is not a lag."""
        at = self.clock()
        try:
            for name in (self.member, self.group):
                self.store.record_stopped(name, at)
        except SagaError as exc:  # the stop goes on: the views then say "last seen"
            self._log.warning("could not record the monitor's stop", error=str(exc))

    async def _leave(self, worker: ThreadPoolExecutor, timeout: float) -> bool:
        """End the apply thread once it is idle, its store connection closed; True when it
        did. If the store keeps it busy past ``timeout`` (what is left of ``stop_timeout``),
        cancel the statement it waits in (the transaction is undone; nothing of it was acked),
        say so and go (False)."""
        loop = asyncio.get_running_loop()
        store = self.store if isinstance(self.store, ThreadedStore) else None
        ended = loop.run_in_executor(worker, _release, store)  # the thread's last work
        done, _ = await asyncio.wait({ended}, timeout=timeout)
        if not done:
            unapplied = self._in_store
            if store is not None and self._applier is not None:
                await _cancel_until(ended, store, self._applier)
            outcome = (
                "its transaction was cancelled"
                if ended.done()
                else f"the store did not take a cancel within {CANCEL_WAIT:g}s (a SQLite "
                "busy wait ends within 30s)"
            )
            self._log.error(
                f"saga monitor stopped while its store was still applying {unapplied} "
                f"events (not answering after stop_timeout={self.stop_timeout:g}s: locked or "
                f"slow?); {outcome}; they are not acknowledged and will be read again on the "
                "next start",
                unapplied=unapplied,
                cancelled=ended.done(),
                store=self.store.url,
            )
        worker.shutdown(wait=ended.done())  # an idle thread ends at once
        return bool(done)

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

    async def _apply_batch(self, events: list[Event]) -> None:
        """The batch handler: apply ``events`` in one transaction; the subscription acks them
        once this returns (after the commit), and retries the batch when it raises."""
        deliveries = current_deliveries()
        items = [
            Received(event, delivery.topic, delivery.position, delivery.redelivered > 0)
            for event, delivery in zip(events, deliveries, strict=True)
        ]
        self._applying = self.clock()
        try:
            await self.apply_many(items)
        finally:
            self._applying = None
        FREEZER.settled(len(items))  # committed: what it left alive lives on

    async def apply(self, event: Event, *, topic: str | None = None) -> Outcome:
        """Apply one event now (what the subscriptions do for each delivery)."""
        (outcome,) = await self.apply_many([Received(event, topic)])
        return outcome

    async def apply_many(self, items: list[Received]) -> list[Outcome]:
        """Apply events in one store transaction, then publish the alerts they raised."""
        now = self.clock()
        corrected = self._corrected(items, now)
        before = self.correlator.uncorrelated
        started = time.perf_counter()
        if self._worker is not None:  # the broker is read meanwhile (the SQL releases the GIL)
            loop = asyncio.get_running_loop()
            outcomes = await loop.run_in_executor(
                self._worker, self._apply_now, corrected, now, self.verdicts_at
            )
        else:
            outcomes = self._apply_now(corrected, now, self.verdicts_at)
        metrics.observe_batch(len(items), time.perf_counter() - started)
        self.applied += len(items)
        if metrics.count_events(outcomes, self.correlator.uncorrelated - before):
            await self._flush_quietly()  # some alerts were raised
        return outcomes

    def _apply_now(
        self, items: list[Received], now: datetime, watermark: datetime | None
    ) -> list[Outcome]:
        self._in_store = len(items)
        try:
            with _collector_paused():
                return self.correlator.apply_many(self.store, items, now=now, watermark=watermark)
        finally:
            self._in_store = 0

    def _corrected(self, items: list[Received], now: datetime) -> list[Received]:
        """``items``, each with the correction its source's clock needs (learning from it)."""
        correction = self.clocks.correction
        corrected = items[:]
        for n, item in enumerate(items):
            event = item.event
            moment = event.time
            if moment is None:
                continue
            skew = correction(event.source, moment, now)
            if skew != item.skew:
                corrected[n] = Received(event, item.topic, item.delivery, item.redelivered, skew)
        return corrected

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
        oldest = min(self._applying or now, now)
        own = await self.watermark.refresh(now, oldest)
        self._note_broker(now)
        # The store's work on the apply thread, after the batch it applies: the event loop
        # goes on reading meanwhile instead of waiting for the store's write lock.
        watermark, lag, outcome = await self._on_store(self._judge, now, own)
        metrics.LAG.set(lag if watermark is not None else self._waiting(now))
        self.verdicts_at = watermark
        if outcome.alerts:
            await self.flush_alerts()
        return outcome

    def _note_broker(self, now: datetime) -> None:
        """Say once that the broker stopped answering (the monitor retries; verdicts wait and
        the lag grows) and once that it answers again: a warning each, the second one too, so
        that whoever reads the first reads the second."""
        unanswered = self.watermark.unanswered
        if unanswered is not None and self.broker_lost is None:
            self.broker_lost = now
            self._log.warning(
                f"lost the broker: {unanswered}; retrying (verdicts wait meanwhile, "
                "choreo_saga_monitor_lag_seconds grows)",
                broker=self.bus.url,
            )
        elif unanswered is None and self.broker_lost is not None:
            down = (now - self.broker_lost).total_seconds()
            self.broker_lost = None
            self._log.warning(
                f"the broker at {self.bus.url} answers again after {down:.0f}s; catching up",
                broker=self.bus.url,
                seconds=round(down, 1),
            )

    async def _on_store(self, work: Callable[..., _T], *args: object) -> _T:
        """``work(*args)`` on the apply thread when there is one (in turn with the batches),
        else here."""
        if self._worker is None:
            return work(*args)
        return await asyncio.get_running_loop().run_in_executor(self._worker, work, *args)

    def _judge(self, now: datetime, own: datetime | None) -> tuple[datetime | None, float, Outcome]:
        """Record this member's watermark, then judge at the group's: the group's watermark
        (None while a member knows nothing yet), its lag and what the deadlines it passed
        produced."""
        self.store.record_monitor(self.member, own, self.watermark.lag, now)
        watermark = self._group_watermark(now)
        lag = self._lag(watermark, now)
        self.store.record_monitor(self.group, watermark, lag, now)
        if watermark is None:
            return None, lag, Outcome()  # nothing known yet: every verdict waits
        outcome = self.correlator.tick(self.store, watermark)
        # Counted with the commit, before the instance gauge below: a scrape never shows an
        # instance stuck whose stuck alert is not counted yet.
        metrics.record(outcome)
        if self._last_counts is None or now - self._last_counts >= timedelta(seconds=5):
            self._last_counts = now  # a GROUP BY over every instance: not on every tick
            metrics.set_counts(self.correlator.machines, self.store.counts())
            metrics.set_oldest_stuck(self.correlator.machines, self.store.oldest_stuck(), now)
        self._maybe_prune(now)
        return watermark, lag, outcome

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

    def _waiting(self, now: datetime) -> float:
        """The lag to show before the group has a watermark (a member has not joined or read
        yet): how long verdicts have waited, since this monitor started."""
        started = self._started or now
        return max(0.0, (now - started).total_seconds())

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
        pruned = self.store.prune(
            now - timedelta(seconds=self.retention),
            acknowledged_before=_before(now, self.retain_acknowledged),
            stuck_before=_before(now, self.retain_stuck),
        )
        if pruned:
            self._log.info("pruned finished saga instances", count=pruned)

    async def _tick_forever(self) -> None:
        applied = self.applied
        while not self._stopping:  # a cancellation lost inside check() ends it too
            await self._sleep(self.tick_interval)
            if applied == (applied := self.applied):
                FREEZER.idle()  # nothing came since the last tick
            try:
                await self.check()
            except Exception as exc:  # keep ticking; the store may come back
                self._log.error("deadline check failed", error=f"{type(exc).__name__}: {exc}")

    # -- alerts ----------------------------------------------------------------------------

    async def flush_alerts(self) -> int:
        """Publish the alerts waiting in the store's outbox, in order, up to 500 per
        ``publish_many`` call, and delete those the broker accepted in one transaction;
        returns how many were sent. A refused alert raises; it and the ones after it wait
        for the next flush. The outbox is read and written on the apply thread (in turn with
        the batches), not on the event loop's."""
        sent = 0
        store = self.store
        try:
            async with self._flush_lock:
                while pending := await self._on_store(store.pending_alerts):
                    accepted, failure = await self._publish_alerts([a for _, a in pending])
                    published = [seq for seq, _ in pending[:accepted]]
                    await self._on_store(store.delete_alerts, published)
                    sent += accepted
                    if failure is not None:
                        raise failure
        finally:
            self.alerts_published += sent
        return sent

    async def _publish_alerts(self, alerts: list[Alert]) -> tuple[int, Exception | None]:
        """Publish ``alerts`` to the alerts topic (if any): how many leading ones the broker
        accepted, and the error that stopped the others (None when all went)."""
        if not self.alerts_topic:
            return len(alerts), None
        source = f"/choreo/saga-monitor/{self.group}"
        events = [
            Event(
                type=alert.type,
                source=source,
                id=alert.event_id,
                data=alert.data,
                subject=alert.saga,
                time=self.clock(),
                extensions={
                    "correlationid": alert.correlation_id,
                    "partitionkey": alert.correlation_id,
                },
            )
            for alert in alerts
        ]
        result = await self.bus.publish_many(self.alerts_topic, events)
        for index, outcome in enumerate(result):
            if outcome.error is not None:  # the rest keep their order behind it
                return index, outcome.error
            metrics.ALERTS.labels(alerts[index].type).inc()
        return len(alerts), None


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is applied (synchronously, nothing else of
    the process runs meanwhile but other threads' short calls): nearly everything the batch
    allocates (timeline entries, observations, instances) outlives it, so each collection the
    allocations would trigger in the middle of it scans the growing young objects for nothing
    and, as they age, the monitor's whole heap of kept instances (the memory store's rate was
    2.5x lower with them). The collector runs again after the batch, on the next allocation."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


#: How many started monitors of this process asked for fewer collections, and the threshold
#: the first one found (restored when the last one stops).
_lowered: list[int] = [0, 0]


def _fewer_collections(on: bool) -> None:
    """Raise (``on``) or restore the cyclic collector's young-generation threshold, for the
    process's started monitors together. Each young collection scans the objects allocated
    since the last one and every tenth one the older generation too, where the decoded events
    and the instances a catch-up keeps end up: at Python's default of one young collection
    per 700 allocations, consuming a Kafka backlog and the batches' survivors made the
    collector about a fifth of the monitor's CPU time; at :data:`GC_YOUNG_THRESHOLD` (the
    cyclic garbage it lets wait is a few MB at most) it runs about 70 times less often.
    A threshold someone set higher already is kept."""
    young, *older = gc.get_threshold()
    if on:
        _lowered[0] += 1
        if _lowered[0] == 1:
            _lowered[1] = young
            if 0 < young < GC_YOUNG_THRESHOLD:
                gc.set_threshold(GC_YOUNG_THRESHOLD, *older)
        return
    _lowered[0] = max(0, _lowered[0] - 1)
    if _lowered[0] == 0 and young == GC_YOUNG_THRESHOLD != _lowered[1]:
        gc.set_threshold(_lowered[1], *older)


def _release(store: ThreadedStore | None) -> None:
    """What the apply thread is given last: its connection closed, the thread is idle."""
    if store is not None:
        store.release()


async def _cancel_until(ended: asyncio.Future[None], store: ThreadedStore, thread: int) -> None:
    """Cancel the statement ``thread`` runs until ``ended`` (its last work) is done, again
    every :data:`CANCEL_EVERY` seconds (a cancel that lands between two statements is lost),
    for :data:`CANCEL_WAIT` seconds at most."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CANCEL_WAIT
    while not ended.done() and loop.time() < deadline:
        await asyncio.to_thread(store.interrupt, thread)
        await asyncio.wait({ended}, timeout=CANCEL_EVERY)


def _before(now: datetime, seconds: float | None) -> datetime | None:
    return now - timedelta(seconds=seconds) if seconds is not None else None


def summarise(store: SagaStore, saga: str | None = None) -> dict[str, int]:
    """Instances per state (all sagas, or one), e.g. ``{"completed": 3, "stuck": 1}``."""
    totals: dict[str, int] = {}
    for (name, state), count in sorted(store.counts().items()):
        if saga is None or name == saga:
            totals[state] = totals.get(state, 0) + count
    return totals
