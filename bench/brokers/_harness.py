"""What every broker benchmark shares: concurrent publishing, paced latency runs, percentiles,
interleaved rounds, and result rows with medians and the spread between rounds."""

from __future__ import annotations

import asyncio
import functools
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "CEILING_METRIC",
    "Arrivals",
    "Contender",
    "Latencies",
    "ceiling_row",
    "interleaved",
    "paced",
    "percentile",
    "row",
    "spread",
    "stamped",
]

#: The row setting ``publish_many`` against the most a raw client gets the broker to store
#: (the same events, CALL a call, one call after the other; see each suite's
#: ``publish_many_ceiling``).
CEILING_METRIC = "publish_many/s vs raw best batch (500 a call)"


async def spread(
    count: int, publish: Callable[[int], Awaitable[Any]], in_flight: int = 64
) -> float:
    """Run ``publish(i)`` for every i with ``in_flight`` concurrent workers; events per second."""

    async def worker(offset: int) -> None:
        for i in range(offset, count, in_flight):
            await publish(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(in_flight)))
    return count / (time.perf_counter() - started)


class Arrivals:
    """Events a consumer handled: ``done`` is set once ``expected`` arrived. The rate runs from
    the first arrival to the last, so joining a group or opening a consumer does not count."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first = self.last = 0.0
        self.first_count = 0
        self.done = asyncio.Event()

    def add(self, events: int = 1) -> None:
        """Note ``events`` handled now."""
        now = time.perf_counter()
        if not self.count:
            self.first, self.first_count = now, events
        self.count += events
        if self.count >= self.expected and not self.done.is_set():
            self.last = now
            self.done.set()

    async def rate(self) -> float:
        """Events per second once all arrived (those after the first handler call)."""
        await self.done.wait()
        return (self.count - self.first_count) / max(self.last - self.first, 1e-9)


class Latencies(list[float]):
    """End-to-end latencies in ms, with an event set once ``expected`` of them arrived."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.complete = asyncio.Event()

    def record(self, sent: float) -> None:
        """Record an event sent at ``sent`` (a ``time.perf_counter()`` value) arriving now."""
        self.append((time.perf_counter() - sent) * 1000)
        if len(self) >= self.expected:
            self.complete.set()


async def paced(
    send: Callable[[float], Awaitable[Any]],
    latencies: Latencies,
    rate: float = 1_000,
    timeout: float = 60,
) -> list[float]:
    """Send ``latencies.expected`` events at ``rate`` per second; the latencies once all arrived.

    The heap is collected and frozen first (``gc.freeze``): a full collection of the ~60k
    objects the bench process holds after its imports (three clients, FastStream, pydantic)
    takes 55-130 ms on the 2-core test machine and otherwise landed in about one paced run
    in three, for every contender alike (raw clients too), as a p99 stall of tens of ms.
    Services do the same after start-up; see docs/performance.md."""
    gc.collect()
    gc.freeze()
    tasks = []
    try:
        started = time.perf_counter()
        for i in range(latencies.expected):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(time.perf_counter())))
        await asyncio.gather(*tasks)
        await asyncio.wait_for(latencies.complete.wait(), timeout)
    finally:
        gc.unfreeze()
    return list(latencies)


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- rounds and rows ---------------------------------------------------------------------------

Contender = Callable[[], Awaitable[float]]


async def interleaved(contenders: dict[str, Contender], rounds: int) -> dict[str, list[float]]:
    """Run every contender once per round, each round in a rotated order (no position bias:
    the machine is shared); the results of each contender, round by round."""
    names = list(contenders)
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        for k in range(len(names)):
            name = names[(round_ + k) % len(names)]
            results[name].append(await contenders[name]())
    return results


def row(
    backend: str, metric: str, results: dict[str, list[float]], *, latency: bool = False
) -> dict[str, Any]:
    """A result row: each contender's median over the rounds, and the spread of choreograph
    against the raw client round by round (ratios; added milliseconds for a latency)."""
    medians = {name: statistics.median(values) for name, values in results.items()}
    ours, raw = results["choreograph"], results["raw"]
    if latency:
        per_round = [o - r for o, r in zip(ours, raw, strict=True)]
    else:
        per_round = [o / r for o, r in zip(ours, raw, strict=True) if r]
    fast = medians.get("faststream")
    out = {
        "suite": "brokers",
        "backend": backend,
        "metric": metric,
        "raw": round(medians["raw"], 2),
        "choreograph": round(medians["choreograph"], 2),
        "faststream": None if fast is None else round(fast, 2),
        "rounds": len(ours),
        "spread": [round(min(per_round), 2), round(max(per_round), 2)],
    }
    print(
        f"{backend:>9} {metric:>28}  raw {medians['raw']:10.2f}  choreograph "
        f"{medians['choreograph']:10.2f}  faststream {fast or 0:10.2f}  "
        f"per round {[round(x, 2) for x in per_round]}",
        flush=True,
    )
    return out


def ceiling_row(rows: list[dict[str, Any]]) -> None:
    """Note on the ceiling row how many times our single publish of the same run the ceiling
    is (``ceiling_x_single``): whether ``publish_many`` at 3x single is reachable at all."""
    by_metric = {r["metric"]: r for r in rows}
    ceiling, single = by_metric.get(CEILING_METRIC), by_metric.get("publish/s")
    if ceiling is not None and single is not None and single["choreograph"]:
        ceiling["ceiling_x_single"] = round(ceiling["raw"] / single["choreograph"], 2)
        print(f"{'':>9} {'ceiling / our single':>28}  {ceiling['ceiling_x_single']:.2f}x")


# -- choreograph's side, the same for every broker ----------------------------------------------


def stamped(count: int, data: Any) -> list[Any]:
    """``count`` events as ``Bus.publish_many`` stamps a list of ``{"type": "bench", "data":
    data}`` from source "bench": a new id and trace each, one time: what the ceiling rows
    write, so that they carry our publish_many's bytes (ids, time and trace context
    included), not a shorter record."""
    from datetime import UTC, datetime

    from broker.context import new_traceparent
    from broker.envelope import new_event

    at = datetime.now(UTC)
    return [
        new_event("bench", "bench", data, None, {"traceparent": new_traceparent()}, at)
        for _ in range(count)
    ]


async def publish_many_bus(url: str, topic: str, count: int, call: int, data: Any) -> float:
    """``count`` events through ``Bus.publish_many``, ``call`` a call; events per second."""
    from broker import Bus

    async with Bus(url, source="bench") as bus:
        started = time.perf_counter()
        for _ in range(0, count, call):
            result = await bus.publish_many(topic, [{"type": "bench", "data": data}] * call)
            result.raise_for_failures()
        return count / (time.perf_counter() - started)


async def consume_bus(
    url: str,
    topic: str,
    group: str,
    count: int,
    *,
    prefetch: int = 100,
    batch: int | None = None,
    from_beginning: bool = True,
) -> float:
    """The rate at which a new group handles ``count`` stored events: one at a time, or in
    lists of up to ``batch`` (``subscribe_batch``)."""
    from broker import Bus, Event

    arrivals = Arrivals(count)

    async def one(event: Event) -> None:
        arrivals.add()

    async def many(events: list[Event]) -> None:
        arrivals.add(len(events))

    async with Bus(url) as bus:
        if batch is None:
            await bus.subscribe(
                topic, one, group=group, prefetch=prefetch, from_beginning=from_beginning
            )
        else:
            await bus.subscribe_batch(
                topic, many, group=group, max_batch=batch, from_beginning=from_beginning
            )
        return await arrivals.rate()


async def latency_rows(
    backend: str, runs: dict[str, Callable[[], Awaitable[list[float]]]], rounds: int
) -> list[dict[str, Any]]:
    """p50 and p99 rows from ``rounds`` interleaved paced runs of each contender."""
    samples: dict[str, list[list[float]]] = {name: [] for name in runs}

    async def measure(name: str) -> float:
        samples[name].append(await runs[name]())
        return 0.0

    await interleaved({name: functools.partial(measure, name) for name in runs}, rounds)
    return [
        row(backend, metric, {k: [stat(s) for s in v] for k, v in samples.items()}, latency=True)
        for metric, stat in (("e2e p50 ms", statistics.median), ("e2e p99 ms", _p99))
    ]


def _p99(values: list[float]) -> float:
    return percentile(values, 0.99)
