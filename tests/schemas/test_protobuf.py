"""Protobuf in the registry: .proto text and descriptors, imports through references and
well-known types, validity, normalization and the bus codec."""

from __future__ import annotations

import base64

import pytest
from google.protobuf import timestamp_pb2

from broker.envelope import Event
from schemas import RegistryClient, SchemaCodec, SchemaDecodeError, SchemaValidationError
from schemas.compatibility import Resolved, compiled_proto
from schemas.errors import InvalidSchemaError
from schemas.model import Reference, Schema, SchemaType
from schemas.proto_serde import read_indexes, write_indexes
from schemas.registry import Registry

ADDRESS = """syntax = "proto3";
package shop;
message Address { string zip = 1; }
"""
ORDER = """syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
import "shop/address.proto";

// An order.
message Order {
  string id = 1;
  google.protobuf.Timestamp placed_at = 2;
  Address ship_to = 3;
  repeated Line lines = 4;
  message Line { string sku = 1; int32 quantity = 2; }
}
message Refund { string order_id = 1; }
"""
ADDRESS_REF = Reference("shop/address.proto", "address", 1)


def proto(text: str, *refs: Reference) -> Schema:
    return Schema(text, SchemaType.PROTOBUF, refs)


async def register_order(registry: Registry) -> int:
    await registry.register("address", proto(ADDRESS))
    return (await registry.register("orders-value", proto(ORDER, ADDRESS_REF))).id


async def test_proto_text_with_a_well_known_import_and_a_reference_registers(
    registry: Registry,
) -> None:
    """Timestamp needs no reference; the imported address file comes from its reference."""
    schema_id = await register_order(registry)
    stored = await registry.schema(schema_id)
    assert (ORDER, SchemaType.PROTOBUF, (ADDRESS_REF,)) == (
        stored.text,
        stored.type,
        stored.references,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('syntax = "proto3";\nmessage A { Missing m = 1; }', 'line 2:13: "Missing" is not defined'),
        (
            'syntax = "proto3";\nimport "other.proto";\nmessage A {}',
            "an import needs a reference named after the imported file",
        ),
        ("message {", "Expected message name"),
    ],
)
async def test_invalid_proto_is_42201_with_protocs_reason(
    registry: Registry, text: str, expected: str
) -> None:
    """protoc's error, with its line and column, is the message of InvalidSchemaError."""
    with pytest.raises(InvalidSchemaError) as info:
        await registry.register("bad-value", proto(text))
    assert expected in str(info.value)


async def test_a_descriptor_and_its_text_are_the_same_schema(registry: Registry) -> None:
    """A base64 FileDescriptorProto (what confluent-kafka sends) gets the text's id."""
    schema_id = await register_order(registry)
    resolved = Resolved(proto(ORDER, ADDRESS_REF), (("shop/address.proto", proto(ADDRESS)),))
    serialized = compiled_proto(resolved).serialized()
    again = await registry.register("orders-value", proto(serialized, ADDRESS_REF))
    assert (schema_id, 1) == (again.id, again.version)


async def test_whitespace_and_comments_do_not_make_a_new_protobuf_schema(
    registry: Registry,
) -> None:
    """Equal descriptors are one schema, however the text is laid out."""
    first = await registry.register("a-value", proto(ADDRESS))
    second = await registry.register("a-value", proto("// c\n" + ADDRESS.replace(" ", "  ")))
    assert (first.id, first.version) == (second.id, second.version)


async def test_normalize_merges_protobuf_schemas_that_differ_in_field_order(
    registry: Registry,
) -> None:
    """With normalize=true fields are compared by number, whatever order they are written in."""
    one = 'syntax = "proto3";\nmessage A { string a = 1; int32 b = 2; }'
    two = 'syntax = "proto3";\nmessage A { int32 b = 2; string a = 1; }'
    first = await registry.register("a-value", proto(one), normalize=True)
    second = await registry.register("a-value", proto(two), normalize=True)
    plain = await registry.register("b-value", proto(two))
    assert (first.id, first.version) == (second.id, second.version)
    assert first.id != plain.id


async def test_format_serialized_gives_the_descriptor(registry: Registry) -> None:
    """format=serialized returns a base64 FileDescriptorProto importing its dependencies."""
    from google.protobuf.descriptor_pb2 import FileDescriptorProto

    schema_id = await register_order(registry)
    served = await registry.formatted(await registry.schema(schema_id), "serialized")
    file = FileDescriptorProto.FromString(base64.b64decode(served.text))
    assert ["Order", "Refund"] == [m.name for m in file.message_type]
    assert ["google/protobuf/timestamp.proto", "shop/address.proto"] == list(file.dependency)


def test_message_indexes_follow_confluents_encoding() -> None:
    """[0] is one zero byte; other paths are a zigzag count then zigzag indexes."""
    assert b"\x00" == write_indexes([0])
    assert b"\x04\x02\x00" == write_indexes([1, 0])
    assert ((1, 0), 3) == read_indexes(b"\x04\x02\x00rest")
    assert ((0,), 1) == read_indexes(b"\x00rest")


async def test_the_bus_codec_round_trips_protobuf_events(registry: Registry) -> None:
    """Encode validates and writes wire bytes with message indexes; decode reads them back."""
    schema_id = await register_order(registry)
    client = RegistryClient.embedded(registry)
    codec = SchemaCodec(client)
    data = {
        "id": "o-1",
        "placed_at": "2026-01-02T03:04:05Z",
        "ship_to": {"zip": "75001"},
        "lines": [{"sku": "tea", "quantity": 2}],
    }
    event = Event(type="order.placed", source="shop", data=data)
    encoded = await codec.encode("orders", event)
    decoded = await codec.decode("orders", encoded)
    assert b"\x00" + schema_id.to_bytes(4, "big") + b"\x00" == encoded.data[:6]
    assert "application/vnd.schemaregistry.protobuf" == encoded.datacontenttype
    assert data == decoded.data


async def test_the_codec_refuses_data_that_does_not_fit(registry: Registry) -> None:
    """An unknown field or a wrong type is a SchemaValidationError naming the message."""
    await register_order(registry)
    codec = SchemaCodec(RegistryClient.embedded(registry))
    event = Event(type="order.placed", source="shop", data={"id": "o-1", "colour": "red"})
    with pytest.raises(SchemaValidationError) as info:
        await codec.encode("orders", event)
    assert "shop.Order" in str(info.value)


async def test_undecodable_protobuf_bytes_raise_schema_decode_error(registry: Registry) -> None:
    """Indexes naming no message, or a broken message, are SchemaDecodeError (to the DLQ)."""
    schema_id = await register_order(registry)
    codec = SchemaCodec(RegistryClient.embedded(registry))
    header = b"\x00" + schema_id.to_bytes(4, "big")
    for payload in (header + b"\x02\x0e", header + b"\x00\x0a\xff"):
        event = Event(type="order.placed", source="shop", data=payload)
        with pytest.raises(SchemaDecodeError):
            await codec.decode("orders", event)


def test_a_message_object_of_another_type_is_refused() -> None:
    """A protobuf message object whose type the schema does not define is not written."""
    from schemas.proto_serde import ProtobufWireCodec

    text = 'syntax = "proto3";\nimport "google/protobuf/timestamp.proto";\nmessage A {}\n'
    codec = ProtobufWireCodec(1, Resolved(proto(text)))
    with pytest.raises(SchemaValidationError):
        codec.encode(timestamp_pb2.Timestamp(seconds=5))
