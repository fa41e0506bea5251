"""The :class:`SagaMonitor`: subscribes to the saga topics, applies events, watches deadlines.

It never orchestrates and never writes to the services' topics: it reads as its own group
(``choreo-saga-monitor``), dead-letters nothing, and publishes only alerts, as CloudEvents, on
``alerts_topic`` (``saga.stuck``, ``saga.compensating``, ``saga.compensated``, ``saga.failed``,
``saga.completed``, ``saga.anomaly``; the data carries saga, correlation id, state, what is
expected next and by when).

Each event is applied in one store transaction together with the alerts it raises (an outbox);
alerts are published after the commit and deleted once the broker accepted them. A timer checks
the persisted deadlines every ``tick_interval`` seconds by ``clock``, so an instance gets stuck
without any further event, and a deadline that passed while the monitor was down is reported
as soon as it starts again.

    monitor = SagaMonitor(load_definitions("sagas.yaml"), bus, open_store())
    await monitor.start()      # subscribes, reports overdue deadlines, starts the timer
    ...
    await monitor.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from broker import Bus, DeadLetter, Event, Policy, Retry, Subscriber
from broker.observability import get_logger
from saga_monitor import metrics
from saga_monitor.correlator import Correlator
from saga_monitor.definitions import Definitions
from saga_monitor.errors import SagaError
from saga_monitor.machine import Outcome
from saga_monitor.model import utcnow
from saga_monitor.store import Store

__all__ = ["MONITOR_POLICY", "SagaMonitor", "summarise"]

#: Retry store hiccups patiently; never dead-letter or drop into the services' DLQ topics.
MONITOR_POLICY = Policy(
    retry=Retry(max_attempts=8, initial_delay=0.05, max_delay=5.0),
    dead_letter=DeadLetter(enabled=False),
    on_expired="drop",
    on_undecodable="wrap",
)

Clock = Callable[[], datetime]


class SagaMonitor:
    """Correlates the events on a :class:`~broker.Bus` into saga instances in a store."""

    def __init__(
        self,
        definitions: Definitions,
        bus: Bus,
        store: Store,
        *,
        alerts_topic: str | None = "saga.alerts",
        group: str = "choreo-saga-monitor",
        clock: Clock = utcnow,
        tick_interval: float = 1.0,
        retention: float | None = 7 * 86400.0,
        from_beginning: bool = False,
        topics: tuple[str, ...] | None = None,
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
        #: Names this run, so events an earlier (killed) run applied are known as redeliveries.
        self.run_id = uuid.uuid4().hex[:12]
        self.correlator = Correlator(definitions, run=self.run_id)
        self.applied = 0
        self.alerts_published = 0
        self._subscribers: list[Subscriber] = []
        self._timer: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._log = get_logger("choreo.saga", group=group)
        self._last_prune: datetime | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> SagaMonitor:
        """Publish leftover alerts, report overdue deadlines, subscribe and start the timer."""
        await self.bus.start()
        await self.flush_alerts()
        await self.check()
        for topic in self.topics:
            subscriber = await self.bus.subscribe(
                topic,
                self._handler_for(topic),
                group=self.group,
                policy=MONITOR_POLICY,
                from_beginning=self.from_beginning,
            )
            self._subscribers.append(subscriber)
        self._timer = asyncio.create_task(self._tick_forever(), name="choreo:saga-timer")
        self._log.info("saga monitor started", topics=list(self.topics))
        return self

    async def stop(self) -> None:
        """Stop the timer and the subscriptions; events in flight are redelivered later."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        subscribers, self._subscribers = self._subscribers, []
        await asyncio.gather(*(s.stop() for s in subscribers), return_exceptions=True)

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
            await self.apply(event, topic=topic)

        return handle

    async def apply(self, event: Event, *, topic: str | None = None) -> Outcome:
        """Apply one event now (what the subscriptions do for each delivery)."""
        before = self.correlator.uncorrelated
        outcome = self.correlator.apply(self.store, event, topic=topic, now=self.clock())
        self.applied += 1
        if self.correlator.uncorrelated != before:
            metrics.EVENTS.labels("uncorrelated").inc()
        metrics.EVENTS.labels("applied" if outcome.changed else "ignored").inc()
        metrics.record(outcome)
        if outcome.alerts:
            await self.flush_alerts()
        return outcome

    # -- the clock -------------------------------------------------------------------------

    async def check(self, now: datetime | None = None) -> Outcome:
        """Check every persisted deadline against ``now`` (default: the clock) and alert."""
        now = now or self.clock()
        outcome = self.correlator.tick(self.store, now)
        metrics.record(outcome)
        if outcome.alerts:
            await self.flush_alerts()
        metrics.set_counts(self.correlator.machines, self.store.counts())
        self._maybe_prune(now)
        return outcome

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
        while True:
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
                        await self.bus.publish(
                            self.alerts_topic,
                            type=alert.type,
                            data=alert.data,
                            correlation_id=alert.correlation_id,
                            subject=alert.saga,
                            key=alert.correlation_id,
                        )
                        metrics.ALERTS.labels(alert.type).inc()
                    self.store.delete_alerts([seq])
                    sent += 1
        self.alerts_published += sent
        return sent


def summarise(store: Store, saga: str | None = None) -> dict[str, int]:
    """Instances per state (all sagas, or one), e.g. ``{"completed": 3, "stuck": 1}``."""
    totals: dict[str, int] = {}
    for (name, state), count in sorted(store.counts().items()):
        if saga is None or name == saga:
            totals[state] = totals.get(state, 0) + count
    return totals
