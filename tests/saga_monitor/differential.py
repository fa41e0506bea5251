"""A differential check of the saga monitor's apply path between two trees (not a test).

Random multi-instance saga scripts (seeded: the same scripts on every run) are applied to a
memory store and to a SQLite store through :meth:`Correlator.apply_many` (batches of random
sizes, watermarks, ticks, redeliveries, duplicate messages, orphans, clocks running ahead and
behind, SQLite stores closed and reopened), and through :meth:`SagaMonitor.apply_many`; every
outcome (alerts with their ids and data, anomalies, step durations), the stored documents, the
orphans and the outbox are hashed, one line per script. Run it in each tree and compare:

    cd <the old tree> && PYTHONPATH=. python -m tests.saga_monitor.differential 600 > /tmp/base.txt
    cd <your tree> && PYTHONPATH=. python -m tests.saga_monitor.differential 600 | diff - /tmp/base.txt

An optimisation of the apply path must leave every line as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from broker import Bus, Event
from saga_monitor import Correlator, Definitions, MemoryStore, SagaMonitor, load_definitions
from saga_monitor.correlator import Received
from saga_monitor.machine import Outcome
from saga_monitor.store import SagaStore
from saga_monitor.store_sql import SqlSagaStore

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
#: Two sagas sharing event types, one correlated by a path into data.
SAGAS = """
topics: [orders, payments, inventory, shipping]
sagas:
  - name: order-fulfilment
    start: [order.placed]
    steps:
      - {event: payment.authorized, within: 30s, compensation: payment.refunded}
      - {event: inventory.reserved, within: 30s, compensation: inventory.released}
      - {event: order.shipped, within: 2h}
    complete: [order.shipped]
    fail: [payment.failed, inventory.unavailable]
    compensated: [order.cancelled]
    deadline: 1d
    compensation_within: 5m
  - name: billing
    correlation: data.orderId
    start: [order.placed]
    steps:
      - {event: invoice.sent, within: 60s, compensation: invoice.voided}
      - {event: payment.authorized, within: 120s}
    complete: [payment.authorized]
    fail: [payment.failed]
    grace: 90s
"""
VOCABULARY = [
    "order.placed",
    "payment.authorized",
    "inventory.reserved",
    "order.shipped",
    "payment.failed",
    "inventory.unavailable",
    "payment.refunded",
    "inventory.released",
    "order.cancelled",
    "invoice.sent",
    "invoice.voided",
    "payment.disputed",
]
#: (event index, broker position, redelivered flag) in delivery order.
Deliveries = list[tuple[int, str, bool]]


def script(rng: random.Random) -> tuple[list[Event], Deliveries]:
    """A few instances' events, maybe caused by each other, and the order they are delivered
    in (shuffled or in time order), with redeliveries and second messages of some."""
    events: list[Event] = []
    for corr in [f"o-{k}" for k in range(rng.randint(1, 4))]:
        for k in range(rng.randint(1, 9)):
            events.append(_event(rng, corr, k, events))
    order = list(range(len(events)))
    if rng.random() < 0.7:
        rng.shuffle(order)
    else:
        order.sort(key=lambda n: events[n].time or T0)
    deliveries: Deliveries = []
    for n in order:
        deliveries.append((n, f"p{n}", False))
        dice = rng.random()
        if dice < 0.08:
            deliveries.append((n, f"p{n}", True))  # the same message again
        elif dice < 0.14:
            deliveries.append((n, f"q{n}", False))  # a second message: a duplicate
    return events, deliveries


def _event(rng: random.Random, corr: str, k: int, earlier: list[Event]) -> Event:
    kind = "order.placed" if k == 0 and rng.random() < 0.85 else rng.choice(VOCABULARY)
    seconds = rng.uniform(0, 700) if k else rng.uniform(0, 50)
    extensions: dict[str, Any] = {}
    if rng.random() < 0.95:
        extensions["correlationid"] = corr
    if earlier and rng.random() < 0.25:
        extensions["causationid"] = rng.choice(earlier).id
    if rng.random() < 0.1:
        trace, span = rng.getrandbits(128), rng.getrandbits(64)
        extensions["traceparent"] = f"00-{trace:032x}-{span:016x}-01"
    data = rng.choice(
        [
            {"orderId": corr, "total": 42.5},
            {"orderId": corr},
            None,
            [1, 2],
            "text",
            {"orderId": corr, "big": "x" * rng.choice([10, 3000])},
        ]
    )
    return Event(
        type=kind,
        source=f"svc{rng.randint(0, 2)}",
        id=f"{corr}-e{k}",
        time=T0 + timedelta(seconds=seconds),
        data=data,
        extensions=extensions,
    )


def outcome_doc(outcome: Outcome) -> dict[str, Any]:
    return {
        "alerts": [[a.event_id, a.type, a.data] for a in outcome.alerts],
        "anomalies": [a.to_dict() for a in outcome.anomalies],
        "steps": outcome.step_seconds,
        "changed": outcome.changed,
    }


def store_doc(store: SagaStore) -> dict[str, Any]:
    instances = sorted(store.instances(limit=10**6), key=lambda i: (i.saga, i.correlation_id))
    orphans = [[s, c, o.id, o.source, o.type, str(o.time)] for s, c, o in store.orphans()]
    return {
        "instances": [i.to_json() for i in instances],
        "orphans": sorted(json.dumps(orphan) for orphan in orphans),
        "pending": [[a.event_id, a.to_dict()] for _, a in store.pending_alerts(10**6)],
        "counts": sorted(store.counts().items()),
    }


def run_store(
    definitions: Definitions,
    events: list[Event],
    deliveries: Deliveries,
    rng: random.Random,
    store: SagaStore,
    reopen: Callable[[SagaStore], SagaStore] | None,
) -> list[Any]:
    """Batches through a Correlator, with ticks and (for SQLite) reopenings."""
    correlator = Correlator(definitions)
    log: list[Any] = []
    i = 0
    while i < len(deliveries):
        size = rng.randint(1, 6)
        batch, i = deliveries[i : i + size], i + size
        now = T0 + timedelta(seconds=rng.uniform(0, 800))
        watermark = None if rng.random() < 0.3 else T0 + timedelta(seconds=rng.uniform(0, 700))
        skew = rng.choice([0.0, 0.0, 0.0, -2.5])
        items = [Received(events[n], "t", position, again, skew) for n, position, again in batch]
        outcomes = correlator.apply_many(store, items, now=now, watermark=watermark)
        log.append([outcome_doc(o) for o in outcomes])
        if watermark is not None and rng.random() < 0.4:
            log.append(outcome_doc(correlator.tick(store, watermark)))
        if reopen is not None and rng.random() < 0.2:
            store = reopen(store)
    log.append(outcome_doc(correlator.tick(store, T0 + timedelta(days=3))))
    log.append(store_doc(store))
    log.append(correlator.uncorrelated)
    return log


async def run_monitor(
    definitions: Definitions, events: list[Event], deliveries: Deliveries, rng: random.Random
) -> list[Any]:
    """Batches through SagaMonitor.apply_many (its clock corrections, metrics, outcomes)."""
    store = MemoryStore()
    clock = [T0]
    async with Bus("memory://", source="differential") as bus:
        monitor = SagaMonitor(definitions, bus, store, alerts_topic=None, clock=lambda: clock[0])
        log: list[Any] = []
        i = 0
        while i < len(deliveries):
            size = rng.randint(1, 8)
            batch, i = deliveries[i : i + size], i + size
            clock[0] = T0 + timedelta(seconds=rng.uniform(0, 800))
            held = rng.random() < 0.3
            monitor.verdicts_at = None if held else T0 + timedelta(seconds=rng.uniform(0, 700))
            items = [Received(events[n], "t", position, again) for n, position, again in batch]
            log.append([outcome_doc(o) for o in await monitor.apply_many(items)])
        log.append(outcome_doc(monitor.correlator.tick(store, T0 + timedelta(days=3))))
        log.append(store_doc(store))
        log.append(monitor.clocks.offsets())
    return log


def digest(definitions: Definitions, seed: int, tmp: Path) -> str:
    """The hash of everything script ``seed`` gives on the three paths."""
    rng = random.Random(seed)
    events, deliveries = script(rng)
    again = rng.random()
    results: dict[str, Any] = {}
    results["memory"] = run_store(
        definitions, events, deliveries, random.Random(again), MemoryStore(), None
    )
    url = f"sqlite:///{tmp}/s{seed}.db"

    def reopen(store: SagaStore) -> SagaStore:
        store.close()
        return SqlSagaStore(url)

    results["sqlite"] = run_store(
        definitions, events, deliveries, random.Random(again), SqlSagaStore(url), reopen
    )
    results["monitor"] = asyncio.run(
        run_monitor(definitions, events, deliveries, random.Random(again))
    )
    text = json.dumps(results, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def main(count: int) -> None:
    total = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sagas.yaml"
        path.write_text(SAGAS)
        definitions = load_definitions(path)
        for seed in range(count):
            line = digest(definitions, seed, Path(tmp))
            total.update(line.encode())
            print(seed, line)
    print("total", total.hexdigest()[:16])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 600)
