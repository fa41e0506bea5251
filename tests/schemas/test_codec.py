"""The bus codec and the serializers: wire format, strategies, validation errors, decoding."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from schemas import (
    RegistryClient,
    Schema,
    SchemaCodec,
    SchemaDecodeError,
    SchemaType,
    SchemaValidationError,
    json_schema_for,
    pack,
    unpack,
)
from schemas.serde import (
    AVRO_CONTENT_TYPE,
    JSON_WIRE_CONTENT_TYPE,
    Deserializer,
    Serializer,
    record_name,
    subject_strategy,
)


@dataclasses.dataclass(frozen=True)
class FakeEvent:
    """The part of broker.envelope.Event that the codec uses."""

    type: str
    data: Any
    datacontenttype: str | None = "application/json"
    dataschema: str | None = None

    def replace(self, **changes: Any) -> FakeEvent:
        return dataclasses.replace(self, **changes)


ORDER_AVRO = json.dumps(
    {
        "type": "record",
        "name": "Order",
        "namespace": "shop",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "amount", "type": "double"},
            {"name": "note", "type": ["null", "string"], "default": None},
        ],
    }
)
ORDER_JSON = json.dumps(
    {
        "type": "object",
        "properties": {"id": {"type": "string"}, "amount": {"type": "number", "minimum": 0}},
        "required": ["id", "amount"],
    }
)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[RegistryClient]:
    async with RegistryClient.from_url(f"sqlite:///{tmp_path}/codec.db") as registry_client:
        yield registry_client


def test_wire_format_is_magic_zero_and_a_big_endian_id() -> None:
    """pack writes 0x00 + 4-byte big-endian id; unpack reads it back."""
    assert b"\x00\x00\x00\x01\x02payload" == pack(258, b"payload")
    assert (258, b"payload") == unpack(pack(258, b"payload"))
    with pytest.raises(SchemaDecodeError):
        unpack(b"\x01\x00\x00\x00\x01")
    with pytest.raises(SchemaDecodeError):
        unpack(b"\x00\x01")


def test_subject_name_strategies() -> None:
    """topic -> <topic>-value, record -> the record name, topic-record -> <topic>-<record>."""
    assert ("orders-value", "orders-key", "shop.Order", "orders-shop.Order") == (
        subject_strategy("topic")("orders", None, False),
        subject_strategy("topic")("orders", None, True),
        subject_strategy("record")("orders", "shop.Order", False),
        subject_strategy("TopicRecordNameStrategy")("orders", "shop.Order", False),
    )
    assert "shop.Order" == record_name(Schema(ORDER_AVRO))


async def test_encode_validates_and_writes_the_wire_format(client: RegistryClient) -> None:
    """A bound topic's data becomes wire bytes with an Avro content type and a dataschema."""
    schema_id = await client.register("orders-value", ORDER_AVRO)
    codec = SchemaCodec(client)
    event = await codec.encode("orders", FakeEvent("order.placed", {"id": "o1", "amount": 5.0}))
    assert (0, schema_id) == (event.data[0], unpack(event.data)[0])
    assert (AVRO_CONTENT_TYPE, f"{client.url}/schemas/ids/{schema_id}") == (
        event.datacontenttype,
        event.dataschema,
    )
    decoded = await codec.decode("orders", event)
    assert ({"id": "o1", "amount": 5.0, "note": None}, "application/json") == (
        decoded.data,
        decoded.datacontenttype,
    )


async def test_encode_refuses_bad_data_naming_topic_subject_and_field(
    client: RegistryClient,
) -> None:
    """A payload that does not match raises a ValueError naming the topic, subject and field."""
    await client.register("orders-v1", ORDER_AVRO)
    codec = SchemaCodec(client, {"orders": "orders-v1"})
    with pytest.raises(SchemaValidationError) as info:
        await codec.encode("orders", FakeEvent("order.placed", {"id": "o1", "amount": "lots"}))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert all(part in message for part in ("'orders'", "'orders-v1'", "shop.Order.amount")), (
        message
    )


async def test_json_schema_subjects_encode_and_name_the_field(client: RegistryClient) -> None:
    """JSON subjects validate with jsonschema; errors name the JSON path."""
    await client.register("payments-value", ORDER_JSON, "JSON")
    codec = SchemaCodec(client)
    good = await codec.encode("payments", FakeEvent("p", {"id": "p1", "amount": 3}))
    assert JSON_WIRE_CONTENT_TYPE == good.datacontenttype
    assert {"id": "p1", "amount": 3} == (await codec.decode("payments", good)).data
    with pytest.raises(SchemaValidationError, match=r"\$\.amount"):
        await codec.encode("payments", FakeEvent("p", {"id": "p1", "amount": -1}))


async def test_topics_without_a_schema_pass_through(client: RegistryClient) -> None:
    """No subject registered for the topic: encode and decode change nothing."""
    codec = SchemaCodec(client)
    event = FakeEvent("t", {"free": "form"})
    raw = FakeEvent("t", b"\x01raw", "application/octet-stream")
    assert (event, raw) == (await codec.encode("loose", event), await codec.decode("loose", raw))


async def test_decode_refuses_unknown_ids_and_bad_bytes(client: RegistryClient) -> None:
    """Unknown schema ids and non-wire bytes on a schema'd topic raise SchemaDecodeError."""
    await client.register("orders-value", ORDER_AVRO)
    codec = SchemaCodec(client)
    with pytest.raises(SchemaDecodeError, match="unknown schema id 77"):
        await codec.decode("orders", FakeEvent("t", pack(77, b"x")))
    with pytest.raises(SchemaDecodeError, match="undecodable"):
        await codec.decode("orders", FakeEvent("t", b"plain bytes"))
    with pytest.raises(SchemaDecodeError):
        await codec.decode("orders", FakeEvent("t", pack(1, b"\xff\xff\xff")))
    assert "undecodable" == SchemaDecodeError.dlq_reason


async def test_record_strategy_uses_the_event_type(client: RegistryClient) -> None:
    """With the record strategy the CloudEvent type names the subject."""
    await client.register("shop.Order", ORDER_AVRO)
    codec = SchemaCodec(client, strategy="record")
    event = await codec.encode("any-topic", FakeEvent("shop.Order", {"id": "o", "amount": 1.0}))
    assert AVRO_CONTENT_TYPE == event.datacontenttype


async def test_already_encoded_data_passes_through(client: RegistryClient) -> None:
    """Encoding wire bytes again (e.g. a replay) leaves them alone."""
    await client.register("orders-value", ORDER_AVRO)
    codec = SchemaCodec(client)
    once = await codec.encode("orders", FakeEvent("t", {"id": "o", "amount": 1.0}))
    assert once == await codec.encode("orders", once)


class Payment(BaseModel):
    id: str
    amount: float


async def test_pydantic_models_give_json_schemas_and_values(client: RegistryClient) -> None:
    """A pydantic model registers as a JSON schema and its instances serialize."""
    schema = json_schema_for(Payment)
    serializer = Serializer(client, Payment)
    data = await serializer.serialize("payments", Payment(id="p", amount=2.5))
    assert (SchemaType.JSON, "Payment") == (schema.type, schema.parsed()["title"])
    assert {"id": "p", "amount": 2.5} == await Deserializer(client).deserialize(data)
    assert ["payments-value"] == await client.subjects()


async def test_serializer_without_auto_register_needs_the_schema(client: RegistryClient) -> None:
    """auto_register=False looks the schema up and fails when it is not registered."""
    serializer = Serializer(client, Schema(ORDER_AVRO), auto_register=False)
    with pytest.raises(LookupError):
        await serializer.serialize("orders", {"id": "o", "amount": 1.0})
