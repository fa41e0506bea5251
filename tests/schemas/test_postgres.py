"""The PostgreSQL store: same behaviour as SQLite, safe under concurrent registrations."""

from __future__ import annotations

import asyncio
import json

import pytest

from schemas import Registry, RegistryClient, Schema, SchemaNotFoundError
from schemas.errors import SchemaStoreError

pytestmark = pytest.mark.postgres


def record(name: str) -> Schema:
    return Schema(json.dumps({"type": "record", "name": name, "fields": []}))


async def test_register_read_and_delete_on_postgres(pg_url: str) -> None:
    """Ids, versions, lookups and hard deletes behave as on SQLite."""
    registry = Registry.open(pg_url)
    try:
        first = await registry.register("a-value", record("A"))
        shared = await registry.register("b-value", record("A"))
        assert (first.id, 1) == (shared.id, shared.version)
        assert (await registry.schema(first.id)).parsed()["name"] == "A"
        await registry.delete_subject("a-value")
        await registry.delete_subject("a-value", permanent=True)
        await registry.delete_subject("b-value")
        await registry.delete_subject("b-value", permanent=True)
        with pytest.raises(SchemaNotFoundError):
            await registry.schema(first.id)
        assert first.id + 1 == (await registry.register("c-value", record("C"))).id
    finally:
        registry.close()


async def test_concurrent_registrations_on_two_postgres_stores(pg_url: str) -> None:
    """Thirty registrations racing through two stores get versions 1..30 and distinct ids."""
    one, two = Registry.open(pg_url), Registry.open(pg_url)
    try:
        await one.set_compatibility("NONE")
        results = await asyncio.gather(
            *((one if i % 2 else two).register("race", record(f"R{i}")) for i in range(30))
        )
        assert list(range(1, 31)) == sorted(r.version for r in results)
        assert 30 == len({r.id for r in results})
    finally:
        one.close()
        two.close()


async def test_embedded_client_over_postgres(pg_url: str) -> None:
    """RegistryClient.from_url accepts a postgresql:// URL and works embedded."""
    async with RegistryClient.from_url(pg_url) as client:
        assert 1 == await client.register("a-value", record("A"))
        assert client.is_embedded


def test_unreachable_postgres_names_the_url_without_the_password() -> None:
    """A server nobody runs gives a SchemaStoreError with the password masked."""
    with pytest.raises(SchemaStoreError) as info:
        Registry.open("postgresql://postgres:hunter2@127.0.0.1:1/test")
    assert "hunter2" not in str(info.value)
    assert "postgres:***@127.0.0.1:1" in str(info.value)
