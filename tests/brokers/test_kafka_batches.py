"""Kafka batch subscriptions catching up on a backlog: the merge of the partitions by event
time takes a lane's worth of records (``prefetch``) a partition from the fetcher at a time,
decoded as they are handed out, instead of every record the fetcher holds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker import Bus, Event
from tests.helpers import eventually

pytestmark = pytest.mark.kafka

PARTITIONS = 4
COUNT = 2000


async def test_a_backlog_is_merged_a_lane_at_a_time(kafka_url: str) -> None:
    """A backlog of 2,000 events, each a millisecond after the last and spread over four
    partitions by key, reaches a batch handler in event-time order, each event once, while the
    subscription holds at most two lanes' worth of records (2 x prefetch) a partition that it
    did not hand out yet: the rest waits in the fetcher."""
    topic = f"batches-{uuid.uuid4().hex[:12]}"
    start = datetime.now(UTC) - timedelta(minutes=5)
    events = [
        Event(
            type="t",
            source="test",
            time=start + timedelta(milliseconds=n),
            data=n,
            extensions={"partitionkey": f"k{n % 8}"},
        )
        for n in range(COUNT)
    ]
    got: list[int] = []
    held: list[int] = []
    reading: dict[str, Any] = {}

    async def handler(batch: list[Event]) -> None:
        sub = reading["subscription"]  # records read from the fetcher, not handed out yet
        held.append(sub._horizon.held + sum(len(run) for _, run in sub._buffer) - sub._next)
        got.extend(event.data for event in batch)

    async with Bus(kafka_url, source="test") as bus:
        await bus.create_topic(topic, partitions=PARTITIONS)
        assert (await bus.publish_many(topic, events)).ok
        subscriber = await bus.subscribe_batch(
            topic, handler, group="g", from_beginning=True, max_batch=20, prefetch=40
        )
        reading["subscription"] = subscriber._consumer._pipeline.subscription
        await eventually(lambda: len(got) == COUNT, what="every event")
        await subscriber.stop()
    assert list(range(COUNT)) == got
    assert max(held) <= PARTITIONS * 2 * 40
