"""What every broker benchmark shares: concurrent publishing, paced latency runs, percentiles."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Latencies", "paced", "percentile", "spread"]


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
    """Send ``latencies.expected`` events at ``rate`` per second; the latencies once all arrived."""
    tasks = []
    started = time.perf_counter()
    for i in range(latencies.expected):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(time.perf_counter())))
    await asyncio.gather(*tasks)
    await asyncio.wait_for(latencies.complete.wait(), timeout)
    return list(latencies)


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
