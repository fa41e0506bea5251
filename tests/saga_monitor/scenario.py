"""A saga stream for the restart and shared-monitor tests, and the checks that compare a
monitor's verdicts (states, anomalies, alerts) with those of a monitor that ran alone.

The stream plays out in real time, as producers would: each event is stamped with the moment it
is published, and the sagas spread over about ten seconds with deadlines of two or three, so
some stall for real (completed, compensated, failed, stalled and resumed, late, orphans, owed
compensations, duplicates). A monitor that judged what it had not read yet would cry wolf.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from broker import Bus, Event, Subscriber
from saga_monitor import SagaStore, load_definitions, open_saga_store
from saga_monitor.monitor import SagaMonitor

GROUP = "choreo-saga-monitor"
#: How late an event may reach the broker after its own time (the monitors' --max-delay).
MAX_DELAY = 3.0
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

PAID_AND_RESERVED = [("order.placed", 0), ("payment.authorized", 1), ("inventory.reserved", 1.5)]
UNDONE = [("inventory.unavailable", 2), ("inventory.released", 2.5), ("payment.refunded", 3)]
#: Seconds after the saga's own start; the comment says what the monitor must conclude.
SCRIPTS: list[list[tuple[str, float]]] = [
    [*PAID_AND_RESERVED, ("order.shipped", 2)],  # completed
    [*PAID_AND_RESERVED, *UNDONE],  # compensated
    [("order.placed", 0), ("payment.failed", 0.5)],  # failed
    [  # stuck at 2.5, resumed at 5 (late), then completed
        ("order.placed", 0),
        ("payment.authorized", 0.5),
        ("inventory.reserved", 5),
        ("order.shipped", 5.5),
    ],
    [("payment.authorized", 0), ("order.placed", 0.2)],  # the start after its step: stuck at 2
    [("order.placed", 0), ("payment.authorized", 3)],  # late, then stuck at 5
    [("payment.authorized", 0)],  # an orphan for good
    [  # cancelled while owing a refund, which comes in time
        ("order.placed", 0),
        ("payment.authorized", 0.5),
        ("order.cancelled", 1),
        ("payment.refunded", 2),
    ],
]
#: The sagas whose scripts make them stall (for a while, or for good).
STALLING = (3, 4, 5)


def schedule(sagas: int, start: float) -> list[tuple[float, Event]]:
    """(monotonic time to publish, event) for ``sagas`` sagas starting from ``start`` (a
    ``time.monotonic()``), a saga every 30 ms; every tenth saga's start is published twice."""
    out: list[tuple[float, Event]] = []
    for n in range(sagas):
        corr, begin = f"o{n}", n * 0.03
        for type_, offset in SCRIPTS[n % len(SCRIPTS)]:
            event = Event(
                type=type_,
                source="shop",
                id=f"{corr}/{type_}",
                time=None,
                extensions={"correlationid": corr, "partitionkey": corr},
            )
            out.append((start + begin + offset, event))
            if n % 10 == 0 and type_ == "order.placed":
                out.append((start + begin + offset, event))  # a second message: a duplicate
    return sorted(out, key=lambda item: item[0])


async def play(url: str, topic: str, stream: list[tuple[float, Event]]) -> dict[str, list[float]]:
    """Publish each event of ``stream`` at its time, stamped with the moment it is published
    (as a producer would), so every event reaches the broker right after its own time whatever
    the machine's load. Returns each saga's stamps (epoch seconds) in publish order."""
    stamps: dict[str, list[float]] = {}
    async with Bus(url, source="shop") as bus:
        for due, event in stream:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if event.time is None:
                event.time = datetime.now(UTC)
                stamps.setdefault(event.correlationid or "", []).append(event.time.timestamp())
            await bus.publish(topic, event)
    return stamps


def stalled(sagas: int, stamps: dict[str, list[float]]) -> set[str]:
    """The sagas that stalled: those whose scripts make them, and any other in which the
    machine's load spread two consecutive events over more than a step's deadline (2 s)."""
    scripted = {f"o{n}" for n in range(sagas) if n % len(SCRIPTS) in STALLING}
    slowed = {
        corr
        for corr, times in stamps.items()
        if any(later - earlier >= 1.9 for earlier, later in itertools.pairwise(times))
    }
    return scripted | slowed


def settled(store: SagaStore, sagas: int) -> bool:
    """Whether the sagas the stream leaves stalled for good are judged stuck (the watermark
    passed their deadlines, so everything published before was read)."""
    stuck = {i.correlation_id for i in store.instances(state="stuck", limit=100_000)}
    return {f"o{n}" for n in range(sagas) if n % len(SCRIPTS) in (4, 5)} <= stuck


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
            await bus.subscribe(topic, reader.keep, group=f"reader-{topic}")
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
    # A server of the test's own where one can be started: these long multi-process tests must
    # not depend on what hundreds of earlier tests left in the session's server.
    fixture = f"own_{name}_url" if name in ("kafka", "nats") else f"{name}_url"
    url: str = request.getfixturevalue(fixture)
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


@contextlib.asynccontextmanager
async def bounded(seconds: float) -> AsyncIterator[None]:
    """Fail after ``seconds`` with the stack of every task still running, so a stall names the
    await it is stuck in (pytest-timeout would show only the event loop's select)."""

    def show_tasks() -> None:  # before cancelling: a stalled await may swallow the cancel
        print(f"stalled for {seconds:.0f} s; every task's stack:", flush=True)
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stdout)

    shown = asyncio.get_running_loop().call_later(seconds, show_tasks)
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise AssertionError(f"stalled for {seconds:.0f} s; the tasks' stacks are above") from None
    finally:
        shown.cancel()


async def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every)


def snapshot_difference(got: dict[Any, Any], want: dict[Any, Any]) -> list[str]:
    """What differs between two snapshots, one line per instance (for a failure message)."""
    lines = []
    for key in sorted(set(got) | set(want), key=repr):
        if got.get(key) != want.get(key):
            lines.append(f"{key}: got {got.get(key)!r}, want {want.get(key)!r}")
    return lines


def check_stuck_alerts(alerts: Alerts, store_url: str, stalled: set[str]) -> None:
    """Stuck alerts only for sagas that stalled; each resolvable alert resolved unless its saga
    still owes what it waits for.

    Resolvable are the stuck alerts and the ``compensation_missing`` anomalies: a loaded machine
    can spread the cancelled saga's refund more than ``compensation_within`` after its
    cancellation, and the refund then resolves the anomaly (both monitors agree on it)."""
    stuck = {e.id: e.correlationid for e in alerts.of_type("saga.stuck")}
    owed = {
        e.id
        for e in alerts.events.values()
        if isinstance(e.data, dict)
        and (e.data.get("anomaly") or {}).get("kind") == "compensation_missing"
    }
    resolved = {e.data["resolves"] for e in alerts.of_type("saga.resolved")}
    assert stuck, "the stalls were alerted"
    assert set(stuck.values()) <= stalled, f"cried wolf for {set(stuck.values()) - stalled}"
    store = open_saga_store(store_url)
    try:
        still_open = {key for i in store.instances(limit=100_000) for key in i.open_alerts}
    finally:
        store.close()
    resolvable = set(stuck) | owed
    assert resolved <= resolvable, f"resolutions of alerts never seen: {resolved - resolvable}"
    assert resolvable - resolved == still_open


@contextlib.asynccontextmanager
async def reference(
    url: str, tmp: Path, definitions: Path, alerts_topic: str
) -> AsyncIterator[SagaStore]:
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
            max_delay=MAX_DELAY,
        )
        async with monitor:
            yield store
    store.close()


async def settle(store: SagaStore, sagas: int) -> dict[Any, Any]:
    """Wait until ``store``'s monitor has judged the whole stream and sent its alerts."""
    await wait_for(lambda: settled(store, sagas), 90, "the monitor to settle")
    await wait_for(lambda: not store.pending_alerts(), 30, "the monitor's alerts")
    return snapshot(store)
