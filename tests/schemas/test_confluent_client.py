"""confluent-kafka's SchemaRegistryClient and serializers, unchanged, against our live server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

try:
    from confluent_kafka.schema_registry import (
        Schema,
        SchemaReference,
        SchemaRegistryClient,
    )
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.schema_registry.error import SchemaRegistryError
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    MISSING = ""
except ModuleNotFoundError as exc:  # fail each test, not the whole collection
    MISSING = (
        f"confluent-kafka's schema registry client cannot import {exc.name!r}: install "
        "'confluent-kafka[schemaregistry,avro,json]' (the test extra should pull it in)"
    )

from schemas import RegistryClient, SchemaType
from schemas import Schema as OurSchema
from schemas.registry import Registry
from schemas.serde import Deserializer, Serializer
from schemas.server import BasicAuth
from tests.schemas.conftest import LiveServer, start_server


@pytest.fixture(autouse=True)
def _needs_confluent_client() -> None:
    if MISSING:
        pytest.fail(MISSING, pytrace=False)


def avro_record(name: str, *fields: dict[str, object], namespace: str = "shop") -> str:
    return json.dumps(
        {"type": "record", "name": name, "namespace": namespace, "fields": list(fields)}
    )


USER_V1 = avro_record("User", {"name": "name", "type": "string"})
USER_V2 = avro_record(
    "User", {"name": "name", "type": "string"}, {"name": "age", "type": "int", "default": 0}
)
USER_BAD = avro_record(
    "User", {"name": "name", "type": "string"}, {"name": "email", "type": "string"}
)
ORDER_JSON = json.dumps(
    {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Order",
        "type": "object",
        "properties": {"id": {"type": "string"}, "amount": {"type": "number"}},
        "required": ["id", "amount"],
    }
)


@pytest.fixture
def client(live: LiveServer) -> Iterator[SchemaRegistryClient]:
    sr = SchemaRegistryClient({"url": live.url})
    yield sr
    sr.close()


def fresh(live: LiveServer) -> SchemaRegistryClient:
    """A client without caches, so every call reaches the server."""
    return SchemaRegistryClient({"url": live.url})


def error_of(info: pytest.ExceptionInfo[SchemaRegistryError]) -> tuple[int, int]:
    return info.value.http_status_code, info.value.error_code


def test_register_is_idempotent_and_ids_are_global(live: LiveServer) -> None:
    """The same schema gets the same id again and under another subject."""
    first = fresh(live).register_schema("users-value", Schema(USER_V1, "AVRO"))
    again = fresh(live).register_schema("users-value", Schema(USER_V1, "AVRO"))
    other = fresh(live).register_schema("people-value", Schema(USER_V1, "AVRO"))
    assert (first, first, [1]) == (again, other, fresh(live).get_versions("users-value"))


def test_versions_latest_and_get_version(client: SchemaRegistryClient) -> None:
    """Versions count from 1, latest is the newest and get_version reads one."""
    client.register_schema("users-value", Schema(USER_V1, "AVRO"))
    second = client.register_schema("users-value", Schema(USER_V2, "AVRO"))
    latest = client.get_latest_version("users-value")
    first = client.get_version("users-value", 1)
    assert (2, second, "users-value") == (latest.version, latest.schema_id, latest.subject)
    assert json.loads(USER_V2) == json.loads(latest.schema.schema_str)
    assert (1, [1, 2]) == (first.version, client.get_versions("users-value"))


def test_get_schema_by_id_types_and_subjects(live: LiveServer) -> None:
    """Schemas by id, the supported types, and which subjects use an id."""
    sr = fresh(live)
    schema_id = sr.register_schema("a-value", Schema(ORDER_JSON, "JSON"))
    sr.register_schema("b-value", Schema(ORDER_JSON, "JSON"))
    fetched = fresh(live).get_schema(schema_id)
    versions = fresh(live).get_schema_versions(schema_id)
    assert ("JSON", json.loads(ORDER_JSON)) == (fetched.schema_type, json.loads(fetched.schema_str))
    assert ["a-value", "b-value"] == fresh(live).get_subjects_by_schema_id(schema_id)
    assert [("a-value", 1), ("b-value", 1)] == [(v.subject, v.version) for v in versions]
    assert {"AVRO", "JSON", "PROTOBUF"} == set(sr.get_schema_types())
    assert ["a-value", "b-value"] == sr.get_subjects()


def test_lookup_finds_the_version_and_unknown_schema_is_40403(live: LiveServer) -> None:
    """lookup_schema answers the subject, version and id; an unregistered schema is 40403."""
    sr = fresh(live)
    schema_id = sr.register_schema("users-value", Schema(USER_V1, "AVRO"))
    found = fresh(live).lookup_schema("users-value", Schema(USER_V1, "AVRO"))
    assert ("users-value", 1, schema_id) == (found.subject, found.version, found.schema_id)
    with pytest.raises(SchemaRegistryError) as info:
        fresh(live).lookup_schema("users-value", Schema(USER_V2, "AVRO"))
    assert (404, 40403) == error_of(info)
    with pytest.raises(SchemaRegistryError) as missing:
        fresh(live).lookup_schema("nobody-value", Schema(USER_V1, "AVRO"))
    assert (404, 40401) == error_of(missing)


def test_incompatible_schema_is_refused_with_409(client: SchemaRegistryClient) -> None:
    """A new field without a default breaks BACKWARD: HTTP 409, error code 409."""
    client.register_schema("users-value", Schema(USER_V1, "AVRO"))
    with pytest.raises(SchemaRegistryError) as info:
        client.register_schema("users-value", Schema(USER_BAD, "AVRO"))
    assert (409, 409) == error_of(info)


def test_invalid_schema_is_42201(client: SchemaRegistryClient) -> None:
    """A schema that does not parse is refused with 42201."""
    with pytest.raises(SchemaRegistryError) as info:
        client.register_schema("bad-value", Schema('{"type": "record", "name": "X"}', "AVRO"))
    assert (422, 42201) == error_of(info)


def test_test_compatibility_against_latest_and_all(client: SchemaRegistryClient) -> None:
    """test_compatibility and test_compatibility_all_versions give the verdict."""
    client.register_schema("users-value", Schema(USER_V1, "AVRO"))
    good, bad = Schema(USER_V2, "AVRO"), Schema(USER_BAD, "AVRO")
    assert (True, False) == (
        client.test_compatibility("users-value", good),
        client.test_compatibility("users-value", bad, version=1, verbose=True),
    )
    assert (True, False) == (
        client.test_compatibility_all_versions("users-value", good),
        client.test_compatibility_all_versions("users-value", bad),
    )


def test_compatibility_config_global_and_per_subject(live: LiveServer) -> None:
    """Levels are set and read globally and per subject; an unknown level is 42203."""
    sr = fresh(live)
    assert "BACKWARD" == sr.get_compatibility()
    sr.set_compatibility(level="FULL")
    sr.set_compatibility("users-value", "NONE")
    assert ("FULL", "NONE") == (sr.get_compatibility(), sr.get_compatibility("users-value"))
    assert "NONE" == sr.get_config("users-value").compatibility_level.value
    sr.delete_config("users-value")
    with pytest.raises(SchemaRegistryError) as unset:
        sr.get_compatibility("users-value")
    assert (404, 40408) == error_of(unset)
    with pytest.raises(SchemaRegistryError) as info:
        sr.set_compatibility(level="SIDEWAYS")
    assert (422, 42203) == error_of(info)


def test_soft_and_hard_delete_follow_confluent_rules(live: LiveServer) -> None:
    """Soft delete hides, a second soft delete is 40404/40406, hard delete needs soft first."""
    sr = fresh(live)
    sr.register_schema("users-value", Schema(USER_V1, "AVRO"))
    sr.register_schema("users-value", Schema(USER_V2, "AVRO"))
    with pytest.raises(SchemaRegistryError) as not_soft:
        sr.delete_version("users-value", 2, permanent=True)
    assert (404, 40407) == error_of(not_soft)
    assert 2 == sr.delete_version("users-value", 2)
    with pytest.raises(SchemaRegistryError) as twice:
        sr.delete_version("users-value", 2)
    assert (404, 40406) == error_of(twice)
    assert 2 == sr.delete_version("users-value", 2, permanent=True)
    with pytest.raises(SchemaRegistryError) as subject_not_soft:
        sr.delete_subject("users-value", permanent=True)
    assert (404, 40405) == error_of(subject_not_soft)
    assert [1] == sr.delete_subject("users-value")
    with pytest.raises(SchemaRegistryError) as subject_twice:
        sr.delete_subject("users-value")
    assert (404, 40404) == error_of(subject_twice)
    assert ([], ["users-value"]) == (sr.get_subjects(), sr.get_subjects(deleted=True))
    assert [1] == sr.delete_subject("users-value", permanent=True)
    assert [] == sr.get_subjects(deleted=True)


def test_missing_subject_and_version_errors(client: SchemaRegistryClient) -> None:
    """Unknown subject 40401, unknown version 40402, unknown id 40403."""
    client.register_schema("users-value", Schema(USER_V1, "AVRO"))
    with pytest.raises(SchemaRegistryError) as subject:
        client.get_latest_version("nobody-value")
    with pytest.raises(SchemaRegistryError) as version:
        client.get_version("users-value", 7)
    with pytest.raises(SchemaRegistryError) as schema_id:
        client.get_schema(999)
    assert [(404, 40401), (404, 40402), (404, 40403)] == [
        error_of(subject),
        error_of(version),
        error_of(schema_id),
    ]


def test_modes_and_read_only(live: LiveServer) -> None:
    """A READONLY subject refuses registrations with 42205; modes read back."""
    sr = fresh(live)
    assert "READWRITE" == sr.get_global_mode()
    assert "READONLY" == sr.update_mode("frozen-value", "READONLY")
    assert "READONLY" == sr.get_mode("frozen-value")
    with pytest.raises(SchemaRegistryError) as info:
        sr.register_schema("frozen-value", Schema(USER_V1, "AVRO"))
    assert (422, 42205) == error_of(info)
    assert "READONLY" == sr.delete_mode("frozen-value")
    assert ["."] == sr.get_contexts()


def test_subject_with_a_slash(client: SchemaRegistryClient) -> None:
    """A subject containing '/' (percent-encoded by the client) works end to end."""
    schema_id = client.register_schema("team/users-value", Schema(USER_V1, "AVRO"))
    latest = client.get_latest_version("team/users-value")
    assert (schema_id, "team/users-value") == (latest.schema_id, latest.subject)
    assert ["team/users-value"] == client.get_subjects()


def test_references_are_resolved_and_reported(client: SchemaRegistryClient) -> None:
    """A schema may reference another subject's version; referencedby lists the user."""
    client.register_schema(
        "address", Schema(avro_record("Address", {"name": "zip", "type": "string"}), "AVRO")
    )
    customer = avro_record(
        "Customer", {"name": "name", "type": "string"}, {"name": "address", "type": "shop.Address"}
    )
    refs = [SchemaReference("shop.Address", "address", 1)]
    customer_id = client.register_schema("customer-value", Schema(customer, "AVRO", refs))
    fetched = client.get_latest_version("customer-value").schema
    assert [customer_id] == client.get_referenced_by("address", 1)
    assert [("shop.Address", "address", 1)] == [
        (r.name, r.subject, r.version) for r in fetched.references
    ]
    with pytest.raises(SchemaRegistryError) as info:
        client.delete_version("address", 1)
    assert (422, 42206) == error_of(info)


def test_basic_auth_is_enforced(registry: Registry) -> None:
    """With basic auth on, the right credentials work and none give 401."""
    srv = start_server(registry, auth=BasicAuth("alice", "s3cret"))
    try:
        good = SchemaRegistryClient({"url": srv.url, "basic.auth.user.info": "alice:s3cret"})
        assert 1 == good.register_schema("users-value", Schema(USER_V1, "AVRO"))
        with pytest.raises(SchemaRegistryError) as info:
            SchemaRegistryClient({"url": srv.url}).get_subjects()
        assert 401 == info.value.http_status_code
    finally:
        srv.stop()


# -- serializers --------------------------------------------------------------------------------


def ctx(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def test_avro_serializer_round_trip_through_our_server(client: SchemaRegistryClient) -> None:
    """AvroSerializer auto-registers <topic>-value and AvroDeserializer reads it back."""
    serializer = AvroSerializer(client, USER_V2)
    data = serializer({"name": "ada", "age": 36}, ctx("users"))
    decoded = AvroDeserializer(client)(data, ctx("users"))
    assert ({"name": "ada", "age": 36}, ["users-value"]) == (decoded, client.get_subjects())
    assert 0 == data[0]


def test_json_serializer_round_trip_through_our_server(client: SchemaRegistryClient) -> None:
    """JSONSerializer registers a JSON schema and JSONDeserializer reads the message back."""
    data = JSONSerializer(ORDER_JSON, client)({"id": "o-1", "amount": 9.5}, ctx("orders"))
    decoded = JSONDeserializer(ORDER_JSON, schema_registry_client=client)(data, ctx("orders"))
    assert {"id": "o-1", "amount": 9.5} == decoded
    assert "JSON" == client.get_latest_version("orders-value").schema.schema_type


def test_confluent_bytes_decode_with_our_deserializer_and_back(live: LiveServer) -> None:
    """A message from confluent's AvroSerializer decodes with ours, and ours with theirs."""
    sr = fresh(live)
    theirs = AvroSerializer(sr, USER_V2)({"name": "ada", "age": 36}, ctx("users"))

    async def ours() -> tuple[object, bytes]:
        async with RegistryClient.from_url(live.url) as client:
            decoded = await Deserializer(client).deserialize(theirs)
            encoded = await Serializer(client, OurSchema(USER_V2)).serialize(
                "users", {"name": "bob", "age": 7}
            )
            return decoded, encoded

    decoded, encoded = asyncio.run(ours())
    assert {"name": "ada", "age": 36} == decoded
    assert {"name": "bob", "age": 7} == AvroDeserializer(fresh(live))(encoded, ctx("users"))
    assert theirs[:5] == encoded[:5]


def test_our_json_serializer_is_read_by_confluents_json_deserializer(live: LiveServer) -> None:
    """JSON written by schemas.Serializer decodes with confluent-kafka's JSONDeserializer."""

    async def ours() -> bytes:
        async with RegistryClient.from_url(live.url) as client:
            schema = OurSchema(ORDER_JSON, SchemaType.JSON)
            return await Serializer(client, schema).serialize("orders", {"id": "o", "amount": 1})

    encoded = asyncio.run(ours())
    decoded = JSONDeserializer(ORDER_JSON, schema_registry_client=fresh(live))(
        encoded, ctx("orders")
    )
    assert {"id": "o", "amount": 1} == decoded
