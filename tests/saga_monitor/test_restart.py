"""kill -9 and restart: the monitor process ends with exactly the states of an uninterrupted run."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker import Bus, Event
from saga_monitor import SagaStore, load_definitions, open_saga_store
from saga_monitor.monitor import SagaMonitor

ROOT = Path(__file__).parents[2]
DEFINITIONS = """
topics: [flow]
sagas:
  - name: order-fulfilment
    start: [order.placed]
    steps:
      - {event: payment.authorized, within: 1h, compensation: payment.refunded}
      - {event: inventory.reserved, within: 1h, compensation: inventory.released}
      - {event: order.shipped, within: 2h}
    fail: [payment.failed, inventory.unavailable]
    compensated: [order.cancelled]
    deadline: 1d
"""
BASE = datetime.now(UTC).replace(microsecond=0)


def _event(type_: str, corr: str, seconds: float, id_: str | None = None) -> Event:
    return Event(
        type=type_,
        source="shop",
        id=id_ or f"{corr}/{type_}",
        time=BASE + timedelta(seconds=seconds),
        extensions={"correlationid": corr, "partitionkey": corr},
    )


SCRIPTS: list[list[tuple[str, float]]] = [
    [
        ("order.placed", 0),
        ("payment.authorized", 1),
        ("inventory.reserved", 2),
        ("order.shipped", 3),
    ],
    [
        ("order.placed", 0),
        ("payment.authorized", 1),
        ("inventory.reserved", 2),
        ("inventory.unavailable", 3),
        ("inventory.released", 4),
        ("payment.refunded", 5),
    ],
    [("order.placed", 0), ("payment.failed", 1)],
    [("order.placed", 0), ("payment.authorized", 1)],
    [("payment.authorized", -1), ("order.placed", 0)],
    [("order.placed", 0), ("payment.failed", 1), ("payment.authorized", 2)],
    [("payment.authorized", 0)],
]


def phase_one(sagas: int) -> list[Event]:
    """Mixed sagas: completed, compensated, failed, running, adopted orphan, late, orphan."""
    events = []
    for i in range(sagas):
        for type_, seconds in SCRIPTS[i % len(SCRIPTS)]:
            events.append(_event(type_, f"o{i}", seconds))
    return events


def phase_two(sagas: int) -> list[Event]:
    """After the restart: running sagas finish, and new ones arrive twice (duplicates)."""
    events = []
    for i in range(3, sagas, len(SCRIPTS)):
        events += [_event("inventory.reserved", f"o{i}", 5), _event("order.shipped", f"o{i}", 6)]
    for i in range(0, sagas, 10):
        placed = _event("order.placed", f"n{i}", 0)
        events += [placed, placed]
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


async def publish(url: str, events: list[Event]) -> None:
    async with Bus(url, source="shop") as bus:
        await bus.create_topic("flow")
        for item in events:
            await bus.publish("flow", item)


async def reference_run(tmp: Path, events: list[Event], definitions: Path) -> dict[Any, Any]:
    """One monitor, never interrupted, over the same events."""
    url = f"sqlite:///{tmp}/ref-broker.db?poll_interval=0.01"
    await publish(url, events)
    store = open_saga_store(f"sqlite:///{tmp}/ref-sagas.db")
    async with Bus(url) as bus:
        monitor = SagaMonitor(
            load_definitions(definitions), bus, store, from_beginning=True, tick_interval=0.05
        )
        async with monitor:
            deadline = time.monotonic() + 60
            while monitor.applied < len(events):
                assert time.monotonic() < deadline, f"reference applied {monitor.applied}"
                await asyncio.sleep(0.02)
    result = snapshot(store)
    store.close()
    return result


def start_monitor(
    broker: str, store: str, definitions: Path, *extra: str
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "choreo",
        "saga",
        "monitor",
        "--definitions",
        str(definitions),
        "--broker",
        broker,
        "--store",
        store,
        "--from-beginning",
        "--tick",
        "50ms",
        *extra,
    ]
    env = {**os.environ, "CHOREO_LOG_LEVEL": "ERROR"}
    return subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE)


async def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def applied(store: SagaStore) -> int:
    """How many events the store shows as applied (timeline entries plus buffered orphans)."""
    return sum(len(i.timeline) for i in store.instances(limit=100_000)) + len(store.orphans())


@pytest.mark.slow
async def test_kill_9_and_restart_reach_the_uninterrupted_states(tmp_path: Path) -> None:
    """Kill the monitor process mid-stream, restart it: the final states equal a clean run's."""
    definitions = tmp_path / "sagas.yaml"
    definitions.write_text(DEFINITIONS)
    first, second = phase_one(140), phase_two(140)
    expected = await reference_run(tmp_path, first + second, definitions)

    broker = f"sqlite:///{tmp_path}/broker.db?poll_interval=0.01&visibility_timeout=1"
    store_url = f"sqlite:///{tmp_path}/sagas.db"
    await publish(broker, first)
    watcher = open_saga_store(store_url)
    process = start_monitor(broker, store_url, definitions)
    try:
        await wait_for(lambda: sum(watcher.counts().values()) >= 20, 30, "the monitor to start")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert applied(watcher) < len(first), "killed too late: the stream was already done"
        port = free_port()
        process = start_monitor(broker, store_url, definitions, "--metrics-port", str(port))
        await publish(broker, second)
        await wait_for(lambda: snapshot(watcher) == expected, 20, "the same states", every=0.2)
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        assert 'choreo_saga_events_total{outcome="applied"}' in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        watcher.close()
    assert expected == snapshot(open_saga_store(store_url))
    assert {"completed", "compensated", "failed", "running"} <= {
        v[0] for k, v in expected.items() if k != "orphans"
    }
