"""Saga monitor throughput and memory: events correlated per second, end to end through a Bus,
and the memory it takes per tracked instance.

    python -m bench.saga                # writes bench/results/saga.json
"""

from __future__ import annotations

import asyncio
import json
import resource
import tempfile
import time
import uuid
from importlib import resources
from pathlib import Path

from broker import Bus, Event
from saga_monitor import open_store, parse_definitions
from saga_monitor.monitor import SagaMonitor

RESULTS = Path(__file__).parent / "results"
SAGAS = 5_000
STEPS = ("order.placed", "inventory.reserved", "payment.authorized", "order.shipped")
TOPIC = {
    "order.placed": "orders",
    "inventory.reserved": "inventory",
    "payment.authorized": "payments",
    "order.shipped": "shipping",
}


def _definitions() -> object:
    text = resources.files("choreo").joinpath("demo_sagas.yaml").read_text()
    return parse_definitions(text, file="demo_sagas.yaml")


async def _direct(store_url: str) -> float:
    """Events applied per second by the monitor itself (correlator + store), no broker."""
    async with Bus(f"memory://saga-bench-{uuid.uuid4().hex}") as bus:
        monitor = SagaMonitor(
            _definitions(),
            bus,
            open_store(store_url),  # type: ignore[arg-type]
            alerts_topic=None,
        )
        events = [
            Event(
                type=kind, source="bench", data={"n": n}, extensions={"correlationid": f"order-{n}"}
            )
            for n in range(SAGAS)
            for kind in STEPS
        ]
        started = time.perf_counter()
        for event in events:
            await monitor.apply(event, topic=TOPIC[event.type])
        return len(events) / (time.perf_counter() - started)


async def _through_bus(tmp: str) -> float:
    """Events per second from publish to applied, through the embedded SQLite broker."""
    url = f"sqlite:///{tmp}/broker.db?poll_interval=0.01"
    async with Bus(url, source="bench") as bus:
        monitor = SagaMonitor(
            _definitions(),
            bus,
            open_store(f"sqlite:///{tmp}/sagas2.db"),  # type: ignore[arg-type]
            alerts_topic=None,
            tick_interval=5,
        )
        await monitor.start()
        total = SAGAS * len(STEPS) // 5
        started = time.perf_counter()
        for n in range(SAGAS // 5):
            for kind in STEPS:
                await bus.publish(TOPIC[kind], type=kind, data={"n": n}, correlation_id=f"o-{n}")
        while monitor.applied < total:  # noqa: ASYNC110 - polling a counter we do not own
            await asyncio.sleep(0.01)
        rate = total / (time.perf_counter() - started)
        await monitor.stop()
        return rate


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        direct_memory = asyncio.run(_direct("memory://"))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        direct_sqlite = asyncio.run(_direct(f"sqlite:///{tmp}/sagas.db"))
        bus_rate = asyncio.run(_through_bus(tmp))
    per_instance_kb = max(0, after - before) / SAGAS
    rows = [
        {
            "suite": "saga",
            "backend": "memory store",
            "metric": "events correlated/s",
            "value": round(direct_memory, 1),
        },
        {
            "suite": "saga",
            "backend": "sqlite store",
            "metric": "events correlated/s",
            "value": round(direct_sqlite, 1),
        },
        {
            "suite": "saga",
            "backend": "sqlite broker + store",
            "metric": "events/s publish to applied",
            "value": round(bus_rate, 1),
        },
        {
            "suite": "saga",
            "backend": "memory store",
            "metric": "KB per completed instance (max RSS)",
            "value": round(per_instance_kb, 2),
        },
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "saga.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
