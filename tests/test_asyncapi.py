"""The AsyncAPI 3.0 document of declared buses, its payload schemas (pydantic, JSON Schema,
registry subjects through a real embedded registry), its page and the app that serves it.
tests/test_asyncapi_cli.py runs the command and the official parser."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import BaseModel

from broker import Bus, ConfigurationError, Event
from broker.asyncapi import asyncapi_document, render_page, to_yaml
from broker.asyncapi.payloads import WIRE_CONTENT_TYPES
from broker.asyncapi.web import create_app
from schemas import RegistryClient, SchemaCodec
from schemas.proto_serde import PROTOBUF_WIRE_CONTENT_TYPE
from schemas.serde import AVRO_CONTENT_TYPE, JSON_WIRE_CONTENT_TYPE


class Line(BaseModel):
    """One line."""

    sku: str


class Order(BaseModel):
    """An order."""

    id: str
    lines: list[Line]


AVRO = {"type": "record", "name": "Paid", "fields": [{"name": "id", "type": "string"}]}
JSON_SCHEMA = {
    "type": "object",
    "properties": {"id": {"$ref": "#/definitions/Id"}},
    "definitions": {"Id": {"type": "string"}},
}
PROTO = 'syntax = "proto3";\nmessage Shipped {\n  string id = 1;\n}\n'


async def handle(event: Event) -> None:
    """Handles an event."""


def refs(node: Any, path: str = "#") -> Iterator[tuple[str, str]]:
    """(where, target) of every ``$ref`` in a document."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "$ref":
                yield path, value
            else:
                yield from refs(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from refs(value, f"{path}/{index}")


def resolve(document: Mapping[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def shop(url: str = "kafka://k1:9092") -> Bus:
    """A bus that publishes orders and handles payments and returns."""
    bus = Bus(url, source="order-service")
    bus.publisher("orders", type="order.placed", schema=Order, description="Placed.")
    bus.publisher("orders", type="order.cancelled")
    bus.subscriber("payments", group="orders", type="payment.failed")(handle)
    bus.subscriber("returns", group="orders")(handle)
    return bus


async def test_channels_operations_and_messages_of_a_bus() -> None:
    """Each declared topic is a channel addressed by its name; publications are one send per
    topic, each subscription a receive identified by its group; types are message names."""
    document = await asyncapi_document(shop(), title="Shop", version="2.1.0")
    assert ("3.0.0", {"title": "Shop", "version": "2.1.0"}) == (
        document["asyncapi"],
        {k: document["info"][k] for k in ("title", "version")},
    )
    assert {"orders": "orders", "payments": "payments", "returns": "returns"} == {
        key: channel["address"] for key, channel in document["channels"].items()
    }
    operations = document["operations"]
    assert {
        "send.orders": ("send", "#/channels/orders"),
        "receive.payments.orders": ("receive", "#/channels/payments"),
        "receive.returns.orders": ("receive", "#/channels/returns"),
    } == {name: (op["action"], op["channel"]["$ref"]) for name, op in operations.items()}
    assert [
        "#/channels/orders/messages/order.placed",
        "#/channels/orders/messages/order.cancelled",
    ] == [m["$ref"] for m in operations["send.orders"]["messages"]]
    receive = operations["receive.payments.orders"]
    assert ("orders", "tests.test_asyncapi.handle", "Handles an event.") == (
        receive["x-choreograph"]["group"],
        receive["x-choreograph"]["handler"],
        receive["summary"],
    )
    messages = document["components"]["messages"]
    assert ["order.placed", "order.cancelled", "payment.failed", "cloudevent"] == list(messages)
    assert ("order.placed", "Placed.", "#/components/schemas/Order") == (
        messages["order.placed"]["name"],
        messages["order.placed"]["summary"],
        messages["order.placed"]["payload"]["$ref"],
    )
    assert "payload" not in messages["order.cancelled"]  # declared without a schema: any data


async def test_every_reference_resolves_from_the_document_root() -> None:
    """Every ``$ref`` (pydantic's nested models included) points at something in the document,
    and each operation's messages are messages of its own channel."""
    document = await asyncapi_document(shop())
    found = list(refs(document))
    assert found
    for _, ref in found:
        resolve(document, ref)
    line = document["components"]["schemas"]["Order"]["properties"]["lines"]["items"]["$ref"]
    assert {"sku"} == set(resolve(document, line)["properties"])
    for operation in document["operations"].values():
        channel = operation["channel"]["$ref"]
        assert all(m["$ref"].startswith(channel + "/messages/") for m in operation["messages"])


@pytest.mark.parametrize(
    ("url", "header", "server"),
    [
        ("kafka://k1:9092,k2:9092", "ce_type", {"host": "k1:9092,k2:9092", "protocol": "kafka"}),
        (
            "amqp://user:secret@rabbit:5672/shop",
            "cloudEvents_type",
            {"host": "rabbit:5672", "protocol": "amqp", "pathname": "/shop"},
        ),
        ("nats://nats:4222", "ce-type", {"host": "nats:4222", "protocol": "nats"}),
        ("memory://", "type", None),
    ],
)
async def test_headers_and_server_follow_the_backend(
    url: str, header: str, server: dict[str, str] | None
) -> None:
    """The CloudEvents attributes are headers as the bus's binding names them, the message's
    type fixed; the server has the broker's host, never its credentials (none when embedded)."""
    document = await asyncapi_document(shop(url))
    headers = document["components"]["messages"]["order.placed"]["headers"]
    common = resolve(document, headers["allOf"][0]["$ref"])
    assert header in common["required"]
    assert {header: {"type": "string", "const": "order.placed"}} == headers["allOf"][1][
        "properties"
    ]
    found = next(iter(document.get("servers", {}).values()), None)
    assert server == (
        found and {k: v for k, v in found.items() if k in ("host", "protocol", "pathname")}
    )
    assert "secret" not in json.dumps(document)


async def test_each_channel_and_receive_says_where_it_lives_on_each_broker() -> None:
    """Channels carry the Kafka topic and the RabbitMQ topic exchange; a receive carries the
    group as Kafka groupId and NATS queue, and names its RabbitMQ queue and dead-letter topic."""
    document = await asyncapi_document(shop())
    bindings = document["channels"]["payments"]["bindings"]
    assert (
        "payments",
        {"name": "payments", "type": "topic", "durable": True, "autoDelete": False},
    ) == (
        bindings["kafka"]["topic"],
        bindings["amqp"]["exchange"],
    )
    receive = document["operations"]["receive.payments.orders"]
    assert (["orders"], "orders", "payments.orders", "payments.dlq") == (
        receive["bindings"]["kafka"]["groupId"]["enum"],
        receive["bindings"]["nats"]["queue"],
        receive["x-choreograph"]["amqpQueue"],
        receive["x-choreograph"]["deadLetterTopic"],
    )


async def test_a_receive_without_a_type_gets_every_message_of_its_channel() -> None:
    """A subscriber that names no type receives all messages declared on the topic, by any bus
    of the document, with the payload the publisher declared; an undeclared topic carries any
    CloudEvent."""
    billing = Bus("kafka://k1:9092", source="billing")
    billing.subscriber("orders", group="billing")(handle)
    billing.subscriber("orders", group="audit", type="order.placed")(handle)
    document = await asyncapi_document([billing, shop()])
    operations = document["operations"]
    assert [
        "#/channels/orders/messages/order.placed",
        "#/channels/orders/messages/order.cancelled",
    ] == [m["$ref"] for m in operations["receive.orders.billing"]["messages"]]
    assert ["#/channels/orders/messages/order.placed"] == [
        m["$ref"] for m in operations["receive.orders.audit"]["messages"]
    ]
    assert ["#/channels/returns/messages/cloudevent"] == [
        m["$ref"] for m in operations["receive.returns.orders"]["messages"]
    ]
    assert (
        "#/components/schemas/Order"
        == (document["components"]["messages"]["order.placed"]["payload"]["$ref"])
    )


async def test_one_type_with_two_schemas_is_two_messages() -> None:
    """Two buses that disagree on a type's payload get a message each (and the same schema on
    two topics shares one)."""
    one, two = Bus("memory://", source="one"), Bus("memory://", source="two")
    one.publisher("a", type="thing.made", schema=Order)
    one.publisher("b", type="thing.made", schema=Order)
    two.publisher("c", type="thing.made", schema={"title": "Thing", "type": "object"})
    document = await asyncapi_document([one, two])
    messages = document["components"]["messages"]
    assert {
        "thing.made": "#/components/schemas/Order",
        "thing.made_2": "#/components/schemas/Thing",
    } == {key: message["payload"]["$ref"] for key, message in messages.items()}
    assert ["thing.made", "thing.made"] == [m["name"] for m in messages.values()]


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[RegistryClient]:
    """An embedded registry with an Avro, a JSON Schema and a Protobuf subject."""
    async with RegistryClient.from_url(f"sqlite:///{tmp_path}/registry.db") as client:
        await client.register("paid-value", json.dumps(AVRO), "AVRO")
        await client.register("made-value", json.dumps(JSON_SCHEMA), "JSON")
        await client.register("shipped-value", PROTO, "PROTOBUF")
        yield client


async def test_registry_subjects_embed_in_their_schema_formats(registry: RegistryClient) -> None:
    """A subject's latest schema is embedded with its format (Avro 1.9.0, JSON Schema draft-07
    with its references moved, Protobuf 3 as text); a bus whose codec encodes with the
    registry describes the wire format, and the registry is found through that codec."""
    bus = Bus("kafka://k1:9092", source="pay", codec=SchemaCodec(registry))
    bus.publisher("payments", type="paid", schema="paid-value")
    bus.publisher("made", type="made", schema="made-value")
    bus.publisher("shipped", type="shipped", schema="shipped-value")
    document = await asyncapi_document(bus)
    schemas = document["components"]["schemas"]
    assert ("application/vnd.apache.avro;version=1.9.0", AVRO) == (
        schemas["paid-value"]["schemaFormat"],
        schemas["paid-value"]["schema"],
    )
    made = schemas["made-value"]
    assert ("application/schema+json;version=draft-07", {"type": "string"}) == (
        made["schemaFormat"],
        resolve(document, made["schema"]["properties"]["id"]["$ref"]),
    )
    assert ("application/vnd.google.protobuf;version=3", PROTO) == (
        schemas["shipped-value"]["schemaFormat"],
        schemas["shipped-value"]["schema"],
    )
    paid = document["components"]["messages"]["paid"]
    assert (
        "application/avro",
        {"subject": "paid-value", "version": 1, "id": 1, "schemaType": "AVRO"},
        "payload",
    ) == (
        paid["contentType"],
        paid["x-choreograph"]["registry"],
        paid["bindings"]["kafka"]["schemaIdLocation"],
    )


async def test_a_subject_without_a_codec_is_plain_json(registry: RegistryClient) -> None:
    """On a bus that does not encode with the registry, a subject describes JSON data."""
    bus = Bus("kafka://k1:9092", source="pay")
    bus.publisher("payments", type="paid", schema="paid-value")
    message = (await asyncapi_document(bus, registry=registry))["components"]["messages"]["paid"]
    assert ("application/json", False) == (
        message["contentType"],
        "schemaIdLocation" in message["bindings"]["kafka"],
    )


async def test_a_subject_needs_a_registry() -> None:
    """Naming a subject with no registry to read it from is a ConfigurationError saying so."""
    bus = Bus("memory://", source="pay")
    bus.publisher("payments", type="paid", schema="paid-value")
    with pytest.raises(ConfigurationError, match="'paid-value' names a registry subject"):
        await asyncapi_document(bus)


async def test_the_document_needs_buses() -> None:
    """Something other than buses is refused with a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="describes a Bus or a list of them"):
        await asyncapi_document([shop(), "bus"])  # type: ignore[list-item]


def test_wire_content_types_are_those_the_registry_codec_sets() -> None:
    """The content types the document gives encoded payloads are the codec's own."""
    assert {
        "AVRO": AVRO_CONTENT_TYPE,
        "JSON": JSON_WIRE_CONTENT_TYPE,
        "PROTOBUF": PROTOBUF_WIRE_CONTENT_TYPE,
    } == WIRE_CONTENT_TYPES


async def test_the_page_shows_channels_operations_and_schemas(registry: RegistryClient) -> None:
    """The page lists each channel with its operations and each message with its payload
    fields (JSON Schema and Avro) and headers; it loads nothing from elsewhere and escapes
    what it shows."""
    bus = shop()
    bus.publisher("payments", type="paid", schema="paid-value")
    document = await asyncapi_document(bus, registry=registry, description="<script>x</script>")
    page = render_page(document)
    for text in (
        'id="channel-orders"',
        "receive.payments.orders",
        "<span class='badge send'>send</span>",
        'id="message-order.placed"',
        "<code>lines.sku</code>",
        "array of Line",
        "<code>ce_type</code>",
        "const &quot;order.placed&quot;",
        "application/vnd.apache.avro;version=1.9.0",
    ):
        assert text in page, text
    assert "<script>" not in page
    assert [] == [t for t in ("src=", "@import", "http://", "https://") if t in page]


async def test_the_app_serves_the_page_and_the_raw_document() -> None:
    """``/`` is the page; ``/asyncapi.json`` and ``/asyncapi.yaml`` are the same document."""
    document = await asyncapi_document(shop())
    client = TestClient(create_app(document))
    page, as_json, as_yaml = (client.get(p) for p in ("/", "/asyncapi.json", "/asyncapi.yaml"))
    assert (200, 200, 200) == (page.status_code, as_json.status_code, as_yaml.status_code)
    assert ("text/html", "application/json", "application/yaml") == tuple(
        r.headers["content-type"].split(";")[0] for r in (page, as_json, as_yaml)
    )
    assert document == as_json.json() == yaml.safe_load(as_yaml.text)
    assert to_yaml(document) == as_yaml.text
