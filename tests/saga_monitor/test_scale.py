"""Two monitors share the load through a Kafka consumer group and one PostgreSQL store."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from broker import Bus
from saga_monitor import SagaStore, open_saga_store, parse_definitions
from saga_monitor.monitor import SagaMonitor
from tests.saga_monitor.test_store import PG_URL

HAPPY = ("order.placed", "payment.authorized", "inventory.reserved", "order.shipped")
REFUNDED = ("order.placed", "payment.authorized", "inventory.unavailable", "payment.refunded")


@pytest.fixture
def pg_store_url() -> Iterator[str]:
    """A PostgreSQL store URL in a schema of its own (dropped afterwards)."""
    url = f"{PG_URL}?schema=saga_scale_{uuid.uuid4().hex[:12]}"
    yield url
    cleaner = open_saga_store(url)
    cleaner.drop_schema()  # type: ignore[attr-defined]
    cleaner.close()


def states(store: SagaStore) -> dict[str, tuple[str, int, int]]:
    return {
        i.correlation_id: (i.state, len(i.timeline), len(i.anomalies))
        for i in store.instances(limit=10_000)
    }


@pytest.mark.kafka
@pytest.mark.postgres
async def test_two_monitors_on_kafka_handle_every_instance_exactly_once(
    kafka_url: str, pg_store_url: str
) -> None:
    """Partitioned by correlation id, each event lands once: exact states, no anomalies."""
    topic = f"sagas-{uuid.uuid4().hex[:8]}"
    definitions = parse_definitions(
        f"topics: [{topic}]\nsagas:\n  - name: orders\n    start: order.placed\n"
        "    steps:\n      - {event: payment.authorized, compensation: payment.refunded}\n"
        "      - inventory.reserved\n      - order.shipped\n"
        "    fail: [inventory.unavailable]\n"
    )
    monitors: list[SagaMonitor] = []
    buses: list[Bus] = []
    stores: list[SagaStore] = []
    try:
        for _ in range(2):
            bus = Bus(kafka_url, source="monitor")
            await bus.start()
            await bus.create_topic(topic, partitions=4)
            store = open_saga_store(pg_store_url)
            monitor = SagaMonitor(definitions, bus, store, tick_interval=0.2)
            await monitor.start()
            buses.append(bus)
            stores.append(store)
            monitors.append(monitor)
        expected: dict[str, Any] = {}
        async with Bus(kafka_url, source="shop") as shop:
            for n in range(40):
                corr = f"o-{n}"
                script = REFUNDED if n % 4 == 0 else HAPPY
                for type_ in script:
                    await shop.publish(topic, type=type_, correlation_id=corr, key=corr)
                final = "compensated" if script is REFUNDED else "completed"
                expected[corr] = (final, len(script), 0)
        deadline = time.monotonic() + 60
        while states(stores[0]) != expected:
            assert time.monotonic() < deadline, f"states so far: {states(stores[0])}"
            await asyncio.sleep(0.2)
        assert all(m.applied > 0 for m in monitors), [m.applied for m in monitors]
    finally:
        for monitor in monitors:
            await monitor.stop()
        for bus in buses:
            await bus.stop()
        for store in stores:
            store.close()
