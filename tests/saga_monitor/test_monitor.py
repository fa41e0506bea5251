"""The monitor end to end on a real Bus: states, alerts, deadlines by clock, metrics."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from broker import Bus, Event
from saga_monitor import open_saga_store
from saga_monitor.monitor import SagaMonitor, summarise
from tests.saga_monitor.helpers import ManualClock, example, until

TOPIC_OF = {"order.placed": "orders", "order.shipped": "shipping", "order.cancelled": "orders"}


KAFKA = pytest.param("kafka", marks=pytest.mark.kafka)


@pytest.fixture(params=["memory", "sqlite"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh broker: in-memory, the embedded SQLite one, or Kafka (fresh group names)."""
    if request.param == "memory":
        return f"memory://saga-{uuid.uuid4().hex}"
    if request.param == "kafka":
        url: str = request.getfixturevalue("kafka_url")
        return url
    return f"sqlite:///{tmp_path}/broker.db?poll_interval=0.01"


@pytest.fixture
async def bus(broker_url: str) -> AsyncIterator[Bus]:
    """A started bus on the broker."""
    async with Bus(broker_url, source="shop") as started:
        yield started


class Harness:
    """A monitor plus an alert collector on one bus, with a manual clock."""

    def __init__(self, bus: Bus, store_url: str) -> None:
        self.bus = bus
        self.store_url = store_url
        self.clock = ManualClock()
        self.alerts: list[Event] = []
        self.monitor: SagaMonitor | None = None
        #: This test's own alerts topic: a broker shared by the session keeps other tests'.
        self.alerts_topic = f"saga.alerts.{uuid.uuid4().hex[:8]}"

    async def start(self) -> SagaMonitor:
        self.monitor = SagaMonitor(
            example(),
            self.bus,
            open_saga_store(self.store_url),
            clock=self.clock,
            tick_interval=0.02,
            max_delay=0.5,
            alerts_topic=self.alerts_topic,
        )
        return await self.monitor.start()

    async def collect(self) -> None:
        async def keep(event: Event) -> None:
            self.alerts.append(event)

        await self.bus.subscribe(self.alerts_topic, keep, group="alert-reader")

    async def send(self, type_: str, corr: str, *, seconds: float = 0, id_: str = "") -> None:
        assert self.monitor is not None
        expected = self.monitor.applied + 1
        event = Event(
            type=type_,
            source="shop",
            id=id_ or uuid.uuid4().hex,
            time=self.clock.now + timedelta(seconds=seconds),
        )
        topic = TOPIC_OF.get(type_, type_.partition(".")[0].replace("payment", "payments"))
        await self.bus.publish(topic, event, correlation_id=corr, key=corr)
        await until(lambda: self.monitor is not None and self.monitor.applied >= expected)

    def states(self) -> dict[str, str]:
        assert self.monitor is not None
        return {i.correlation_id: i.state for i in self.monitor.store.instances()}

    def alert_kinds(self) -> list[tuple[str, str]]:
        out = []
        for alert in self.alerts:
            anomaly = alert.data.get("anomaly") if isinstance(alert.data, dict) else None
            detail = anomaly["kind"] if anomaly else alert.data["state"]
            out.append((alert.type, f"{alert.correlationid}:{detail}"))
        return sorted(out)


@pytest.fixture
async def harness(bus: Bus, tmp_path: Path) -> AsyncIterator[Harness]:
    """A started monitor with a SQLite store, and an alert reader."""
    h = Harness(bus, f"sqlite:///{tmp_path}/sagas.db")
    await h.collect()
    await h.start()
    yield h
    assert h.monitor is not None
    await h.monitor.stop()
    h.monitor.store.close()


@pytest.mark.parametrize("broker_url", ["memory", "sqlite", KAFKA], indirect=True)
async def test_mixed_stream_gives_exact_states_and_alerts(harness: Harness) -> None:
    """Completed, compensated, failed, stuck, duplicate and orphan sagas, exactly as scripted."""
    h = harness
    for type_ in ("order.placed", "payment.authorized", "inventory.reserved", "order.shipped"):
        await h.send(type_, "ok")
    for type_ in ("order.placed", "payment.authorized", "inventory.unavailable"):
        await h.send(type_, "comp")
    await h.send("payment.refunded", "comp")
    await h.send("order.placed", "fail")
    await h.send("payment.failed", "fail")
    await h.send("order.placed", "slow")
    await h.send("order.placed", "dup", id_="dup-1")
    await h.send("order.placed", "dup", id_="dup-1")
    await h.send("payment.authorized", "orphan")
    h.clock.advance(31)
    await until(lambda: h.states().get("slow") == "stuck", what="slow to be stuck")
    assert {
        "ok": "completed",
        "comp": "compensated",
        "fail": "failed",
        "slow": "stuck",
        "dup": "stuck",
    } == h.states()
    expected_alerts = [
        ("saga.anomaly", "dup:duplicate"),
        ("saga.anomaly", "orphan:orphan"),
        ("saga.compensated", "comp:compensated"),
        ("saga.compensating", "comp:compensating"),
        ("saga.completed", "ok:completed"),
        ("saga.failed", "fail:failed"),
        ("saga.stuck", "dup:stuck"),
        ("saga.stuck", "slow:stuck"),
    ]
    await until(lambda: len(h.alerts) >= len(expected_alerts), what="all alerts")
    assert expected_alerts == h.alert_kinds()
    assert {"completed": 1, "compensated": 1, "failed": 1, "stuck": 2} == summarise(
        h.monitor.store  # type: ignore[union-attr]
    )


async def test_late_event_moves_a_stuck_saga_on(harness: Harness) -> None:
    """A stuck saga resumes on the awaited event, which is flagged late."""
    h = harness
    await h.send("order.placed", "o")
    h.clock.advance(40)
    await until(lambda: h.states() == {"o": "stuck"}, what="stuck")
    await h.send("payment.authorized", "o")
    assert {"o": "running"} == h.states()
    instance = h.monitor.store.instances()[0]  # type: ignore[union-attr]
    assert (["late"], ["inventory.reserved"]) == (
        [a.kind for a in instance.anomalies],
        instance.expected,
    )


async def test_deadline_passed_while_down_is_reported_on_start(harness: Harness) -> None:
    """Stop the monitor, let the deadline pass, start a new one: it reports stuck as soon as
    its watermark shows it caught up."""
    h = harness
    await h.send("order.placed", "o")
    assert h.monitor is not None
    await h.monitor.stop()
    h.monitor.store.close()
    h.clock.advance(31)
    await h.start()
    await until(lambda: {"o": "stuck"} == h.states(), what="o to be stuck")
    await until(lambda: any(a.type == "saga.stuck" for a in h.alerts), what="stuck alert")


async def test_lag_gauge_counts_the_wait_before_the_group_has_a_watermark(
    harness: Harness,
) -> None:
    """While a member of the group has no watermark yet, verdicts wait: the lag gauge shows
    how long since this monitor started (not 0, which would read as caught up)."""
    h = harness
    assert h.monitor is not None
    monitor = h.monitor
    h.clock.advance(7)
    # A second member that has joined the group but read nothing yet.
    monitor.store.record_monitor(f"{monitor.group}/other:1:abcdef", None, float("inf"), h.clock())
    await monitor.check(h.clock())
    assert monitor.verdicts_at is None
    assert REGISTRY.get_sample_value("choreo_saga_monitor_lag_seconds") == pytest.approx(7.0)


async def test_metrics_count_states_steps_stuck_and_anomalies(harness: Harness) -> None:
    """choreo_saga_* metrics follow the instances, step durations, stuck and anomalies."""
    h = harness

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    steps = {"saga": "order-fulfilment", "step": "payment.authorized"}
    stuck = {"saga": "order-fulfilment"}
    dup = {"saga": "order-fulfilment", "kind": "duplicate"}
    before = (
        sample("choreo_saga_step_seconds_count", **steps),
        sample("choreo_saga_stuck_total", **stuck),
        sample("choreo_saga_anomalies_total", **dup),
    )
    await h.send("order.placed", "m", id_="m-1")
    await h.send("order.placed", "m", id_="m-1")
    await h.send("payment.authorized", "m", seconds=1)
    h.clock.advance(100)
    await until(lambda: h.states() == {"m": "stuck"}, what="stuck")
    await until(
        lambda: sample("choreo_saga_instances", saga="order-fulfilment", state="stuck") == 1,
        what="gauge",
    )
    after = (
        sample("choreo_saga_step_seconds_count", **steps),
        sample("choreo_saga_stuck_total", **stuck),
        sample("choreo_saga_anomalies_total", **dup),
    )
    assert (1.0, 1.0, 1.0) == tuple(a - b for a, b in zip(after, before, strict=True))


async def test_finished_instances_are_pruned_after_the_retention(bus: Bus, tmp_path: Path) -> None:
    """Instances that finished longer ago than `retention` are deleted; running ones stay."""
    clock = ManualClock()
    store = open_saga_store(f"sqlite:///{tmp_path}/sagas.db")
    monitor = SagaMonitor(example(), bus, store, clock=clock, retention=3600, tick_interval=60)
    async with monitor:
        for corr, types in (
            ("done", ("order.placed", "payment.failed")),
            ("open", ("order.placed",)),
        ):
            for type_ in types:
                await monitor.apply(
                    Event(
                        type=type_,
                        source="shop",
                        time=clock.now,
                        extensions={"correlationid": corr},
                    ),
                    topic="orders",
                )
        clock.advance(3601)
        await monitor.check()
    assert ["open"] == [i.correlation_id for i in store.instances()]
    store.close()


async def test_a_backlog_is_applied_many_events_per_batch(tmp_path: Path) -> None:
    """Events already waiting on the broker are applied many per batch (one store transaction
    each), and every saga among them reaches its state."""
    url = f"sqlite:///{tmp_path}/broker.db?poll_interval=0.01"
    flow = (
        ("orders", "order.placed"),
        ("payments", "payment.authorized"),
        ("inventory", "inventory.reserved"),
        ("shipping", "order.shipped"),
    )
    async with Bus(url, source="shop") as bus:
        for topic, kind in flow:
            events = [{"type": kind, "correlation_id": f"b-{n}"} for n in range(50)]
            (await bus.publish_many(topic, events)).raise_for_failures()
        batches = REGISTRY.get_sample_value("choreo_saga_batch_events_count") or 0.0
        store = open_saga_store(f"sqlite:///{tmp_path}/sagas.db")
        monitor = SagaMonitor(example(), bus, store, alerts_topic=None, from_beginning=True)
        async with monitor:
            await until(lambda: monitor.applied >= 200, timeout=60, what="the backlog applied")
        batches = (REGISTRY.get_sample_value("choreo_saga_batch_events_count") or 0.0) - batches
        states = {i.state for i in store.instances()}
        store.close()
    assert ({"completed"}, True) == (states, batches <= 20)


async def test_acknowledged_and_stuck_instances_go_after_their_own_retention(
    bus: Bus, tmp_path: Path
) -> None:
    """With `retain_acknowledged` and `retain_stuck`, an acknowledged instance goes that long
    after its acknowledgement and a stuck one that long after it got stuck; others stay."""
    from saga_monitor.queries import ACK, Note

    clock = ManualClock()
    store = open_saga_store(f"sqlite:///{tmp_path}/sagas.db")
    monitor = SagaMonitor(
        example(),
        bus,
        store,
        clock=clock,
        tick_interval=0.02,
        max_delay=0.5,
        retain_acknowledged=600,
        retain_stuck=7200,
    )

    def placed(corr: str) -> Event:
        return Event(
            type="order.placed", source="shop", time=clock.now, extensions={"correlationid": corr}
        )

    def states() -> dict[str, str]:
        return {i.correlation_id: i.state for i in store.instances()}

    async with monitor:
        for corr in ("acked", "stuck", "fresh"):
            await monitor.apply(placed(corr), topic="orders")
        clock.advance(60)  # all stuck (payment within 30 s)
        stuck = {"acked": "stuck", "stuck": "stuck", "fresh": "stuck"}
        await until(lambda: stuck == states(), what="the three to get stuck")
        store.add_note(Note("order-fulfilment", "acked", ACK, "ana", clock.now, "known"))
        clock.advance(3540)  # acknowledged almost an hour ago
        await monitor.apply(placed("new"), topic="orders")
        expected = {"stuck": "stuck", "fresh": "stuck", "new": "running"}
        await until(lambda: expected == states(), what="the acknowledged one to go")
        clock.advance(3661)  # stuck for more than 2 h, but "new" for one only
        await until(lambda: {"new": "stuck"} == states(), what="the long-stuck ones to go")
    store.close()


async def test_a_stopped_monitor_leaves_no_apply_thread_behind(bus: Bus, tmp_path: Path) -> None:
    """With a SQL store batches are applied in a thread of the monitor's own: it is made by
    start and ended by stop, so monitors started and stopped in one process do not pile up
    idle threads."""
    import threading

    store = open_saga_store(f"sqlite:///{tmp_path}/sagas.db")
    monitor = SagaMonitor(example(), bus, store, clock=ManualClock(), tick_interval=0.02)

    def apply_threads() -> int:  # this monitor's: other tests' may still be ending
        mine = f"choreo-saga-apply {monitor.member}"
        return sum(t.name.startswith(mine) for t in threading.enumerate())

    before = apply_threads()
    for n in range(2):
        async with monitor:
            event = Event(type="order.placed", source="shop", extensions={"correlationid": f"o{n}"})
            await bus.publish("orders", event)
            await until(lambda k=n + 1: len(store.instances()) == k, what="the event applied")
            assert before + 1 == apply_threads()
        await until(lambda: apply_threads() == before, what="the apply thread to end")
    store.close()


async def test_running_monitors_collect_garbage_less_often_and_restore_it(
    bus: Bus, tmp_path: Path
) -> None:
    """While monitors run, the cyclic collector's young threshold is raised (fewer collections
    while a backlog is read); when the last one stops, the process's own setting is back, and
    a higher setting of the process's is kept meanwhile."""
    import gc

    from saga_monitor.monitor import GC_YOUNG_THRESHOLD

    before = gc.get_threshold()
    stores = [open_saga_store(f"sqlite:///{tmp_path}/sagas{n}.db") for n in range(2)]
    first, second = (
        SagaMonitor(example(), bus, store, clock=ManualClock(), alerts_topic=None, group=f"g{n}")
        for n, store in enumerate(stores)
    )
    try:
        seen = []
        async with first:
            seen.append(gc.get_threshold()[0])
            async with second:
                seen.append(gc.get_threshold()[0])
            seen.append(gc.get_threshold()[0])
        seen.append(gc.get_threshold()[0])
        assert seen == [GC_YOUNG_THRESHOLD] * 3 + [before[0]]
        assert before == gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD * 2, *before[1:])
        async with first:
            assert GC_YOUNG_THRESHOLD * 2 == gc.get_threshold()[0]
        assert GC_YOUNG_THRESHOLD * 2 == gc.get_threshold()[0]
    finally:
        gc.set_threshold(*before)
        for store in stores:
            store.close()


async def test_a_stop_is_bounded_when_the_store_is_locked_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """A monitor whose store stays locked by another process stops within its stop_timeout,
    with one error line saying how many events were left unapplied; they were not acked, so
    the next start reads them again, and what was acked before is all still there."""
    import sqlite3
    import threading
    import time

    from structlog.testing import capture_logs

    from broker.observability import configure_logging

    broker = f"sqlite:///{tmp_path}/broker.db?poll_interval=0.01"
    store_path = tmp_path / "sagas.db"

    def placed(corr: str) -> Event:
        return Event(type="order.placed", source="shop", extensions={"correlationid": corr})

    def instances() -> dict[str, tuple[int, int]]:  # events and anomalies per instance
        store = open_saga_store(f"sqlite:///{store_path}")
        try:
            return {
                i.correlation_id: (len(i.timeline), len(i.anomalies)) for i in store.instances()
            }
        finally:
            store.close()

    configure_logging()  # now, so that capture_logs' configuration is not replaced later
    async with Bus(broker, source="shop") as bus:
        with capture_logs() as logs:  # the monitor's logger is bound inside: it is captured
            monitor = SagaMonitor(
                example(), bus, open_saga_store(f"sqlite:///{store_path}"), stop_timeout=0.5
            )
            apply_thread = f"choreo-saga-apply {monitor.member}"
            await monitor.start()
            await bus.publish("orders", placed("acked"))
            await until(lambda: monitor.applied == 1, what="the first event applied")
            locker = sqlite3.connect(store_path, isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")  # another process's write lock (30 s busy wait)
            await bus.publish("orders", placed("locked-out"))
            await until(lambda: monitor._in_store == 1, what="the apply waiting for the lock")
            began = time.monotonic()
            await monitor.stop()
            took = time.monotonic() - began
        locker.rollback()
        locker.close()
        # The apply still running commits once the lock is gone, without an ack.
        await until(
            lambda: not any(t.name.startswith(apply_thread) for t in threading.enumerate()),
            timeout=40,
            what="the left apply thread to end",
        )
        monitor.store.close()
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    async with Bus(broker, source="shop") as bus:
        store = open_saga_store(f"sqlite:///{store_path}")
        again = SagaMonitor(example(), bus, store)
        async with again:
            await until(lambda: again.applied == 1, what="the unacked event read again")
        store.close()
    assert took < 10  # about 3 s (grace, close, what is left, cancels): not SQLite's 30
    assert [1] == [entry["unapplied"] for entry in errors]
    assert "will be read again on the next start" in errors[0]["event"]
    assert {"acked": (1, 0), "locked-out": (1, 0)} == instances()


async def test_the_alert_flush_waits_for_a_locked_store_off_the_event_loop(
    tmp_path: Path,
) -> None:
    """Flushing the alert outbox while another process holds the store's write lock leaves
    the event loop free (the outbox is written on the apply thread): the alert is published
    and the flush waits for the lock meanwhile, then deletes it from the outbox."""
    import sqlite3

    from saga_monitor.model import Alert

    store_path = tmp_path / "sagas.db"
    received: list[Event] = []

    async def keep(event: Event) -> None:
        received.append(event)

    async with Bus(f"sqlite:///{tmp_path}/broker.db?poll_interval=0.01", source="shop") as bus:
        await bus.subscribe("saga.alerts", keep, group="alert-reader")
        store = open_saga_store(f"sqlite:///{store_path}")
        monitor = SagaMonitor(example(), bus, store, tick_interval=3600)
        async with monitor:
            with store.transaction() as txn:
                txn.add_alerts([Alert("saga.stuck", "order-fulfilment", "late", {"n": 1})])
            locker = sqlite3.connect(store_path, isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")  # another process's write lock (30 s busy wait)
            flush = asyncio.create_task(monitor.flush_alerts())
            await until(lambda: len(received) == 1, what="the alert published")
            waiting = not flush.done()  # on the apply thread, for the lock
            locker.rollback()
            locker.close()
            sent = await flush
            left = store.pending_alerts()
        store.close()
    assert waiting
    assert 1 == sent
    assert [] == left


@pytest.mark.postgres
async def test_a_stop_cancels_the_store_statement_a_postgres_lock_holds(
    tmp_path: Path, shared_store: str
) -> None:
    """A monitor whose PostgreSQL store waits for a lock another connection holds stops within
    its stop_timeout and cancels that wait: the apply thread has ended and closed its
    connection when stop() returns, nothing waits for the lock any more, and the event it was
    applying, not acknowledged, is applied on the next start."""
    import threading

    import psycopg
    from structlog.testing import capture_logs

    from broker.observability import configure_logging

    broker = f"sqlite:///{tmp_path}/broker.db?poll_interval=0.01"
    locker = psycopg.connect(shared_store.split("?", maxsplit=1)[0], autocommit=True)
    name = f"saga-stop-{uuid.uuid4().hex[:8]}"
    url = f"{shared_store}&application_name={name}"

    def waiting_for_locks() -> int:
        row = locker.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
        return int(row[0]) if row else 0

    def connections() -> int:  # the store's, one per thread using it
        row = locker.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone()
        return int(row[0]) if row else 0

    def placed(corr: str) -> Event:
        return Event(type="order.placed", source="shop", extensions={"correlationid": corr})

    configure_logging()
    try:
        async with Bus(broker, source="shop") as bus:
            with capture_logs() as logs:
                store = open_saga_store(url)
                monitor = SagaMonitor(example(), bus, store, stop_timeout=0.5)
                apply_thread = f"choreo-saga-apply {monitor.member}"
                await monitor.start()
                await bus.publish("orders", placed("acked"))
                await until(lambda: monitor.applied == 1, what="the first event applied")
                locker.execute(  # the instance's lock, as another monitor's transaction holds it
                    "SELECT pg_advisory_lock(hashtextextended(%s, 0))",
                    ("order-fulfilment\x1flocked-out",),
                )
                await bus.publish("orders", placed("locked-out"))
                await until(lambda: waiting_for_locks() == 1, what="the apply waiting for it")
                await monitor.stop()
                alive = [t.name for t in threading.enumerate() if t.name.startswith(apply_thread)]
                waiting, left = waiting_for_locks(), connections()
            locker.execute("SELECT pg_advisory_unlock_all()")
            store.close()
        errors = [entry for entry in logs if entry["log_level"] == "error"]
        async with Bus(broker, source="shop") as bus:
            store = open_saga_store(shared_store)
            again = SagaMonitor(example(), bus, store)
            async with again:
                await until(lambda: again.applied == 1, what="the unacked event read again")
            found = {i.correlation_id: len(i.timeline) for i in store.instances()}
            store.close()
    finally:
        locker.execute("SELECT pg_advisory_unlock_all()")
        locker.close()
    assert [] == alive
    assert 0 == waiting
    assert 1 == left  # the event loop's; the apply thread's is closed
    assert [(1, True)] == [(entry["unapplied"], entry["cancelled"]) for entry in errors]
    assert "its transaction was cancelled" in errors[0]["event"]
    assert {"acked": 1, "locked-out": 1} == found
