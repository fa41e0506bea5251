"""Saga monitor throughput and memory, on this machine and one core:

* events correlated per second with the in-memory store, including decoding each event from its
  structured CloudEvents JSON (and decoding alone, the envelope's share);
* the same with the SQLite store (one transaction per event, and group commits of 16 as the
  monitor does; WAL, synchronous=NORMAL);
* memory per active instance with a five-event timeline (tracemalloc);
* events per second end to end through a Bus on the embedded SQLite broker.

    python -m bench.saga [--sagas N]    # writes bench/results/saga.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

from broker import Bus, Event
from saga_monitor import (
    Correlator,
    Definitions,
    MemoryStore,
    SagaDefinition,
    SagaMonitor,
    SagaStore,
    SqlSagaStore,
    Step,
    open_saga_store,
    parse_definitions,
)
from saga_monitor.correlator import Received

RESULTS = Path(__file__).parent / "results"
SAGAS = 5_000
STEPS = ("order.placed", "inventory.reserved", "payment.authorized", "order.shipped")
TOPIC = {
    "order.placed": "orders",
    "inventory.reserved": "inventory",
    "payment.authorized": "payments",
    "order.shipped": "shipping",
}


SAGA = SagaDefinition(
    name="bench",
    start=("order.placed",),
    steps=(
        Step("payment.authorized", within=30.0, compensation="payment.refunded"),
        Step("inventory.reserved", within=30.0, compensation="inventory.released"),
        Step("label.printed", within=3600.0),
        Step("parcel.collected", within=3600.0),
        Step("order.shipped", within=7200.0),
    ),
    fail=("payment.failed",),
    deadline=86400.0,
)
SAGA_TYPES = [
    "order.placed",
    "payment.authorized",
    "inventory.reserved",
    "label.printed",
    "parcel.collected",
    "order.shipped",
]


def encoded_events(sagas: int, per_saga: int) -> list[bytes]:
    """Structured-mode JSON of ``per_saga`` events for each of ``sagas`` sagas, interleaved."""
    base = datetime.now(UTC)
    out = []
    for step in range(per_saga):
        for n in range(sagas):
            event = Event(
                type=SAGA_TYPES[step],
                source="bench",
                id=f"{n}-{step}",
                time=base + timedelta(seconds=step),
                data={"orderId": n, "total": 42.5},
                extensions={"correlationid": f"order-{n}"},
            )
            out.append(event.to_json().encode())
    return out


def throughput(store: SagaStore, payloads: list[bytes], batch: int = 1) -> float:
    """Events per second: decode plus correlate plus store, ``batch`` events per commit."""
    correlator = Correlator(Definitions((SAGA,)))
    now = datetime.now(UTC)
    started = time.perf_counter()
    for i in range(0, len(payloads), batch):
        items = [Received(Event.from_json(p), "orders") for p in payloads[i : i + batch]]
        correlator.apply_many(store, items, now=now)
    return len(payloads) / (time.perf_counter() - started)


def decode_only(payloads: list[bytes]) -> float:
    """Events per second of decoding alone (the envelope's share of the work)."""
    started = time.perf_counter()
    for payload in payloads:
        Event.from_json(payload)
    return len(payloads) / (time.perf_counter() - started)


def bytes_per_instance(sagas: int) -> float:
    """Memory held by the memory store per active instance with a 5-event timeline."""
    payloads = [Event.from_json(p) for p in encoded_events(sagas, 5)]
    correlator = Correlator(Definitions((SAGA,)))
    now = datetime.now(UTC)
    gc.collect()
    tracemalloc.start()
    store = MemoryStore()
    for event in payloads:
        correlator.apply(store, event, topic="orders", now=now)
    gc.collect()
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(store.data) == sagas
    return used / sagas


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
            open_saga_store(f"sqlite:///{tmp}/sagas2.db"),  # type: ignore[arg-type]
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


def _issue_metrics(sagas: int) -> list[dict[str, object]]:
    """The saga issue's own measures: decode included, memory store, SQLite group commits."""
    payloads = encoded_events(sagas, 5)
    print(f"decode only: {decode_only(payloads):,.0f} events/s (Event.from_json)")
    memory = throughput(MemoryStore(), payloads)
    rates = {}
    for batch in (1, 16):
        with tempfile.TemporaryDirectory() as tmp:
            store = SqlSagaStore(f"sqlite:///{Path(tmp) / 'sagas.db'}")
            rates[batch] = throughput(store, payloads[:20_000], batch)
            store.close()
    per_instance = bytes_per_instance(min(sagas, 10_000))
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Saga monitor throughput and memory.")
    parser.add_argument("--sagas", type=int, default=20_000, help="Sagas of 5 events each.")
    rows = _issue_metrics(parser.parse_args(argv).sagas)
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
