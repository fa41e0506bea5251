"""Kafka interop: the CloudEvents Kafka binding as other clients see it (raw aiokafka, the official
cloudevents SDK), and legacy non-CloudEvents records from producers that know nothing of us."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent

from broker import Bus, Event, Policy
from tests.helpers import Collector, eventually

pytestmark = pytest.mark.kafka


def bootstrap(url: str) -> str:
    """The host:port list of a kafka:// URL, for the raw client."""
    return urlsplit(url).netloc.rsplit("@", 1)[-1]


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses."""
    return f"interop-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def bus(kafka_url: str) -> AsyncIterator[Bus]:
    """A started bus on the session's server."""
    async with Bus(kafka_url, source="interop") as started:
        yield started


@pytest.fixture
async def producer(kafka_url: str) -> AsyncIterator[AIOKafkaProducer]:
    """A raw aiokafka producer on the same server."""
    raw = AIOKafkaProducer(bootstrap_servers=bootstrap(kafka_url), acks="all")
    await raw.start()
    yield raw
    await raw.stop()


async def read_all(kafka_url: str, topic: str, count: int) -> list[object]:
    """The first ``count`` records of ``topic``, read by a raw consumer from the beginning."""
    raw = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap(kafka_url),
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await raw.start()
    records: list[object] = []
    try:
        while len(records) < count:
            batch = await raw.getmany(timeout_ms=500)
            for found in batch.values():
                records.extend(found)
    finally:
        await raw.stop()
    return records


async def test_bus_events_carry_the_kafka_binding(bus: Bus, kafka_url: str, topic: str) -> None:
    """A raw consumer sees ce_* headers, a content-type header and the partition key as key."""
    sent = await bus.publish(topic, type="order.placed", data={"n": 1}, key="order-1",
                             correlation_id="c-1", subject="order/1")  # fmt: skip
    [record] = await read_all(kafka_url, topic, 1)
    headers = {name: value.decode() for name, value in record.headers}  # type: ignore[attr-defined]
    assert b"order-1" == record.key  # type: ignore[attr-defined]
    assert {"n": 1} == json.loads(record.value)  # type: ignore[attr-defined]
    assert {
        "ce_specversion": "1.0",
        "ce_id": sent.id,
        "ce_source": "interop",
        "ce_type": "order.placed",
        "ce_subject": "order/1",
        "ce_correlationid": "c-1",
        "ce_partitionkey": "order-1",
        "content-type": "application/json",
    } == {k: v for k, v in headers.items() if k not in ("ce_time", "ce_traceparent")}
    assert datetime.fromisoformat(headers["ce_time"]) == sent.time


async def test_keyless_publishes_share_a_partition_keyed_ones_follow_their_key(
    bus: Bus, kafka_url: str, topic: str
) -> None:
    """Keyless events published one at a time go to one partition (sticky, as the Java
    client's partitioner: concurrent publishes fill one record batch); keyed events go where
    the default partitioner puts their key, as every Kafka client does."""
    await bus.create_topic(topic, partitions=4)
    await bus.publish(topic, type="warm-up")  # the producer learns the topic's partitions
    await asyncio.gather(*(bus.publish(topic, type="t", data=n) for n in range(20)))
    await asyncio.gather(*(bus.publish(topic, type="k", key=key) for key in ("a", "b", "c") * 2))
    records: list[Any] = await read_all(kafka_url, topic, 27)
    keyless = {r.partition for r in records if dict(r.headers)["ce_type"] == b"t"}
    keyed = {(r.key, r.partition) for r in records if r.key is not None}
    assert 1 == len(keyless)
    expected = DefaultPartitioner()
    assert {(k, expected(k, [0, 1, 2, 3], [0, 1, 2, 3])) for k in (b"a", b"b", b"c")} == keyed


async def test_a_keyless_list_fills_one_batch_per_partition(
    bus: Bus, kafka_url: str, topic: str
) -> None:
    """publish_many's keyless events fill a record batch (256 KiB) for one partition, then
    one for the next partition: each partition gets consecutive events of the list."""
    await bus.create_topic(topic, partitions=4)
    data = "x" * 1000
    result = await bus.publish_many(topic, [{"type": "t", "data": data}] * 600)
    assert (True, 600) == (result.ok, len(result))
    records: list[Any] = await read_all(kafka_url, topic, 600)
    order = {event.id: n for n, event in enumerate(result.published)}
    by_partition: dict[int, list[int]] = {}
    for record in records:
        by_partition.setdefault(record.partition, []).append(
            order[dict(record.headers)["ce_id"].decode()]
        )
    runs = sorted(sorted(found) for found in by_partition.values())
    assert 3 == len(runs)  # 600 records of about 1.3 KB: three batches of up to 256 KiB
    assert list(range(600)) == [n for run in runs for n in run]
    assert all(run == list(range(run[0], run[-1] + 1)) for run in runs)


async def test_raw_binary_mode_record_is_read_by_the_bus(
    bus: Bus, producer: AIOKafkaProducer, topic: str
) -> None:
    """A record another client writes in binary content mode arrives as the same event."""
    got = Collector()
    await bus.subscribe(topic, got, group="readers")
    headers = [
        ("ce_specversion", b"1.0"), ("ce_id", b"raw-1"), ("ce_source", b"/legacy/billing"),
        ("ce_type", b"invoice.paid"), ("ce_time", b"2026-01-02T03:04:05Z"),
        ("ce_tenant", b"acme"), ("content-type", b"application/json"),
    ]  # fmt: skip
    await producer.send_and_wait(topic, b'{"amount": 12}', key=b"inv-9", headers=headers)
    await eventually(lambda: len(got.events) == 1)
    event = got.events[0]
    assert ("raw-1", "/legacy/billing", "invoice.paid") == (event.id, event.source, event.type)
    assert {"amount": 12} == event.data
    assert {"tenant": "acme", "partitionkey": "inv-9"} == event.extensions
    assert datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) == event.time


async def test_cloudevents_sdk_reads_what_the_bus_publishes(
    bus: Bus, kafka_url: str, topic: str
) -> None:
    """The official SDK's Kafka binding decodes our records into the same event."""
    sent = await bus.publish(topic, type="sdk.check", data={"ok": True}, key="k-1")
    [record] = await read_all(kafka_url, topic, 1)
    message = ce_kafka.KafkaMessage(
        headers=dict(record.headers),  # type: ignore[attr-defined]
        key=record.key,  # type: ignore[attr-defined]
        value=record.value,  # type: ignore[attr-defined]
    )
    decoded = ce_kafka.from_binary_event(message)
    assert (sent.id, "interop", "sdk.check") == (
        decoded.get_id(),
        decoded.get_source(),
        decoded.get_type(),
    )
    assert {"ok": True} == decoded.get_data()
    assert "k-1" == decoded.get_extension("partitionkey")


async def test_bus_reads_what_the_cloudevents_sdk_writes(
    bus: Bus, producer: AIOKafkaProducer, topic: str
) -> None:
    """An event the official SDK encodes for Kafka arrives with its attributes and data."""
    got = Collector()
    await bus.subscribe(topic, got, group="readers")
    sdk_event = CloudEvent(
        attributes={"type": "sdk.made", "source": "/sdk", "id": "sdk-1",
                    "partitionkey": "p-1", "datacontenttype": "application/json"},
        data={"from": "sdk"},
    )  # fmt: skip
    message = ce_kafka.to_binary_event(sdk_event)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    await producer.send_and_wait(
        topic, message.value, key=key, headers=list(message.headers.items())
    )
    await eventually(lambda: len(got.events) == 1)
    event = got.events[0]
    assert ("sdk-1", "/sdk", "sdk.made") == (event.id, event.source, event.type)
    assert {"from": "sdk"} == event.data
    assert "p-1" == event.partitionkey


async def test_legacy_record_is_dead_lettered_by_default(
    bus: Bus, producer: AIOKafkaProducer, topic: str
) -> None:
    """A plain record with no CloudEvents headers goes to the DLQ as undecodable, and the
    consumer keeps handling the events after it."""
    got = Collector()
    await bus.subscribe(topic, got, group="readers")
    await producer.send_and_wait(topic, b"plain old bytes", key=b"same")
    after = await bus.publish(topic, type="after", key="same")
    await eventually(lambda: len(got.events) == 1)

    async def dead_lettered() -> bool:
        return len(await bus.dead_letters(f"{topic}.dlq")) == 1

    await eventually(dead_lettered)
    [dead] = await bus.dead_letters(f"{topic}.dlq")
    assert [after.id] == got.ids
    assert ("undecodable", b"plain old bytes") == (dead.extensions["dlqreason"], dead.data)


async def test_legacy_record_is_wrapped_by_policy(
    kafka_url: str, producer: AIOKafkaProducer, topic: str
) -> None:
    """With on_undecodable='wrap' a legacy record reaches the handler as a generated event."""
    policy = Policy(on_undecodable="wrap", legacy_type="legacy.record")
    async with Bus(kafka_url, policy=policy) as bus:
        got = Collector()
        await bus.subscribe(topic, got, group="readers")
        await producer.send_and_wait(
            topic, b"\x00\x01raw", headers=[("content-type", b"application/octet-stream")]
        )
        await eventually(lambda: len(got.events) == 1)
    event: Event = got.events[0]
    assert ("legacy.record", b"\x00\x01raw") == (event.type, event.data)
    assert event.id


async def test_topics_list_partitions_messages_and_groups(bus: Bus, topic: str) -> None:
    """choreo topics ls sees the topic's partitions, retained events and subscribed groups."""
    await bus.create_topic(topic, partitions=3)
    got = Collector()
    await bus.subscribe(topic, got, group="readers")
    await bus.publish(topic, type="t")
    await bus.publish(topic, type="t")
    await eventually(lambda: len(got.events) == 2)
    [info] = [t for t in await bus.topics() if t.name == topic]
    assert (3, 2, ("readers",)) == (info.partitions, info.messages, info.groups)


async def _choreo(*args: str) -> tuple[int, str, str]:
    """Run the choreo CLI as users do; exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "choreo", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_publish_is_read_by_the_raw_client(kafka_url: str, topic: str) -> None:
    """`choreo publish` writes a record a raw consumer sees with the binding headers and key."""
    code, out, err = await _choreo(
        "publish", topic, "--type", "cli.made", "--data", '{"n": 5}', "--key", "k-5",
        "--source", "cli", "--broker", kafka_url, "--output", "json",
    )  # fmt: skip
    assert 0 == code, err
    [record] = await read_all(kafka_url, topic, 1)
    headers = {name: value.decode() for name, value in record.headers}  # type: ignore[attr-defined]
    assert ("cli.made", "cli", "1.0") == (
        headers["ce_type"], headers["ce_source"], headers["ce_specversion"]
    )  # fmt: skip
    assert (b"k-5", {"n": 5}) == (record.key, json.loads(record.value))  # type: ignore[attr-defined]
    assert headers["ce_id"] in out


async def test_cli_subscribe_reads_a_raw_binary_record(
    kafka_url: str, producer: AIOKafkaProducer, topic: str
) -> None:
    """`choreo subscribe` prints, as CloudEvents JSON, a raw client's binary-mode record."""
    headers = [
        ("ce_specversion", b"1.0"), ("ce_id", b"raw-cli-1"), ("ce_source", b"/raw"),
        ("ce_type", b"raw.made"), ("content-type", b"application/json"),
    ]  # fmt: skip
    await producer.send_and_wait(topic, b'{"hello": "cli"}', headers=headers)
    code, out, err = await _choreo(
        "subscribe", topic, "--group", "cli", "--from-beginning", "--count", "1",
        "--timeout", "60s", "--broker", kafka_url, "--output", "json",
    )  # fmt: skip
    assert 0 == code, err
    printed = json.loads(out.strip().splitlines()[-1])
    assert ("raw-cli-1", "/raw", "raw.made", {"hello": "cli"}) == (
        printed["id"], printed["source"], printed["type"], printed["data"]
    )  # fmt: skip


@pytest.mark.parametrize("direct", [True, False], ids=["builder", "wrapper"])
async def test_a_list_reads_back_the_same_whichever_way_it_is_appended(
    bus: Bus, kafka_url: str, topic: str, direct: bool
) -> None:
    """publish_many appends a list's records to the record batch builder itself where
    aiokafka's internals are as expected, else through ``BatchBuilder.append`` (here: a
    producer with a value serializer): either way every record carries its event's key,
    binding headers and value, in list order per key and partition."""
    from broker.adapters.kafka.publish import KafkaPublisher

    await bus.create_topic(topic, partitions=2)
    serializer = None if direct else (lambda value: value)
    raw = AIOKafkaProducer(
        bootstrap_servers=bootstrap(kafka_url), acks="all", value_serializer=serializer
    )
    await raw.start()
    try:
        publisher = KafkaPublisher(raw, kafka_url, 30.0)
        assert (publisher._direct is not None) is direct
        events = [
            Event(type="t", source="s", data={"n": n}, extensions={"partitionkey": f"k{n % 3}"})
            for n in range(50)
        ] + [Event(type="t", source="s", data={"n": 50 + n}) for n in range(50)]
        assert [None] * 100 == await publisher.publish_many(topic, events)
    finally:
        await raw.stop()
    records: list[Any] = await read_all(kafka_url, topic, 100)
    by_id = {event.id: event for event in events}
    seen: dict[tuple[int, bytes | None], list[int]] = {}
    for record in records:
        headers = dict(record.headers)
        event = by_id[headers["ce_id"].decode()]
        assert json.dumps(event.data, separators=(",", ":")).encode() == record.value
        assert (headers["ce_type"], headers["content-type"]) == (b"t", b"application/json")
        key = event.extensions.get("partitionkey")
        assert (None if key is None else key.encode()) == record.key
        seen.setdefault((record.partition, record.key), []).append(event.data["n"])
    if direct:  # the builder path stamps the call's time on every record
        assert 1 == len({record.timestamp for record in records})
    assert all(found == sorted(found) for found in seen.values())
