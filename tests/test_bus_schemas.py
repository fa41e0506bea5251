"""A topic bound to a registry subject: publish validates and encodes, consume decodes, and what
cannot be decoded goes to the DLQ. Real bus (SQLite broker), real embedded registry."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker import Bus, Event, PayloadError
from schemas import RegistryClient, SchemaCodec
from tests.helpers import Collector, eventually

ORDER = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [{"name": "orderId", "type": "string"}, {"name": "amount", "type": "double"}],
}


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    client = RegistryClient.from_url(f"sqlite:///{tmp_path}/registry.db")
    await client.register("orders-value", json.dumps(ORDER))
    bus = Bus(
        f"sqlite:///{tmp_path}/broker.db?poll_interval=0.01",
        codec=SchemaCodec(client, {"orders": "orders-value"}),
    )
    async with bus:
        yield bus
    await client.close()


async def test_valid_data_is_encoded_and_decoded(bus: Bus) -> None:
    """A valid order travels as Confluent wire bytes and reaches the handler as a dict."""
    got = Collector()
    await bus.subscribe("orders", got, group="g")
    sent = await bus.publish("orders", type="order.placed", data={"orderId": "o-1", "amount": 9.5})
    assert isinstance(sent.data, bytes)
    assert b"\x00" == sent.data[:1]
    assert sent.dataschema is not None
    await eventually(lambda: len(got.events) == 1)
    assert {"orderId": "o-1", "amount": 9.5} == got.events[0].data


async def test_invalid_data_is_refused_at_publish(bus: Bus) -> None:
    """Data that does not match the schema raises a PayloadError naming the field; none is sent."""
    with pytest.raises(PayloadError, match="amount"):
        await bus.publish("orders", type="order.placed", data={"orderId": "o-1", "amount": "lots"})
    assert [] == await bus.dead_letters("orders", limit=10)


async def test_undecodable_bytes_go_to_the_dlq(bus: Bus) -> None:
    """Wire bytes with an unknown schema id are dead-lettered as undecodable, not handled."""
    got = Collector()
    await bus.subscribe("orders", got, group="g")
    bogus = Event(
        type="order.placed",
        source="legacy",
        data=b"\x00\x00\x00\x03\xe7junk",
        datacontenttype="application/octet-stream",
    )
    await bus.adapter.publish("orders", bogus)  # bypass the codec, as a foreign producer would
    marker = await bus.publish(
        "orders", type="order.placed", data={"orderId": "o-2", "amount": 1.0}
    )

    async def dead() -> bool:
        return len(await bus.dead_letters("orders.dlq")) == 1

    await eventually(dead)
    await eventually(lambda: marker.id in got.ids)
    [entry] = await bus.dead_letters("orders.dlq")
    assert (bogus.id, "undecodable") == (entry.id, entry.extensions["dlqreason"])
    assert [marker.id] == got.ids


async def test_unbound_topics_pass_through(bus: Bus) -> None:
    """A topic with no subject is published as plain JSON."""
    got = Collector()
    await bus.subscribe("audit", got, group="g")
    await bus.publish("audit", type="note", data={"free": "form"})
    await eventually(lambda: len(got.events) == 1)
    assert {"free": "form"} == got.events[0].data
