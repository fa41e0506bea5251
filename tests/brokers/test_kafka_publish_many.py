"""Kafka ``publish_many``: every event's outcome is its own, also for an event over the
producer's ``max_request_size`` among events that fit."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer

from broker import Bus, Event, PublishError

pytestmark = pytest.mark.kafka


async def stored_ids(url: str, topic: str, count: int) -> list[str]:
    """The ``ce_id`` of the first ``count`` records on ``topic`` (every partition), read with a
    raw consumer outside any group."""
    servers = url.split("://", 1)[1].split("?", 1)[0]
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers, auto_offset_reset="earliest")
    await consumer.start()
    try:
        ids: list[str] = []
        while len(ids) < count:
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, f"only {len(ids)} of {count} records on {topic}"
            for records in batches.values():
                ids += [dict(r.headers)["ce_id"].decode() for r in records]
        return sorted(ids)
    finally:
        await consumer.stop()


@pytest.mark.parametrize("keyed", [False, True], ids=["keyless", "keyed"])
@pytest.mark.parametrize("batch_size", [16384, 65536], ids=["batch-below", "batch-above"])
async def test_an_event_over_max_request_size_fails_alone(
    kafka_url: str, keyed: bool, batch_size: int
) -> None:
    """In a list, an event larger than max_request_size (and than a record batch) fails with
    the error a single publish of it raises, naming the topic and the limit; the others (one
    larger than a batch but within the limit among them) are stored."""
    topic = f"many-big-{uuid.uuid4().hex[:8]}"
    url = f"{kafka_url}&max_request_size=20000&max_batch_size={batch_size}"
    key = {"partitionkey": "k"} if keyed else {}
    events = [
        Event(type="t", source="s", data={"blob": "x" * size}, extensions=key)
        for size in (10, 40_000, 10, 18_000, 10)
    ]
    async with Bus(url) as bus:
        with pytest.raises(PublishError) as single:
            await bus.publish(topic, events[1])
        result = await bus.publish_many(topic, events)
    errors = [None if o.error is None else str(o.error) for o in result]
    assert [None, str(single.value), None, None, None] == errors
    assert (True, True) == (
        f"publishing to {topic!r}" in errors[1],
        "max_request_size=20000" in errors[1],
    )
    ok = [e.id for n, e in enumerate(events) if n != 1]
    assert sorted(ok) == await stored_ids(url, topic, 4)
