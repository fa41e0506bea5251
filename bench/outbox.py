"""Outbox relays: throughput (rows/s relayed from a 20,000-row backlog) and latency from COMMIT
issued to the broker's acceptance (p50/p99 at a steady 1,000 commits/s), for the SQLite and
PostgreSQL relays, to the memory, embedded SQLite and (when the Tansu binary is there) Kafka
brokers. The PostgreSQL rows also carry a baseline measured in the same run: a plain polling relay
on the same table (``created_at`` cursor) publishing through the same bus and router, so only the
change source differs.

    python -m bench.outbox [sqlite] [postgres]     # writes bench/results/outbox.json
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker import Bus, Event, adapter_from_url
from connectors import add_event, init_outbox
from connectors.relay import Change, Relay, Source
from connectors.routing import OutboxRow, Router
from connectors.runtime import build_source
from devservers import ServerUnavailableError
from devservers.databases import POSTGRES_URL
from devservers.kafka import KafkaServer

RESULTS = Path(__file__).parent / "results"
BACKLOG = 20_000
RATE = 1_000
SECONDS = 4


class TimedAdapter:
    """Delegates to a real adapter and records when each event was accepted."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.accepted: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def publish(self, topic: str, event: Event, *, ttl: float | None = None) -> None:
        await self.inner.publish(topic, event, ttl=ttl)
        self.accepted[event.id] = time.perf_counter()


class PollingSource:
    """Baseline: poll the PostgreSQL table on a (created_at, id) cursor (not commit-ordered)."""

    def __init__(self, url: str, table: str) -> None:
        self.url, self.table, self.name = url, table, f"polling:{table}"
        self.cursor: tuple[datetime, str] = (datetime(1970, 1, 1, tzinfo=UTC), "")

    async def open(self) -> None:
        import psycopg2

        self.conn = psycopg2.connect(POSTGRES_URL)
        self.conn.autocommit = True

    def _fetch(self) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT id::text, aggregatetype, aggregateid, type, payload::text, "
                f'headers::text, created_at FROM "{self.table}" WHERE (created_at, id::text) > '
                "(%s, %s) ORDER BY created_at, id LIMIT 1000",
                self.cursor,
            )
            return list(cur.fetchall())

    async def next_change(self, timeout: float) -> Change | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self._fetch()
            if rows:
                self.cursor = (rows[-1][6], rows[-1][0])
                return Change([OutboxRow(*r) for r in rows], self.cursor, rows[-1][6])
            await asyncio.sleep(0.01)
        return None

    async def confirm(self, change: Change) -> None:
        return None

    async def heartbeat(self) -> None:
        return None

    async def close(self) -> None:
        self.conn.close()


def fresh_outbox(kind: str, workdir: Path) -> tuple[str, str, str]:
    suffix = uuid.uuid4().hex[:8]
    table, slot = f"bench_outbox_{suffix}", f"bench_slot_{suffix}"
    url = POSTGRES_URL if kind == "postgres" else f"sqlite:///{workdir}/app-{suffix}.db"
    init_outbox(url, table, slot=slot)
    return url, table, slot


def drop_outbox(url: str, table: str, slot: str) -> None:
    if not url.startswith("postgresql"):
        return
    import psycopg2

    conn = psycopg2.connect(POSTGRES_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE slot_name = %s", (slot,))  # fmt: skip
        cur.execute(f'DROP PUBLICATION IF EXISTS "choreo_outbox_{table}"')
        cur.execute(f'DROP TABLE IF EXISTS "{table}"')
        cur.execute("DELETE FROM choreo_outbox_offsets WHERE relay = %s", (f"postgres:{slot}",))
    conn.close()


def connect(url: str) -> Any:
    if url.startswith("postgresql"):
        import psycopg2

        return psycopg2.connect(POSTGRES_URL)
    import sqlite3

    return sqlite3.connect(url.removeprefix("sqlite:///"))


def write_backlog(url: str, table: str, count: int) -> None:
    conn = connect(url)
    for start in range(0, count, 100):
        for n in range(start, start + 100):
            add_event(conn, table=table, aggregatetype="order", aggregateid=f"o{n % 64}",
                      type="order.placed", payload={"seq": n, "pad": "x" * 150})  # fmt: skip
        conn.commit()
    conn.close()


def steady_writer(
    url: str, table: str, committed: dict[str, float], go: threading.Event, stop: threading.Event
) -> None:
    conn = connect(url)
    go.wait()
    started = time.perf_counter()
    for n in range(RATE * SECONDS):
        wait = started + n / RATE - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        event_id = add_event(conn, table=table, aggregatetype="order", aggregateid=f"o{n % 64}",
                             type="order.placed", payload={"seq": n})  # fmt: skip
        committed[event_id] = time.perf_counter()  # COMMIT issued (its duration is included)
        conn.commit()
        if stop.is_set():
            break
    conn.close()


async def run_relay_until(
    relay: Relay, done: Any, timeout: float = 120, started: threading.Event | None = None
) -> float:
    """Run ``relay`` until ``done()``; ``started`` is set once it is reading (after warm-up)."""
    task = asyncio.create_task(relay.run())
    if started is not None:
        await asyncio.sleep(1.0)  # connect, open the slot, first poll: not part of the latency
        started.set()
    began = time.perf_counter()
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - began
    relay.stop()
    await task
    return elapsed


def make_relay(source: Source, broker: str) -> tuple[Relay, TimedAdapter]:
    timed = TimedAdapter(adapter_from_url(broker))
    bus = Bus(timed, source="bench")
    return Relay(source, bus, Router(), idle_timeout=0.05), timed


async def throughput(kind: str, broker: str, workdir: Path, polling: bool = False) -> float:
    url, table, slot = fresh_outbox(kind, workdir)
    try:
        write_backlog(url, table, BACKLOG)
        source = PollingSource(url, table) if polling else build_source(url, table=table, slot=slot)
        relay, _ = make_relay(source, broker)
        elapsed = await run_relay_until(relay, lambda: relay.stats.relayed >= BACKLOG)
        return BACKLOG / elapsed
    finally:
        drop_outbox(url, table, slot)


async def latency(
    kind: str, broker: str, workdir: Path, polling: bool = False
) -> tuple[float, float]:
    url, table, slot = fresh_outbox(kind, workdir)
    try:
        source = PollingSource(url, table) if polling else build_source(url, table=table, slot=slot)
        relay, timed = make_relay(source, broker)
        committed: dict[str, float] = {}
        go, stop = threading.Event(), threading.Event()
        writer = threading.Thread(target=steady_writer, args=(url, table, committed, go, stop))
        writer.start()
        total = RATE * SECONDS
        await run_relay_until(
            relay, lambda: len(timed.accepted) >= total, timeout=SECONDS + 60, started=go
        )
        stop.set()
        writer.join()
        gaps = sorted(
            (timed.accepted[i] - committed[i]) * 1000 for i in committed if i in timed.accepted
        )
        return statistics.median(gaps), gaps[int(len(gaps) * 0.99) - 1]
    finally:
        drop_outbox(url, table, slot)


@contextlib.contextmanager
def tansu() -> Iterator[str | None]:
    """A spawned Tansu broker's URL (no test tuning), or None when none can be spawned."""
    server = KafkaServer()
    try:
        server.start()
    except ServerUnavailableError as exc:
        print(f"skipping Kafka: {exc}", flush=True)
        yield None
        return
    try:
        yield server.address
    finally:
        server.stop()


async def main(kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, tansu() as kafka:
        workdir = Path(tmp)
        brokers = {"memory": "memory://bench", "sqlite": f"sqlite:///{workdir}/broker.db"}
        if kafka:
            brokers["kafka"] = kafka
        brokers["rabbitmq"] = "amqp://guest:guest@127.0.0.1:5672/"
        brokers["nats"] = "nats://127.0.0.1:4222"
        for kind in kinds:
            for name, broker in brokers.items():
                backend = f"{kind} -> {name}"
                try:
                    async with Bus(broker):
                        pass
                except Exception as exc:  # a broker that is not running: say so, go on
                    print(f"skipping {backend}: {exc}", flush=True)
                    continue
                rate = await throughput(kind, broker, workdir)
                p50, p99 = await latency(kind, broker, workdir)
                row = {"suite": "outbox", "backend": backend}
                if kind == "postgres":
                    base_rate = await throughput(kind, broker, workdir, polling=True)
                    base_p50, base_p99 = await latency(kind, broker, workdir, polling=True)
                    rows += [
                        {**row, "metric": "rows/s relayed", "choreograph": rate,
                         "baseline": base_rate},
                        {**row, "metric": "commit->accept p50 ms", "choreograph": p50,
                         "baseline": base_p50},
                        {**row, "metric": "commit->accept p99 ms", "choreograph": p99,
                         "baseline": base_p99},
                    ]  # fmt: skip
                else:
                    rows += [
                        {**row, "metric": "rows/s relayed", "value": rate},
                        {**row, "metric": "commit->accept p50 ms", "value": p50},
                        {**row, "metric": "commit->accept p99 ms", "value": p99},
                    ]
                print(json.dumps(rows[-3:]), flush=True)
    return [{k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


if __name__ == "__main__":
    results = asyncio.run(main(tuple(sys.argv[1:]) or ("sqlite", "postgres")))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "outbox.json").write_text(json.dumps(results, indent=2) + "\n")
