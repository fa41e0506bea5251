"""A saga stream for the restart and shared-monitor tests: mixed outcomes (completed,
compensated, failed, stalled, late, orphans, owed compensations, duplicates), all stamped in the
past so that every deadline has passed when a monitor reads it, plus the checks that compare a
monitor's verdicts (states and alerts) with those of a monitor that ran alone, uninterrupted."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from broker import Bus, Event, Subscriber
from saga_monitor import SagaStore, load_definitions, open_saga_store
from saga_monitor.monitor import SagaMonitor

GROUP = "choreo-saga-monitor"
DEFINITIONS = """
topics: [{topic}]
sagas:
  - name: order-fulfilment
    start: [order.placed]
    steps:
      - {{event: payment.authorized, within: 2s, compensation: payment.refunded}}
      - {{event: inventory.reserved, within: 2s, compensation: inventory.released}}
      - {{event: order.shipped, within: 3s}}
    fail: [payment.failed, inventory.unavailable]
    compensated: [order.cancelled]
    compensation_within: 3s
    deadline: 1h
"""
#: Every event happened a while ago: each deadline has passed by the time the monitor reads it,
#: so a monitor that judged before reading its backlog would cry wolf.
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def _event(type_: str, corr: str, seconds: float, id_: str | None = None) -> Event:
    return Event(
        type=type_,
        source="shop",
        id=id_ or f"{corr}/{type_}",
        time=BASE + timedelta(seconds=seconds),
        extensions={"correlationid": corr, "partitionkey": corr},
    )


PAID_AND_RESERVED = [("order.placed", 0), ("payment.authorized", 1), ("inventory.reserved", 2)]
UNDONE = [("inventory.unavailable", 3), ("inventory.released", 4), ("payment.refunded", 5)]
SCRIPTS: list[list[tuple[str, float]]] = [
    [*PAID_AND_RESERVED, ("order.shipped", 3)],
    [*PAID_AND_RESERVED, *UNDONE],
    [("order.placed", 0), ("payment.failed", 1)],
    [("order.placed", 0), ("payment.authorized", 1)],  # stuck at 3 s: inventory is late
    [("payment.authorized", -1), ("order.placed", 0)],  # an orphan adopted by its start
    [("order.placed", 0), ("payment.authorized", 5)],  # a stall that ended: stuck, resolved, late
    [("payment.authorized", 0)],  # an orphan for good
    [("order.placed", 0), ("payment.authorized", 1), ("order.cancelled", 2)],  # owes a refund
]


def phase_one(sagas: int) -> list[Event]:
    """Mixed sagas: completed, compensated, failed, stuck, orphans, late, owing."""
    events = []
    for i in range(sagas):
        for type_, seconds in SCRIPTS[i % len(SCRIPTS)]:
            events.append(_event(type_, f"o{i}", seconds))
    return events


def phase_two(sagas: int) -> list[Event]:
    """After the restart: stuck sagas move on, owed refunds come, and new sagas arrive twice."""
    events = []
    for i in range(3, sagas, len(SCRIPTS)):
        events += [_event("inventory.reserved", f"o{i}", 6), _event("order.shipped", f"o{i}", 7)]
    for i in range(7, sagas, len(SCRIPTS)):
        events.append(_event("payment.refunded", f"o{i}", 4))
    for i in range(0, sagas, 10):
        placed = _event("order.placed", f"n{i}", 0)
        events += [placed, placed]  # two messages: a duplicate where the broker keeps both
    return events


def snapshot(store: SagaStore) -> dict[Any, Any]:
    """Everything that must match: state, expectations, steps, anomalies, timeline, orphans."""
    out: dict[Any, Any] = {}
    for i in store.instances(limit=100_000):
        out[(i.saga, i.correlation_id)] = (
            i.state,
            tuple(i.expected),
            i.due,
            tuple(sorted(i.done)),
            tuple(sorted((a.kind, a.event_id) for a in i.anomalies)),
            tuple(sorted((e.event.id, tuple(e.flags)) for e in i.timeline)),
        )
    out["orphans"] = sorted((s, c, o.id) for s, c, o in store.orphans())
    return out


class Alerts:
    """The alerts a monitor published, read back from its alerts topic."""

    def __init__(self) -> None:
        self.events: dict[str, Event] = {}

    async def keep(self, event: Event) -> None:
        self.events[event.id] = event

    def ids(self) -> set[str]:
        return set(self.events)

    def of_type(self, type_: str) -> list[Event]:
        return [e for e in self.events.values() if e.type == type_]


@contextlib.asynccontextmanager
async def reading_alerts(url: str, topics: list[str]) -> AsyncIterator[list[Alerts]]:
    """One :class:`Alerts` per topic, filled while the block runs."""
    readers = [Alerts() for _ in topics]
    async with Bus(url) as bus:
        for topic, reader in zip(topics, readers, strict=True):
            await bus.create_topic(topic)
            await bus.subscribe(topic, reader.keep, group="reader")
        yield readers


def alert_difference(mine: Alerts, theirs: Alerts) -> list[str]:
    """What one monitor alerted and the other did not, readably."""
    out = []
    for name, one, other in (("only here", mine, theirs), ("only there", theirs, mine)):
        for key in sorted(one.ids() - other.ids()):
            e = one.events[key]
            kind = e.data.get("anomaly", {}).get("kind") if isinstance(e.data, dict) else None
            out.append(f"{name}: {e.type} {e.correlationid} {kind or ''}".rstrip())
    return out


def broker_url(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The broker under test (a fresh SQLite file for the embedded one)."""
    if name == "sqlite":
        return f"sqlite:///{tmp_path}/broker.db?poll_interval=0.01"
    url: str = request.getfixturevalue(f"{name}_url")
    return url


async def join(url: str, topics: list[str], group: str) -> None:
    """Create ``group``'s position on ``topics`` now, so it receives what is published next."""
    async with Bus(url) as bus:
        for topic in topics:
            await bus.create_topic(topic)
        subscriber: Subscriber = await bus.subscribe(topics, _ignore, group=group)
        await subscriber.stop()


async def _ignore(event: Event) -> None:
    raise RuntimeError("a group's position is being created: nothing is handled")


async def publish(url: str, topic: str, events: list[Event]) -> None:
    async with Bus(url, source="shop") as bus:
        for item in events:
            await bus.publish(topic, item)


async def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every)


def applied(store: SagaStore) -> int:
    """How many events the store shows as applied (timeline entries plus buffered orphans)."""
    return sum(len(i.timeline) for i in store.instances(limit=100_000)) + len(store.orphans())


def stalled(sagas: int) -> set[str]:
    """The sagas the scripts make stall (some of them move on later)."""
    scripted = {f"o{i}" for i in range(sagas) if i % len(SCRIPTS) in (3, 4, 5)}
    return scripted | {f"n{i}" for i in range(0, sagas, 10)}


def settled(store: SagaStore, sagas: int) -> bool:
    """Whether every saga the whole stream leaves stalled is judged stuck (the watermark passed
    their deadlines, so everything published before was read)."""
    stuck = {i.correlation_id for i in store.instances(state="stuck", limit=100_000)}
    return stalled(sagas) - {f"o{i}" for i in range(3, sagas, len(SCRIPTS))} <= stuck


def check_stuck_alerts(alerts: Alerts, store_url: str, stalled: set[str]) -> None:
    """Stuck alerts only for sagas that stalled; each resolved unless its saga is still stuck."""
    stuck = {e.id: e.correlationid for e in alerts.of_type("saga.stuck")}
    resolved = {e.data["resolves"] for e in alerts.of_type("saga.resolved")}
    assert stuck, "the stalls were alerted"
    assert set(stuck.values()) <= stalled, f"cried wolf for {set(stuck.values()) - stalled}"
    store = open_saga_store(store_url)
    try:
        still_open = {key for i in store.instances(limit=100_000) for key in i.open_alerts}
    finally:
        store.close()
    assert resolved <= set(stuck)
    assert set(stuck) - resolved == still_open


async def reference(
    url: str, tmp: Path, definitions: Path, alerts_topic: str, sagas: int
) -> dict[Any, Any]:
    """One monitor, never interrupted, over the same events (its own group and store)."""
    store = open_saga_store(f"sqlite:///{tmp}/reference.db")
    async with Bus(url) as bus:
        monitor = SagaMonitor(
            load_definitions(definitions),
            bus,
            store,
            group="reference",
            alerts_topic=alerts_topic,
            tick_interval=0.05,
            max_delay=1.0,
        )
        async with monitor:
            await wait_for(lambda: settled(store, sagas), 60, "the reference to settle")
            await wait_for(lambda: not store.pending_alerts(), 30, "the reference's alerts")
    result = snapshot(store)
    store.close()
    return result
