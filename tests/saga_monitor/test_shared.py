"""Two monitors in one group, sharing a PostgreSQL store and started at the same instant, reach
the verdicts of one monitor alone: the same states, anomalies (duplicates included, although the
two copies reach different monitors) and alerts, on RabbitMQ and NATS."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

import pytest

from broker import Bus
from saga_monitor import load_definitions, open_saga_store
from saga_monitor.monitor import SagaMonitor
from tests.saga_monitor.scenario import (
    DEFINITIONS,
    GROUP,
    MAX_DELAY,
    alert_difference,
    bounded,
    broker_url,
    check_stuck_alerts,
    join,
    play,
    reading_alerts,
    reference,
    schedule,
    settle,
    snapshot,
    stalled,
    wait_for,
)


@pytest.fixture
def url(broker: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of the broker under test."""
    return broker_url(broker, request, tmp_path)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize(
    "broker",
    [
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("nats", marks=pytest.mark.nats),
    ],
)
async def test_two_monitors_sharing_a_group_reach_the_verdicts_of_one(
    url: str, tmp_path: Path, shared_store: str
) -> None:
    """Two monitors started together on a fresh shared store split the stream between them and
    end with the states, anomalies and alerts of a single monitor; no stuck alert for a saga
    that never stalled."""
    async with bounded(240):
        run = uuid.uuid4().hex[:8]
        topic, sagas = f"shared-{run}", 120
        definitions = tmp_path / "sagas.yaml"
        definitions.write_text(DEFINITIONS.format(topic=topic))
        await join(url, [topic], GROUP)
        await join(url, [topic], "reference")
        alert_topics = [f"alerts-pair-{run}", f"alerts-reference-{run}"]
        async with (
            reading_alerts(url, alert_topics) as (pair, alone),
            reference(url, tmp_path, definitions, alert_topics[1]) as single,
        ):
            # together, on a fresh schema
            stores = [open_saga_store(shared_store) for _ in range(2)]
            buses = [Bus(url, source="choreo-saga-monitor") for _ in range(2)]
            monitors = [
                SagaMonitor(
                    load_definitions(definitions),
                    bus,
                    store,
                    alerts_topic=alert_topics[0],
                    tick_interval=0.05,
                    max_delay=MAX_DELAY,
                )
                for bus, store in zip(buses, stores, strict=True)
            ]
            await asyncio.gather(*(m.start() for m in monitors))
            try:
                stamps = await play(url, topic, schedule(sagas, time.monotonic() + 0.5))
                expected = await settle(single, sagas)
                await wait_for(
                    lambda: snapshot(stores[0]) == expected, 60, "the same states", every=0.2
                )
                assert all(m.applied for m in monitors), "both monitors took a share"
                with contextlib.suppress(AssertionError):
                    await wait_for(lambda: pair.ids() == alone.ids(), 30, "the same alerts")
                assert [] == alert_difference(pair, alone)
            finally:
                await asyncio.gather(*(m.stop() for m in monitors))
                await asyncio.gather(*(bus.stop() for bus in buses))
                for store in stores:
                    store.close()
        check_stuck_alerts(pair, shared_store, stalled(sagas, stamps))
