"""Helpers shared by the relay tests: run a relay in this process, collect what it published."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from broker import Bus, Event
from connectors.relay import STILL_DOWN_EVERY, Relay
from connectors.routing import Router
from connectors.runtime import build_source
from tests.connectors.conftest import OutboxDB
from tests.helpers import Collector, eventually

__all__ = ["Collector", "collecting", "eventually", "memory_broker", "order_rows", "running_relay"]


def memory_broker() -> str:
    return f"memory://outbox-{uuid.uuid4().hex}"


def order_rows(
    count: int, *, aggregates: int = 1, start: int = 0, **extra: Any
) -> list[dict[str, Any]]:
    """``count`` order events spread over ``aggregates`` ids, payload ``{"seq": n}``."""
    return [
        {
            "aggregatetype": "order",
            "aggregateid": f"o{n % aggregates}",
            "type": "order.placed",
            "payload": {"seq": n},
            **extra,
        }
        for n in range(start, start + count)
    ]


class RelayRun:
    """A relay running in this process; :meth:`until` waits and surfaces a relay failure."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.task = asyncio.create_task(relay.run())

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        def check() -> bool:
            if self.task.done():
                self.task.result()  # raises the relay's error
                raise AssertionError(f"the relay stopped before {what}")
            return condition()

        await eventually(check, timeout=timeout, what=what)


@contextlib.asynccontextmanager
async def running_relay(
    outbox: OutboxDB,
    broker_url: str,
    *,
    still_down_every: float = STILL_DOWN_EVERY,
    **router_options: Any,
) -> AsyncIterator[RelayRun]:
    """A relay for ``outbox`` running in this process until the block ends."""
    source = build_source(outbox.url, table=outbox.table, slot=outbox.slot, name=outbox.name)
    router = Router(source="choreo-outbox/test", **router_options)
    bus = Bus(broker_url, source="test")
    relay = Relay(source, bus, router, idle_timeout=0.2, still_down_every=still_down_every)
    run = RelayRun(relay)
    try:
        yield run
    finally:
        run.relay.stop()
        await run.task


@contextlib.asynccontextmanager
async def collecting(broker_url: str, *topics: str) -> AsyncIterator[dict[str, Collector]]:
    """One collector per topic, subscribed from the beginning in group ``checker``."""
    collectors = {topic: Collector() for topic in topics}
    async with Bus(broker_url, source="checker") as bus:
        for topic, collector in collectors.items():
            await bus.subscribe(topic, collector, group="checker", from_beginning=True)
        yield collectors


def seqs(events: list[Event]) -> list[int]:
    return [int(e.data["seq"]) for e in events]
