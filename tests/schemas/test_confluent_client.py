"""confluent-kafka's SchemaRegistryClient and serializers, unchanged, against our server."""

from __future__ import annotations

import json

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from tests.schemas.conftest import LiveServer

USER_V1 = json.dumps(
    {
        "type": "record",
        "name": "User",
        "namespace": "shop",
        "fields": [{"name": "name", "type": "string"}],
    }
)
USER_V2 = json.dumps(
    {
        "type": "record",
        "name": "User",
        "namespace": "shop",
        "fields": [
            {"name": "name", "type": "string"},
            {"name": "age", "type": "int", "default": 0},
        ],
    }
)
USER_BAD = json.dumps(
    {
        "type": "record",
        "name": "User",
        "namespace": "shop",
        "fields": [{"name": "name", "type": "string"}, {"name": "email", "type": "string"}],
    }
)


@pytest.fixture
def client(live: LiveServer) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": live.url})


def test_register_returns_an_id_and_is_idempotent(client: SchemaRegistryClient) -> None:
    """Registering the same schema twice gives the same id; a second subject shares it."""
    first = client.register_schema("users-value", Schema(USER_V1, "AVRO"))
    again = SchemaRegistryClient({"url": client._rest_client.base_urls[0]}).register_schema(
        "users-value", Schema(USER_V1, "AVRO")
    )
    other = client.register_schema("people-value", Schema(USER_V1, "AVRO"))
    assert (first, first) == (again, other)


def test_latest_version_and_versions(client: SchemaRegistryClient) -> None:
    """Versions count up from 1 and latest is the newest."""
    client.register_schema("users-value", Schema(USER_V1, "AVRO"))
    second = client.register_schema("users-value", Schema(USER_V2, "AVRO"))
    latest = client.get_latest_version("users-value")
    assert (2, second, [1, 2]) == (
        latest.version,
        latest.schema_id,
        client.get_versions("users-value"),
    )
    assert json.loads(USER_V2) == json.loads(latest.schema.schema_str)


def test_incompatible_schema_is_refused_with_409(client: SchemaRegistryClient) -> None:
    """A new required field without default breaks BACKWARD: HTTP 409."""
    client.register_schema("users-value", Schema(USER_V1, "AVRO"))
    with pytest.raises(SchemaRegistryError) as info:
        client.register_schema("users-value", Schema(USER_BAD, "AVRO"))
    assert (409, 409) == (info.value.http_status_code, info.value.error_code)
