"""Saga monitor benchmark: ``python -m saga_monitor.bench [--sagas N]``.

Measures, on this machine and one core:

* events correlated per second with the in-memory store, including decoding each event from
  its structured CloudEvents JSON;
* the same with the SQLite store (one transaction per event, WAL, synchronous=NORMAL);
* memory per active instance with a five-event timeline (tracemalloc).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.envelope import Event
from saga_monitor.correlator import Correlator, Received
from saga_monitor.definitions import Definitions, SagaDefinition, Step
from saga_monitor.store import MemoryStore, Store
from saga_monitor.store_sql import SQLiteStore

__all__ = ["main"]

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
TYPES = [
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
                type=TYPES[step],
                source="bench",
                id=f"{n}-{step}",
                time=base + timedelta(seconds=step),
                data={"orderId": n, "total": 42.5},
                extensions={"correlationid": f"order-{n}"},
            )
            out.append(event.to_json().encode())
    return out


def throughput(store: Store, payloads: list[bytes], batch: int = 1) -> float:
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


def main(argv: list[str] | None = None) -> None:
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=20_000)
    args = parser.parse_args(argv)
    payloads = encoded_events(args.sagas, 5)
    decode = decode_only(payloads)
    memory = throughput(MemoryStore(), payloads)
    rates = {}
    for batch in (1, 16):
        with tempfile.TemporaryDirectory() as tmp:
            store = SQLiteStore(f"sqlite:///{Path(tmp) / 'sagas.db'}")
            rates[batch] = throughput(store, payloads[: min(len(payloads), 20_000)], batch)
            store.close()
    per_instance = bytes_per_instance(min(args.sagas, 10_000))
    print(f"decode only:  {decode:,.0f} events/s (Event.from_json)")
    print(f"memory store: {memory:,.0f} events/s ({len(payloads):,} events, decode included)")
    print(
        f"sqlite store: {rates[1]:,.0f} events/s one commit per event, "
        f"{rates[16]:,.0f} events/s in group commits of 16 (what the monitor does)"
    )
    print(f"memory per active instance (5-event timeline): {per_instance:,.0f} bytes")


if __name__ == "__main__":
    main()
