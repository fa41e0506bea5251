"""NATS interop: the NATS CloudEvents binding as other clients see it (raw nats-py, the official
cloudevents SDK), names on the server, streams made by other tools, and legacy messages."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import nats
import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent
from nats.aio.client import Client
from nats.js import api

from broker import Bus, Policy
from broker.adapters.nats import safe_name
from broker.envelope import format_time
from tests.helpers import Collector, eventually

pytestmark = pytest.mark.nats


WIRE_HEADERS = ("content-type", "Nats-Msg-Id")


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses."""
    return f"interop.{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A started bus on the session's server."""
    async with Bus(nats_url, source="interop") as started:
        yield started


@pytest.fixture
async def raw(nats_url: str) -> AsyncIterator[Client]:
    """A raw nats-py connection to the same server."""
    nc = await nats.connect(nats_url.split("?", 1)[0])
    yield nc
    await nc.close()


async def _read_one(raw: Client, topic: str) -> nats.aio.msg.Msg:
    """The topic's first retained message, read by the raw client with its own consumer."""
    js = raw.jetstream()
    sub = await js.pull_subscribe(topic, stream=safe_name(topic))
    [msg] = await sub.fetch(1, timeout=5)
    await msg.ack()
    return msg


async def test_raw_client_reads_binding_headers(bus: Bus, raw: Client, topic: str) -> None:
    """An event published through the Bus is a JetStream message on subject = topic, in the
    topic's stream, with ce-* headers, content-type and Nats-Msg-Id = id."""
    sent = await bus.publish(
        topic, type="order.placed", data={"n": 1}, key="k1", extensions={"tries": 2}
    )
    msg = await _read_one(raw, topic)
    headers = msg.headers or {}
    assert sent.time is not None
    assert (topic, safe_name(topic)) == (msg.subject, msg.metadata.stream)
    assert {
        "ce-specversion": "1.0",
        "ce-id": sent.id,
        "ce-source": "interop",
        "ce-type": "order.placed",
        "ce-partitionkey": "k1",
        "ce-tries": "2",
        "content-type": "application/json",
        "Nats-Msg-Id": sent.id,
        "ce-time": format_time(sent.time),
        "ce-traceparent": sent.traceparent,
    } == {k: v for k, v in headers.items() if k.startswith("ce-") or k in WIRE_HEADERS}
    assert {"n": 1} == json.loads(msg.data)


async def test_header_values_are_cleaned_as_the_client_cleans_them(
    bus: Bus, raw: Client, topic: str
) -> None:
    """Header values with a line break or edge whitespace reach the server as nats-py's own
    publish writes them (line breaks as spaces, edges stripped); plain ones unchanged."""
    odd = {"note": "two\r\nlines", "pad": " padded ", "plain": "as is"}
    sent = await bus.publish(topic, type="t", data=1, subject="s\nx", extensions=odd)
    await raw.publish(f"{topic}", b"1", headers={f"ce-{k}": v for k, v in odd.items()})
    sub = await raw.jetstream().pull_subscribe(topic, stream=safe_name(topic))
    ours, theirs = await sub.fetch(2, timeout=5)
    expected = {"ce-note": "two  lines", "ce-pad": "padded", "ce-plain": "as is"}
    assert expected == {k: v for k, v in (theirs.headers or {}).items() if k in expected}
    assert expected | {"ce-subject": "s x", "ce-id": sent.id} == {
        k: v for k, v in (ours.headers or {}).items() if k in {*expected, "ce-subject", "ce-id"}
    }


async def test_bus_reads_what_a_raw_client_writes(bus: Bus, raw: Client, topic: str) -> None:
    """A CloudEvent a raw client publishes in binary mode (ce-* headers) reaches a subscriber
    with its attributes and data."""
    got = Collector()
    await bus.subscribe(topic, got, group="g")
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "raw-1",
        "ce-source": "legacy-go-service",
        "ce-type": "stock.changed",
        "ce-time": "2026-01-02T03:04:05Z",
        "ce-correlationid": "c-1",
        "content-type": "application/json",
        "Nats-Msg-Id": "raw-1",
    }
    await raw.jetstream().publish(topic, b'{"sku":"A","qty":3}', headers=headers)
    await eventually(lambda: len(got.events) == 1)
    event = got.events[0]
    assert ("raw-1", "legacy-go-service", "stock.changed", "c-1") == (
        event.id,
        event.source,
        event.type,
        event.correlationid,
    )
    assert datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) == event.time
    assert {"sku": "A", "qty": 3} == event.data


async def test_cloudevents_sdk_round_trip(bus: Bus, raw: Client, topic: str) -> None:
    """The official SDK has no NATS binding; its HTTP binary binding uses the same ce- headers,
    so an SDK-encoded event is read by the Bus and a Bus event decodes with the SDK."""
    got = Collector()
    await bus.subscribe(topic, got, group="g")
    sdk_event = CloudEvent(
        attributes={"type": "com.example.sdk", "source": "/sdk", "id": "sdk-1",
                    "subject": "thing-9", "tenant": "acme"},
        data={"hello": "nats"},
    )  # fmt: skip
    message = ce_http.to_binary_event(sdk_event)
    await raw.jetstream().publish(topic, message.body, headers=dict(message.headers))
    await eventually(lambda: len(got.events) == 1)
    mine = got.events[0]
    assert ("sdk-1", "/sdk", "com.example.sdk", "thing-9", "acme", {"hello": "nats"}) == (
        mine.id, mine.source, mine.type, mine.subject, mine.extensions["tenant"], mine.data
    )  # fmt: skip

    back = f"{topic}.back"
    sent = await bus.publish(back, type="com.example.back", data={"ok": True}, subject="s-1")
    msg = await _read_one(raw, back)
    decoded = ce_http.from_binary_event(ce_http.HTTPMessage(dict(msg.headers or {}), msg.data))
    assert (sent.id, "interop", "com.example.back", "s-1", {"ok": True}) == (
        decoded.get_id(), decoded.get_source(), decoded.get_type(), decoded.get_subject(),
        decoded.get_data(),
    )  # fmt: skip


async def test_legacy_message_is_wrapped(nats_url: str, raw: Client, topic: str) -> None:
    """With on_undecodable='wrap', a plain message from a legacy producer is delivered as a
    legacy event carrying the bytes, and the consumer keeps going."""
    got = Collector()
    async with Bus(nats_url, policy=Policy(on_undecodable="wrap")) as bus:
        await bus.subscribe(topic, got, group="g")
        await raw.jetstream().publish(topic, b"PLAIN OLD TEXT", headers={"Nats-Msg-Id": "old-7"})
        after = await bus.publish(topic, type="normal")
        await eventually(lambda: len(got.events) == 2)
    legacy, normal = got.events
    assert ("choreograph.legacy", "old-7", b"PLAIN OLD TEXT") == (
        legacy.type,
        legacy.id,
        legacy.data,
    )
    assert after.id == normal.id


async def test_legacy_message_is_dead_lettered_by_default(
    bus: Bus, raw: Client, topic: str
) -> None:
    """By default a message that is not a CloudEvent goes to <topic>.dlq with
    dlqreason=undecodable and the consumer keeps handling the next events."""
    got = Collector()
    await bus.subscribe(topic, got, group="g")
    await raw.jetstream().publish(topic, b"\x00\x01 not json")
    after = await bus.publish(topic, type="normal")
    await eventually(lambda: after.id in got.ids)

    async def dead_lettered() -> bool:
        return 1 == len(await bus.dead_letters(f"{topic}.dlq"))

    await eventually(dead_lettered)
    [dead] = await bus.dead_letters(f"{topic}.dlq")
    assert ("undecodable", b"\x00\x01 not json") == (dead.extensions["dlqreason"], dead.data)
    assert [after.id] == got.ids


async def test_stream_made_by_another_tool_is_joined(bus: Bus, raw: Client) -> None:
    """When another tool's stream already captures the topic (a wildcard over many subjects),
    the Bus publishes into it and its group consumes only the topic's subject."""
    prefix = f"legacy{uuid.uuid4().hex[:8]}"
    js = raw.jetstream()
    await js.add_stream(api.StreamConfig(name=prefix.upper(), subjects=[f"{prefix}.>"]))
    got = Collector()
    await bus.subscribe(f"{prefix}.orders", got, group="g")
    await js.publish(f"{prefix}.payments", b"{}", headers={"ce-specversion": "1.0",
                     "ce-id": "p", "ce-source": "s", "ce-type": "other"})  # fmt: skip
    sent = await bus.publish(f"{prefix}.orders", type="mine")
    await eventually(lambda: len(got.events) == 1)
    info = await js.stream_info(prefix.upper())
    assert [sent.id] == got.ids
    assert 2 == info.state.messages


async def test_topics_list_streams_and_groups(bus: Bus, topic: str) -> None:
    """choreo topics ls shows each topic with its retained count and its groups by name."""
    await bus.subscribe(topic, Collector(), group="billing.v2")
    await bus.publish(topic, type="t")
    [info] = [t for t in await bus.topics() if t.name == topic]
    assert (topic, 1, ("billing.v2",)) == (info.name, info.messages, info.groups)
