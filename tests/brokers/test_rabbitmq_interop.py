"""RabbitMQ interop: the AMQP CloudEvents binding as other clients see it (raw aio-pika, the
official cloudevents SDK), and legacy messages that are not CloudEvents at all."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest
from cloudevents.core.bindings import amqp as ce_amqp
from cloudevents.core.bindings import rabbitmq as ce_rabbitmq
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from broker import Bus, Event, Policy
from tests.helpers import Collector, eventually

pytestmark = pytest.mark.rabbitmq

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses."""
    return f"interop-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def bus(rabbitmq_url: str) -> AsyncIterator[Bus]:
    """A started bus on the session's vhost."""
    async with Bus(rabbitmq_url, source="interop") as started:
        yield started


@pytest.fixture
async def channel(rabbitmq_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A raw aio-pika channel (publisher confirms on) on the same vhost."""
    connection = await aio_pika.connect(rabbitmq_url.split("?", maxsplit=1)[0])
    async with connection:
        yield await connection.channel()


async def _raw_queue(
    channel: aio_pika.abc.AbstractChannel, bus: Bus, topic: str
) -> aio_pika.abc.AbstractQueue:
    """A queue of the raw client's own, bound to the topic's exchange."""
    await bus.create_topic(topic)
    queue = await channel.declare_queue(f"{topic}.raw", auto_delete=True)
    await queue.bind(topic, routing_key=topic)
    return queue


async def _get(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            return message
        assert asyncio.get_running_loop().time() < deadline, "no message arrived"
        await asyncio.sleep(0.01)


async def test_raw_client_reads_binding_headers(
    bus: Bus, channel: aio_pika.abc.AbstractChannel, topic: str
) -> None:
    """An event published through the Bus reaches a raw AMQP consumer as a persistent message on
    the topic exchange, routed by the topic name, with cloudEvents_* headers and properties."""
    queue = await _raw_queue(channel, bus, topic)
    sent = await bus.publish(
        topic, type="order.placed", data={"n": 1}, key="k1", ttl=60, extensions={"tries": 2}
    )
    message = await _get(queue)
    headers = message.headers
    assert (topic, topic) == (message.exchange, message.routing_key)
    assert (aio_pika.DeliveryMode.PERSISTENT, sent.id) == (
        message.delivery_mode,
        message.message_id,
    )
    assert ("application/json", {"n": 1}) == (message.content_type, json.loads(message.body))
    assert {
        "cloudEvents_specversion": "1.0",
        "cloudEvents_id": sent.id,
        "cloudEvents_source": "interop",
        "cloudEvents_type": "order.placed",
        "cloudEvents_partitionkey": "k1",
        "cloudEvents_tries": 2,
    } == {
        k: headers[k]
        for k in (
            "cloudEvents_specversion",
            "cloudEvents_id",
            "cloudEvents_source",
            "cloudEvents_type",
            "cloudEvents_partitionkey",
            "cloudEvents_tries",
        )
    }
    assert sent.extensions["expiration"] == headers["cloudEvents_expiration"]
    assert message.expiration is not None
    assert 59 <= float(message.expiration) <= 60


async def test_bus_reads_what_a_raw_client_writes(
    bus: Bus, channel: aio_pika.abc.AbstractChannel, topic: str
) -> None:
    """A binary-mode CloudEvent written by a raw client (either AMQP prefix) is read by the Bus
    with its attributes and typed extensions."""
    got = Collector()
    await bus.subscribe(topic, got, group="g")
    exchange = await channel.get_exchange(topic)
    for prefix, event_id in (("cloudEvents_", "raw-1"), ("cloudEvents:", "raw-2")):
        headers = {
            f"{prefix}specversion": "1.0",
            f"{prefix}id": event_id,
            f"{prefix}source": "legacy-app",
            f"{prefix}type": "thing.happened",
            f"{prefix}time": "2026-01-02T03:04:05Z",
            f"{prefix}retries": 3,
        }
        await exchange.publish(
            aio_pika.Message(b'{"a": 1}', headers=headers, content_type="application/json"),
            routing_key=topic,
        )
    await eventually(lambda: len(got.events) == 2)
    first = got.events[0]
    assert ["raw-1", "raw-2"] == got.ids
    assert ("legacy-app", "thing.happened", {"a": 1}, 3) == (
        first.source,
        first.type,
        first.data,
        first.extensions["retries"],
    )
    assert datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) == first.time


async def _publish_legacy(
    channel: aio_pika.abc.AbstractChannel, topic: str, body: bytes, content_type: str = "text/plain"
) -> None:
    exchange = await channel.get_exchange(topic)
    await exchange.publish(
        aio_pika.Message(body, content_type=content_type, message_id="legacy-42"),
        routing_key=topic,
    )


async def test_legacy_message_is_dead_lettered_as_undecodable(
    bus: Bus, channel: aio_pika.abc.AbstractChannel, topic: str
) -> None:
    """A message that is not a CloudEvent goes to the DLQ with dlqreason=undecodable, and the
    consumer goes on with the next event."""
    got = Collector()
    await bus.subscribe(topic, got, group="g")
    await _publish_legacy(channel, topic, b"hello from 2009")
    after = await bus.publish(topic, type="t")
    await eventually(lambda: after.id in got.ids)

    async def dead_lettered() -> bool:
        return len(await bus.dead_letters(f"{topic}.dlq")) == 1

    await eventually(dead_lettered)
    [dead] = await bus.dead_letters(f"{topic}.dlq")
    assert ("undecodable", b"hello from 2009") == (dead.extensions["dlqreason"], dead.data)
    assert [after.id] == got.ids


async def test_legacy_message_can_be_wrapped(
    rabbitmq_url: str, channel: aio_pika.abc.AbstractChannel, topic: str
) -> None:
    """With on_undecodable='wrap' a legacy message is delivered as a legacy-type event whose id
    is the AMQP message-id."""
    policy = Policy(on_undecodable="wrap", legacy_type="legacy.text")
    async with Bus(rabbitmq_url, policy=policy) as bus:
        got = Collector()
        await bus.subscribe(topic, got, group="g")
        await _publish_legacy(channel, topic, b"plain text")
        await eventually(lambda: len(got.events) == 1)
    [wrapped] = got.events
    assert ("legacy.text", "legacy-42", b"plain text") == (wrapped.type, wrapped.id, wrapped.data)


async def test_wrapped_legacy_json_arrives_parsed(
    rabbitmq_url: str, channel: aio_pika.abc.AbstractChannel, topic: str
) -> None:
    """A wrapped legacy message whose content type is JSON reaches the handler as parsed data."""
    async with Bus(rabbitmq_url, policy=Policy(on_undecodable="wrap")) as bus:
        got = Collector()
        await bus.subscribe(topic, got, group="g")
        await _publish_legacy(channel, topic, b'{"orderId": "o-9"}', "application/json")
        await eventually(lambda: len(got.events) == 1)
    [wrapped] = got.events
    assert ({"orderId": "o-9"}, "application/json") == (wrapped.data, wrapped.datacontenttype)


async def test_cloudevents_sdk_amqp_binding_both_ways(
    bus: Bus, channel: aio_pika.abc.AbstractChannel, topic: str
) -> None:
    """The official SDK's AMQP binding reads what the Bus writes, and the Bus reads what the SDK
    writes (including its millisecond timestamp for time)."""
    queue = await _raw_queue(channel, bus, topic)
    sent = await bus.publish(topic, type="sdk.check", data={"x": 1}, correlation_id="c-1")
    message = await _get(queue)
    parsed = ce_amqp.from_binary(
        ce_amqp.AMQPMessage(
            properties={"content-type": message.content_type},
            application_properties=dict(message.headers),
            application_data=message.body,
        ),
        JSONFormat(),
    )
    assert (sent.id, "sdk.check", "c-1", {"x": 1}) == (
        parsed.get_id(),
        parsed.get_type(),
        parsed.get_extension("correlationid"),
        parsed.get_data(),
    )

    got = Collector()
    await bus.subscribe(topic, got, group="g")
    when = datetime(2026, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    event = CloudEvent(
        attributes={
            "id": "sdk-1",
            "source": "sdk",
            "type": "sdk.made",
            "time": when,
            "datacontenttype": "application/json",
        },
        data={"y": 2},
    )
    written = ce_amqp.to_binary(event, JSONFormat())
    exchange = await channel.get_exchange(topic)
    await exchange.publish(
        aio_pika.Message(
            written.application_data,
            headers=written.application_properties,
            content_type=written.properties["content-type"],
        ),
        routing_key=topic,
    )
    await eventually(lambda: len(got.events) == 1)
    assert ("sdk-1", "sdk", {"y": 2}, when) == (
        got.events[0].id,
        got.events[0].source,
        got.events[0].data,
        got.events[0].time,
    )


async def test_knative_rabbitmq_binding_is_read(
    bus: Bus, channel: aio_pika.abc.AbstractChannel, topic: str
) -> None:
    """Events written with the SDK's RabbitMQ binding (knative's ce- headers) are read too."""
    got = Collector()
    await bus.subscribe(topic, got, group="g")
    event = CloudEvent(
        attributes={
            "id": "kn-1",
            "source": "knative",
            "type": "kn.t",
            "datacontenttype": "application/json",
        },
        data={"z": 3},
    )
    written = ce_rabbitmq.to_binary(event, JSONFormat())
    exchange = await channel.get_exchange(topic)
    await exchange.publish(
        aio_pika.Message(written.body, headers=written.headers, content_type=written.content_type),
        routing_key=topic,
    )
    await eventually(lambda: len(got.events) == 1)
    [received] = got.events
    assert (
        Event(type="kn.t", source="knative", id="kn-1", data={"z": 3}, time=received.time)
        == received
    )


async def _choreo(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "choreo",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )


async def test_choreo_publish_is_read_by_the_raw_client(
    bus: Bus, channel: aio_pika.abc.AbstractChannel, topic: str, rabbitmq_url: str
) -> None:
    """`choreo publish` writes a persistent binary-mode CloudEvent a raw consumer can read."""
    queue = await _raw_queue(channel, bus, topic)
    cli = await _choreo(
        "publish",
        topic,
        "--type",
        "cli.made",
        "--data",
        '{"k": "v"}',
        "--source",
        "cli",
        "--broker",
        rabbitmq_url,
    )
    out, err = await asyncio.wait_for(cli.communicate(), 60)
    assert 0 == cli.returncode, err.decode()
    message = await _get(queue)
    assert message.message_id is not None
    assert message.message_id in out.decode()
    assert ("cli.made", "cli") == (
        message.headers["cloudEvents_type"],
        message.headers["cloudEvents_source"],
    )
    assert {"k": "v"} == json.loads(message.body)


async def test_choreo_subscribe_reads_what_a_raw_client_writes(
    channel: aio_pika.abc.AbstractChannel, topic: str, rabbitmq_url: str
) -> None:
    """`choreo subscribe --output json` prints a CloudEvent a raw client wrote in binary mode."""
    cli = await _choreo(
        "subscribe",
        topic,
        "--group",
        "cli",
        "--count",
        "1",
        "--timeout",
        "60s",
        "--output",
        "json",
        "--broker",
        rabbitmq_url,
    )
    try:

        async def group_queue_exists() -> bool:
            probe = await aio_pika.connect(rabbitmq_url.split("?", maxsplit=1)[0])
            async with probe:  # a failed passive declare closes the channel
                try:
                    await (await probe.channel()).declare_queue(f"{topic}.cli", passive=True)
                except aio_pika.exceptions.ChannelClosed:
                    return False
            return True

        await eventually(group_queue_exists, timeout=60, what="choreo subscribe to join")
        exchange = await channel.get_exchange(topic)
        headers = {
            "cloudEvents_specversion": "1.0",
            "cloudEvents_id": "raw-cli-1",
            "cloudEvents_source": "raw",
            "cloudEvents_type": "raw.made",
        }
        await exchange.publish(
            aio_pika.Message(b'{"z": 9}', headers=headers, content_type="application/json"),
            routing_key=topic,
        )
        out, err = await asyncio.wait_for(cli.communicate(), 60)
    finally:
        if cli.returncode is None:
            cli.kill()
            await cli.wait()
    assert 0 == cli.returncode, err.decode()
    printed = json.loads(out.decode().strip().splitlines()[-1])
    assert ("raw-cli-1", "raw.made", {"z": 9}) == (printed["id"], printed["type"], printed["data"])
