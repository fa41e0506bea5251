"""Embedded backends: SQLite publish/consume throughput (1 KB events, 1 and 4 processes) against a
hand-written sqlite3 queue, and the memory adapter against a bare ``asyncio.Queue``, side by side
in one run.

    python -m bench.embedded            # writes bench/results/embedded.json
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from broker import Bus, Event

EVENT_BYTES = 1024
RESULTS = Path(__file__).parent / "results"


def _payload() -> dict[str, str]:
    return {"blob": "x" * (EVENT_BYTES - 200)}  # ~1 KB once wrapped as a CloudEvent


async def _publish(url: str, count: int, in_flight: int = 64) -> float:
    data = _payload()
    async with Bus(url) as bus:
        started = time.perf_counter()
        queue = iter(range(count))

        async def worker() -> None:
            for n in queue:
                await bus.publish("bench", type="bench.event", data=data, key=f"k{n % 64}")

        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return count / (time.perf_counter() - started)


async def _consume(url: str, count: int, group: str) -> float:
    done = asyncio.Event()
    seen = 0

    async def handler(event: Event) -> None:
        nonlocal seen
        seen += 1
        if seen >= count:
            done.set()

    async with Bus(url) as bus:
        started = time.perf_counter()
        await bus.subscribe("bench", handler, group=group, from_beginning=True, prefetch=500)
        await done.wait()
        return count / (time.perf_counter() - started)


def _publish_process(url: str, count: int, out: Any) -> None:
    out.put(asyncio.run(_publish(url, count)))


def _consume_process(url: str, group: str, out: Any, stop_at: float) -> None:
    last_event = 0.0

    async def run() -> int:
        nonlocal last_event
        seen = 0

        async def handler(event: Event) -> None:
            nonlocal seen, last_event
            seen += 1
            last_event = time.time()

        async with Bus(url) as bus:
            await bus.subscribe("bench", handler, group=group, from_beginning=True, prefetch=500)
            idle_since = time.monotonic()
            last = 0
            while time.time() < stop_at:
                await asyncio.sleep(0.05)
                if seen != last:
                    last, idle_since = seen, time.monotonic()
                elif seen and time.monotonic() - idle_since > 1.0:
                    break
        return seen

    out.put((asyncio.run(run()), last_event))


def _raw_sqlite(path: str, count: int) -> tuple[float, float]:
    """Hand-written baseline: INSERT+COMMIT per 1 KB row (WAL, synchronous=NORMAL), then read
    it back in batches of 500, committing an offset per batch."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, body TEXT)")
    db.execute("CREATE TABLE offsets (grp TEXT PRIMARY KEY, seq INTEGER)")
    body = json.dumps(_payload())
    started = time.perf_counter()
    for _ in range(count):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO log (body) VALUES (?)", (body,))
        db.execute("COMMIT")
    publish = count / (time.perf_counter() - started)
    started = time.perf_counter()
    position, seen = 0, 0
    while seen < count:
        rows = db.execute(
            "SELECT seq, body FROM log WHERE seq > ? ORDER BY seq LIMIT 500", (position,)
        ).fetchall()
        for seq, text in rows:
            json.loads(text)
            position, seen = seq, seen + 1
        db.execute("INSERT OR REPLACE INTO offsets VALUES ('g', ?)", (position,))
    consume = count / (time.perf_counter() - started)
    db.close()
    return publish, consume


def sqlite_rows(count: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        raw_publish, raw_consume = _raw_sqlite(f"{tmp}/raw.db", count)
        url = f"sqlite:///{tmp}/single.db?poll_interval=0.01"
        published = asyncio.run(_publish(url, count))
        rows.append(_row("sqlite", "publish/s, 1 process", published, raw_publish))
        consumed = asyncio.run(_consume(url, count, "g1"))
        rows.append(_row("sqlite", "consume/s, 1 process", consumed, raw_consume))
        url4 = f"sqlite:///{tmp}/multi.db?poll_interval=0.01"
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        started = time.perf_counter()
        procs = [
            context.Process(target=_publish_process, args=(url4, count // 4, out)) for _ in range(4)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            out.get()
        for proc in procs:
            proc.join()
        rows.append(
            _row("sqlite", "publish/s, 4 processes", count / (time.perf_counter() - started))
        )
        started_wall = time.time()
        stop_at = started_wall + 120
        procs = [
            context.Process(target=_consume_process, args=(url4, "g4", out, stop_at))
            for _ in range(4)
        ]
        for proc in procs:
            proc.start()
        results = [out.get() for _ in procs]
        for proc in procs:
            proc.join()
        total = sum(n for n, _ in results)
        elapsed = max(t for _, t in results) - started_wall  # includes process start-up
        rows.append(_row("sqlite", "consume/s, 4 processes", total / max(elapsed, 1e-6)))
    return rows


async def _queue_baseline(count: int) -> float:
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue(maxsize=1000)
    data = _payload()
    started = time.perf_counter()

    async def produce() -> None:
        for _ in range(count):
            await queue.put(data)

    async def consume() -> None:
        for _ in range(count):
            await queue.get()

    await asyncio.gather(produce(), consume())
    return count / (time.perf_counter() - started)


async def _memory_bus(count: int) -> float:
    data = _payload()
    done = asyncio.Event()
    seen = 0

    async def handler(event: Event) -> None:
        nonlocal seen
        seen += 1
        if seen >= count:
            done.set()

    async with Bus(f"memory://bench-{uuid.uuid4().hex}") as bus:
        await bus.subscribe("bench", handler, group="g", prefetch=1000)
        started = time.perf_counter()
        for n in range(count):
            await bus.publish("bench", type="bench.event", data=data, key=f"k{n % 64}")
        await done.wait()
        return count / (time.perf_counter() - started)


async def _memory_bus_batches(count: int, call: int = 500) -> float:
    """The same through the batch APIs: publish_many 500 a call, a batch handler."""
    data = _payload()
    done = asyncio.Event()
    seen = 0

    async def handler(events: list[Event]) -> None:
        nonlocal seen
        seen += len(events)
        if seen >= count:
            done.set()

    async with Bus(f"memory://bench-{uuid.uuid4().hex}") as bus:
        await bus.subscribe_batch("bench", handler, group="g")
        started = time.perf_counter()
        for first in range(0, count, call):
            items = [
                {"type": "bench.event", "data": data, "key": f"k{n % 64}"}
                for n in range(first, first + call)
            ]
            (await bus.publish_many("bench", items)).raise_for_failures()
        await done.wait()
        return count / (time.perf_counter() - started)


def memory_rows(count: int, rounds: int = 5) -> list[dict[str, Any]]:
    """Interleaved rounds, each in a fresh process state (a collected heap); medians and the
    spread of the per-round ratios, in wall time and in CPU time (``time.process_time``: what
    other processes on a loaded machine take does not count)."""
    measured: dict[str, list[float]] = {"queue": [], "single": [], "batches": []}
    cpu: dict[str, list[float]] = {"queue": [], "single": [], "batches": []}
    runs = {"queue": _queue_baseline, "single": _memory_bus, "batches": _memory_bus_batches}
    for _ in range(rounds):
        for name, run in runs.items():
            gc.collect()
            started = time.process_time()
            measured[name].append(asyncio.run(run(count)))
            cpu[name].append(count / (time.process_time() - started))
    rows = []
    for name, rates, metric in (
        ("single", measured, "publish+consume/s vs asyncio.Queue"),
        ("single", cpu, "publish+consume per CPU-second vs asyncio.Queue"),
        ("batches", measured, "publish_many+batch handler/s vs asyncio.Queue"),
        ("batches", cpu, "publish_many+batch handler per CPU-second vs asyncio.Queue"),
    ):
        ratios = [o / q for o, q in zip(rates[name], rates["queue"], strict=True)]
        row = _row(
            "memory", metric, statistics.median(rates[name]), statistics.median(rates["queue"])
        )
        row.update(rounds=rounds, spread=[round(min(ratios), 3), round(max(ratios), 3)])
        rows.append(row)
    return rows


def _row(backend: str, metric: str, value: float, baseline: float | None = None) -> dict[str, Any]:
    return {
        "suite": "embedded",
        "backend": backend,
        "metric": metric,
        "choreograph": round(value, 1),
        "baseline": None if baseline is None else round(baseline, 1),
    }


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rows = sqlite_rows(count) + memory_rows(count * 2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embedded.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
