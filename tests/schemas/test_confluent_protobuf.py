"""confluent-kafka's ProtobufSerializer and ProtobufDeserializer, unchanged, against our live
server, with a message that imports google/protobuf/timestamp.proto."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import descriptor_pool, message_factory, timestamp_pb2

try:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.protobuf import (
        ProtobufDeserializer,
        ProtobufSerializer,
    )
    from confluent_kafka.serialization import MessageField, SerializationContext

    MISSING = ""
except ModuleNotFoundError as exc:  # fail each test, not the whole collection
    MISSING = (
        f"confluent-kafka's Protobuf serdes cannot import {exc.name!r}: install "
        "'confluent-kafka[schemaregistry,protobuf]' (the test extra should pull it in)"
    )

from broker.envelope import Event
from schemas import RegistryClient, SchemaCodec
from schemas.compatibility import Resolved, compiled_proto
from schemas.model import Schema, SchemaType
from tests.schemas.conftest import LiveServer

ORDER = """syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";

message Order {
  string id = 1;
  google.protobuf.Timestamp placed_at = 2;
  repeated Line lines = 3;
  message Line { string sku = 1; int32 quantity = 2; }
}
"""


@pytest.fixture(autouse=True)
def _needs_confluent_protobuf() -> None:
    if MISSING:
        pytest.fail(MISSING, pytrace=False)


def classes() -> tuple[Any, Any]:
    """Generated-style message classes for shop.Order and shop.Order.Line."""
    file = compiled_proto(Resolved(Schema(ORDER, SchemaType.PROTOBUF))).file
    file.name = "shop/order.proto"
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    order = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order"))
    line = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order.Line"))
    return order, line


@pytest.fixture
def client(live: LiveServer) -> Iterator[SchemaRegistryClient]:
    sr = SchemaRegistryClient({"url": live.url})
    yield sr
    sr.close()


def ctx(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def an_order(order_class: Any, line_class: Any) -> Any:
    order = order_class(id="o-1", lines=[line_class(sku="tea", quantity=2)])
    order.placed_at.FromSeconds(1_767_322_800)
    return order


@pytest.mark.parametrize("skip_known_types", [True, False])
def test_protobuf_serdes_round_trip_through_our_server(
    live: LiveServer, skip_known_types: bool
) -> None:
    """The serializer registers the descriptor (with or without a timestamp.proto reference);
    the deserializer fetches it back as format=serialized and reads the message."""
    order_class, line_class = classes()
    registry = SchemaRegistryClient({"url": live.url})
    serializer = ProtobufSerializer(order_class, registry, {"skip.known.types": skip_known_types})
    message = an_order(order_class, line_class)
    data = serializer(message, ctx("orders"))
    decoded = ProtobufDeserializer(order_class, {}, SchemaRegistryClient({"url": live.url}))(
        data, ctx("orders")
    )
    latest = registry.get_latest_version("orders-value")
    expected_refs = [] if skip_known_types else ["google/protobuf/timestamp.proto"]
    assert message == decoded
    assert ("PROTOBUF", expected_refs) == (
        latest.schema.schema_type,
        [ref.name for ref in latest.schema.references],
    )
    assert b"\x00" == data[5:6]  # message indexes [0]


def test_confluent_bytes_decode_on_the_bus_and_ours_in_confluents_deserializer(
    live: LiveServer,
) -> None:
    """A nested message written by confluent-kafka decodes with SchemaCodec; an event the
    bus encodes decodes with ProtobufDeserializer."""
    order_class, line_class = classes()
    registry = SchemaRegistryClient({"url": live.url})
    theirs = ProtobufSerializer(line_class, registry)(
        line_class(sku="jam", quantity=3), ctx("lines")
    )

    async def ours() -> tuple[Any, bytes]:
        async with RegistryClient.from_url(live.url) as ours_client:
            codec = SchemaCodec(ours_client)
            decoded = await codec.decode("lines", Event(type="t", source="s", data=theirs))
            ProtobufSerializer(order_class, registry)(an_order(order_class, line_class), ctx("o"))
            data = {"id": "o-2", "placed_at": "2026-01-02T03:04:05Z", "lines": []}
            encoded = await codec.encode("o", Event(type="t", source="s", data=data))
            return decoded.data, encoded.data

    decoded, encoded = asyncio.run(ours())
    reader = ProtobufDeserializer(order_class, {}, SchemaRegistryClient({"url": live.url}))
    read_back = reader(encoded, ctx("o"))
    assert {"sku": "jam", "quantity": 3} == decoded
    assert b"\x04\x00\x00" == theirs[5:8]  # message indexes [0, 0]
    assert ("o-2", 1767323045) == (read_back.id, read_back.placed_at.seconds)
