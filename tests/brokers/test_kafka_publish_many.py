"""Kafka ``publish_many``: every event's outcome is its own, also for an event over the
producer's ``max_request_size`` among events that fit; a long keyless list goes out in two
halves, the second encoded while the first is on the wire."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from broker import Bus, Event, PublishError
from broker.adapters.kafka import publish
from broker.adapters.kafka.publish import SPLIT_EVENTS, KafkaPublisher
from broker.adapters.kafka.wire import decode, iter_records
from broker.testing import VirtualClock
from tests.brokers.test_kafka_interop import bootstrap, read_all

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


def _wire(record: Any, event: Event) -> tuple[Any, ...]:
    """A record's key, headers and value, the headers that differ from event to event (its
    id and new trace) replaced by a mark once checked against ``event``."""
    own = {"ce_id": event.id, "ce_traceparent": event.extensions.get("traceparent")}
    headers = []
    for name, value in record.headers:
        if name in own:
            assert (name, own[name]) == (name, value.decode())
        headers.append((name, b"<own>" if name in own else value))
    return record.key, headers, record.value


async def test_a_listed_events_record_is_byte_for_byte_a_single_publishs(kafka_url: str) -> None:
    """A record of ``publish_many`` has the key, headers (names, order, bytes) and value the
    single publish of the same event or options writes; only the id and a new trace differ."""
    topic = f"many-bytes-{uuid.uuid4().hex[:8]}"
    given = Event(
        type="order.paid", source="shop", id="id-1", data={"n": 1}, subject="order/1",
        extensions={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "n": 7},
    )  # fmt: skip
    options: list[dict[str, Any]] = [
        {"type": "order.placed", "data": {"n": 1, "s": "é"}},
        {"type": "order.placed", "data": "x" * 254, "key": "order-1"},
        {"type": "order.shipped", "data": [1, None], "subject": "order/1"},
        {"type": "order.placed", "data": None},
    ]
    async with Bus(kafka_url, source="shop", clock=VirtualClock()) as bus:
        await bus.create_topic(topic, partitions=1)
        singles = [await bus.publish(topic, **item) for item in [*options, *options]]
        singles.append(await bus.publish(topic, given))
        listed = await bus.publish_many(topic, [*options, *options, given])
    assert listed.ok
    records = await read_all(kafka_url, topic, 2 * len(singles))
    ids = [dict(r.headers)["ce_id"].decode() for r in records]  # (a list's keyed ones first)
    single, many = (
        dict(zip(ids[: len(singles)], records, strict=False)),
        dict(zip(ids, records, strict=True)),
    )
    assert ["id-1", "id-1"] == [
        ids[len(singles) - 1],
        *(i for i in ids[len(singles) :] if i == "id-1"),
    ]
    expected = [_wire(single[e.id], e) for e in singles]
    assert expected == [_wire(many[e.id], e) for e in listed.published]


@pytest.mark.parametrize("count", [SPLIT_EVENTS - 1, SPLIT_EVENTS + 44])
async def test_a_long_keyless_list_is_stored_as_two_halves(kafka_url: str, count: int) -> None:
    """A keyless list of at least SPLIT_EVENTS events fills a record batch with its first
    half and another, on the next partition, with the second half (a shorter one fills one);
    every record reads back as the event published, in list order per partition."""
    topic = f"many-halves-{uuid.uuid4().hex[:8]}"
    async with Bus(kafka_url, source="halves") as bus:
        await bus.create_topic(topic, partitions=4)
        result = await bus.publish_many(topic, [{"type": "t", "data": n} for n in range(count)])
    assert (True, count) == (result.ok, len(result))
    position = {event.id: n for n, event in enumerate(result.published)}
    runs: dict[int, list[int]] = {}
    for record in await read_all(kafka_url, topic, count):
        event = decode(record.key, record.headers, record.value)
        assert result.published[position[event.id]] == event
        runs.setdefault(record.partition, []).append(position[event.id])
    half = count // 2 if count >= SPLIT_EVENTS else count
    assert [list(range(half)), list(range(half, count))][: len(runs)] == sorted(runs.values())


async def test_the_first_half_is_on_the_wire_before_the_second_is_encoded(
    kafka_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The produce request of a long list's first half is written while the second half is
    still to be encoded: the broker stores one half while the client encodes the other."""
    topic = f"many-wire-{uuid.uuid4().hex[:8]}"
    async with Bus(kafka_url) as bus:
        await bus.create_topic(topic, partitions=4)
    raw = AIOKafkaProducer(
        bootstrap_servers=bootstrap(kafka_url), acks="all", max_batch_size=256 * 1024
    )
    await raw.start()
    try:
        publisher = KafkaPublisher(raw, kafka_url, 30.0)
        await publisher.publish_many(topic, [Event(type="warm-up", source="s")])
        produced = spy_on_produce_requests(raw, monkeypatch)
        sent_by_index: dict[int, int] = {}

        def watched(events: Any, indices: Any, errors: Any) -> Iterator[Any]:
            for index, record in iter_records(events, indices, errors):
                sent_by_index[index] = len(produced)
                yield index, record

        monkeypatch.setattr(publish, "iter_records", watched)
        events = [Event(type="t", source="s", data=n) for n in range(SPLIT_EVENTS)]
        assert [None] * SPLIT_EVENTS == await publisher.publish_many(topic, events)
    finally:
        await raw.stop()
    half = SPLIT_EVENTS // 2  # (record `half` is encoded before it finds the batch complete)
    assert (0, 0, 0, 1, 1, 2) == (
        sent_by_index[0], sent_by_index[half - 1], sent_by_index[half],
        sent_by_index[half + 1], sent_by_index[SPLIT_EVENTS - 1], len(produced),
    )  # fmt: skip


def spy_on_produce_requests(
    producer: AIOKafkaProducer, monkeypatch: pytest.MonkeyPatch
) -> list[Any]:
    """The produce requests ``producer`` sends from now on, listed as it sends them."""
    produced: list[Any] = []
    send = producer.client.send

    async def spy(node_id: int, request: Any, **options: Any) -> Any:
        if request.API_KEY == 0:  # Produce
            produced.append(request)
        return await send(node_id, request, **options)

    monkeypatch.setattr(producer.client, "send", spy)
    return produced
