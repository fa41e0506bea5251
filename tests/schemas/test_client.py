"""RegistryClient behaves the same over HTTP and embedded, with caches and clear errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schemas import (
    Compatibility,
    RegistryClient,
    RegistryUnavailableError,
    Schema,
    SchemaNotFoundError,
    SchemaType,
    SubjectNotFoundError,
)
from schemas.errors import IncompatibleSchemaError, InvalidInputError
from tests.schemas.conftest import LiveServer, free_port

V1 = json.dumps({"type": "record", "name": "A", "fields": [{"name": "x", "type": "string"}]})
V2 = json.dumps(
    {
        "type": "record",
        "name": "A",
        "fields": [{"name": "x", "type": "string"}, {"name": "y", "type": "int", "default": 0}],
    }
)
BREAKING = json.dumps({"type": "record", "name": "A", "fields": [{"name": "z", "type": "int"}]})


@pytest.fixture(params=["http", "embedded"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RegistryClient]:
    if request.param == "http":
        live: LiveServer = request.getfixturevalue("live")
        url = live.url
    else:
        url = f"sqlite:///{tmp_path}/embedded.db"
    async with RegistryClient.from_url(url) as registry_client:
        yield registry_client


async def test_register_lookup_and_fetch(client: RegistryClient) -> None:
    """A registered schema is found by lookup, by id and as the latest version."""
    schema_id = await client.register("a-value", V1)
    found = await client.lookup("a-value", V1)
    latest = await client.latest("a-value")
    assert (schema_id, 1) == (found.id, found.version)
    assert (schema_id, json.loads(V1)) == (latest.id, (await client.get_schema(schema_id)).parsed())


async def test_versions_subjects_and_deletes(client: RegistryClient) -> None:
    """Versions list, subjects list and soft delete work through either backend."""
    await client.register("a-value", V1)
    await client.register("a-value", V2)
    assert ([1, 2], ["a-value"]) == (await client.versions("a-value"), await client.subjects())
    assert 2 == await client.delete_version("a-value", 2)
    assert [1] == await client.delete_subject("a-value")
    with pytest.raises(SubjectNotFoundError):
        await client.latest("a-value")


async def test_compatibility_check_and_levels(client: RegistryClient) -> None:
    """check_compatibility returns the verdict with reasons; levels can be set and read."""
    await client.register("a-value", V1)
    good = await client.check_compatibility("a-value", V2)
    bad = await client.check_compatibility("a-value", BREAKING)
    assert (True, False) == (good.is_compatible, bad.is_compatible)
    assert bad.messages
    assert Compatibility.FORWARD == await client.set_compatibility("forward", "a-value")
    assert (Compatibility.FORWARD, Compatibility.BACKWARD) == (
        await client.compatibility("a-value"),
        await client.compatibility("other-value"),
    )


async def test_errors_are_the_same_exceptions(client: RegistryClient) -> None:
    """Incompatible and unknown things raise the registry's own exception types."""
    await client.register("a-value", V1)
    with pytest.raises(IncompatibleSchemaError):
        await client.register("a-value", BREAKING)
    with pytest.raises(SchemaNotFoundError):
        await client.get_schema(12345)


async def test_schema_by_id_is_cached(live: LiveServer) -> None:
    """Once fetched, a schema by id is served from the cache even if the server is gone."""
    async with RegistryClient.from_url(live.url) as client:
        schema_id = await client.register("a-value", V1)
        first = await client.get_schema(schema_id)
        live.stop()
        assert first == await client.get_schema(schema_id)


async def test_unreachable_registry_gives_a_clear_error() -> None:
    """A URL nobody listens on raises RegistryUnavailableError naming the URL."""
    url = f"http://127.0.0.1:{free_port()}"
    async with RegistryClient.from_url(url) as client:
        with pytest.raises(RegistryUnavailableError, match=url):
            await client.subjects()


async def test_unknown_url_scheme_is_a_usage_error() -> None:
    """An unknown scheme names the URL forms that work."""
    with pytest.raises(InvalidInputError, match="sqlite:///"):
        RegistryClient.from_url("ftp://registry")


async def test_passwords_are_masked_in_the_url() -> None:
    """The client's url (used in dataschema and messages) never shows a password."""
    async with RegistryClient.from_url("http://user:secret@127.0.0.1:1") as client:
        assert "http://user:***@127.0.0.1:1" == client.url


async def test_schema_objects_and_json_type(client: RegistryClient) -> None:
    """Schema objects of type JSON register like text."""
    schema = Schema('{"type": "object"}', SchemaType.JSON)
    registered = await client.register_full("j-value", schema)
    assert "JSON" == (await client.latest("j-value")).schema.type.value
    assert 1 == registered.version
