"""Saga monitor throughput and memory: events correlated per second, end to end through a Bus,
and the memory it takes per tracked instance.

    python -m bench.saga                # writes bench/results/saga.json
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from importlib import resources
from pathlib import Path

from broker import Bus
from saga_monitor import MemoryStore, SQLiteStore, open_store, parse_definitions
from saga_monitor import bench as saga_bench
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


def _issue_metrics() -> list[dict[str, object]]:
    """The saga issue's own measures: decode included, memory store, SQLite group commits."""
    payloads = saga_bench.encoded_events(20_000, 5)
    memory = saga_bench.throughput(MemoryStore(), payloads)
    rates = {}
    for batch in (1, 16):
        with tempfile.TemporaryDirectory() as tmp:
            store = SQLiteStore(f"sqlite:///{Path(tmp) / 'sagas.db'}")
            rates[batch] = saga_bench.throughput(store, payloads[:20_000], batch)
            store.close()
    per_instance = saga_bench.bytes_per_instance(10_000)
    return [
        {
            "suite": "saga",
            "backend": "memory store",
            "metric": "events/s incl. decode (1 core)",
            "value": round(memory, 1),
        },
        {
            "suite": "saga",
            "backend": "sqlite store",
            "metric": "events/s, commits of 16",
            "value": round(rates[16], 1),
        },
        {
            "suite": "saga",
            "backend": "sqlite store",
            "metric": "events/s, commit per event",
            "value": round(rates[1], 1),
        },
        {
            "suite": "saga",
            "backend": "memory store",
            "metric": "bytes per active instance (5 events)",
            "value": round(per_instance, 1),
        },
    ]


def main() -> None:
    rows = _issue_metrics()
    with tempfile.TemporaryDirectory() as tmp:
        bus_rate = asyncio.run(_through_bus(tmp))
    rows.append(
        {
            "suite": "saga",
            "backend": "sqlite broker + store",
            "metric": "events/s, publish to applied",
            "value": round(bus_rate, 1),
        }
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "saga.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
