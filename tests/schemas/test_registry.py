"""The registry core: ids, versions, deletes, modes and references, as Confluent's rules say."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from schemas import (
    Compatibility,
    IncompatibleSchemaError,
    InvalidVersionError,
    Mode,
    OperationNotPermittedError,
    Reference,
    Registry,
    Schema,
    SchemaNotFoundError,
    SchemaType,
    SubjectNotFoundError,
)
from schemas.errors import InvalidSchemaError, ModeNotConfiguredError, ReferenceExistsError


def record(name: str, *fields: str) -> Schema:
    document = {
        "type": "record",
        "name": name,
        "fields": [{"name": f, "type": "string", "default": ""} for f in fields],
    }
    return Schema(json.dumps(document))


async def test_whitespace_and_key_order_do_not_make_a_new_schema(registry: Registry) -> None:
    """The same schema written differently is the same schema id and version."""
    compact = Schema('{"type":"record","name":"A","fields":[]}')
    spaced = Schema('{ "fields": [ ],\n "name": "A", "type": "record" }')
    first = await registry.register("a-value", compact)
    second = await registry.register("a-value", spaced)
    assert (first.id, first.version) == (second.id, second.version)


async def test_ids_are_never_reused_after_a_hard_delete(registry: Registry) -> None:
    """A schema registered after its predecessor was removed gets a new id."""
    first = await registry.register("a-value", record("A", "x"))
    await registry.delete_subject("a-value")
    await registry.delete_subject("a-value", permanent=True)
    second = await registry.register("b-value", record("B", "y"))
    assert second.id == first.id + 1
    with pytest.raises(SchemaNotFoundError):
        await registry.schema(first.id)


async def test_re_registering_a_soft_deleted_schema_makes_a_new_version_with_the_same_id(
    registry: Registry,
) -> None:
    """Versions continue after soft-deleted ones; the schema keeps its id."""
    v1 = await registry.register("a-value", record("A", "x"))
    await registry.delete_version("a-value", 1)
    again = await registry.register("a-value", record("A", "x"))
    assert (v1.id, 2) == (again.id, again.version)
    assert [1, 2] == await registry.versions("a-value", deleted=True)


async def test_concurrent_registrations_neither_skip_versions_nor_share_ids(tmp_path: Path) -> None:
    """Forty registrations racing through two stores on one file get versions 1..40."""
    url = f"sqlite:///{tmp_path}/shared.db"
    one, two = Registry.open(url), Registry.open(url)
    try:
        await one.set_compatibility("NONE")
        schemas = [record(f"R{i}", f"f{i}") for i in range(40)]
        results = await asyncio.gather(
            *(
                (one if i % 2 else two).register("race-value", schema)
                for i, schema in enumerate(schemas)
            )
        )
        assert list(range(1, 41)) == sorted(r.version for r in results)
        assert 40 == len({r.id for r in results})
        assert list(range(1, 41)) == await one.versions("race-value")
    finally:
        one.close()
        two.close()


async def test_latest_and_minus_one_name_the_newest_version(registry: Registry) -> None:
    """'latest' and -1 both read the newest live version; 0 and 'x' are 42202."""
    await registry.register("a-value", record("A", "x"))
    await registry.register("a-value", record("A", "x", "y"))
    assert (2, 2) == (
        (await registry.version("a-value", "latest")).version,
        (await registry.version("a-value", -1)).version,
    )
    for bad in (0, "x", -2):
        with pytest.raises(InvalidVersionError):
            await registry.version("a-value", bad)


async def test_incompatible_registration_reports_reasons(registry: Registry) -> None:
    """An incompatible schema raises with the reasons attached and nothing is stored."""
    await registry.register("a-value", record("A", "x"))
    breaking = Schema(
        json.dumps({"type": "record", "name": "A", "fields": [{"name": "y", "type": "string"}]})
    )
    with pytest.raises(IncompatibleSchemaError) as info:
        await registry.register("a-value", breaking)
    assert info.value.reasons
    assert [1] == await registry.versions("a-value")


async def test_subject_level_compatibility_overrides_the_global_one(registry: Registry) -> None:
    """A subject's own level wins; without one the global level (default BACKWARD) applies."""
    await registry.set_compatibility(Compatibility.FULL)
    await registry.set_compatibility("none", "a-value")
    assert (Compatibility.NONE, Compatibility.FULL, Compatibility.FULL) == (
        await registry.compatibility("a-value"),
        await registry.compatibility(),
        await registry.compatibility("b-value", default_to_global=True),
    )
    assert Compatibility.FULL == await registry.delete_compatibility()
    assert Compatibility.BACKWARD == await registry.compatibility()


async def test_import_mode_keeps_given_ids_and_versions(registry: Registry) -> None:
    """In IMPORT mode a schema may be registered with its id and version from elsewhere."""
    await registry.set_mode(Mode.IMPORT)
    imported = await registry.register("a-value", record("A", "x"), schema_id=42, version=3)
    await registry.set_mode(Mode.READWRITE)
    following = await registry.register("b-value", record("B", "y"))
    assert ((42, 3), 43) == ((imported.id, imported.version), following.id)


async def test_ids_and_versions_need_import_mode(registry: Registry) -> None:
    """Outside IMPORT mode an explicit id is refused (42205)."""
    with pytest.raises(OperationNotPermittedError):
        await registry.register("a-value", record("A", "x"), schema_id=7)


async def test_import_mode_needs_an_empty_registry_unless_forced(registry: Registry) -> None:
    """Switching a non-empty registry to IMPORT needs force."""
    await registry.register("a-value", record("A", "x"))
    with pytest.raises(OperationNotPermittedError):
        await registry.set_mode("IMPORT")
    assert Mode.IMPORT == await registry.set_mode("IMPORT", force=True)


async def test_read_only_subject_refuses_deletes(registry: Registry) -> None:
    """READONLY forbids deletes as well as registrations."""
    await registry.register("a-value", record("A", "x"))
    await registry.set_mode("READONLY", "a-value")
    with pytest.raises(OperationNotPermittedError):
        await registry.delete_subject("a-value")
    assert Mode.READONLY == await registry.delete_mode("a-value")
    with pytest.raises(ModeNotConfiguredError):
        await registry.mode("a-value")


async def test_references_must_exist_and_block_deletion(registry: Registry) -> None:
    """A reference to a missing version is 42201; a referenced version cannot be deleted."""
    await registry.register("address", record("Address", "zip"))
    user = Schema(
        json.dumps(
            {"type": "record", "name": "User", "fields": [{"name": "a", "type": "Address"}]}
        ),
        references=(Reference("Address", "address", 1),),
    )
    missing = Schema(user.text, references=(Reference("Address", "address", 9),))
    with pytest.raises(InvalidSchemaError):
        await registry.register("user-value", missing)
    found = await registry.register("user-value", user)
    assert [found.id] == await registry.referenced_by("address", 1)
    with pytest.raises(ReferenceExistsError):
        await registry.delete_subject("address")


async def test_json_schema_references_resolve_by_name(registry: Registry) -> None:
    """A JSON schema can $ref another subject's schema by the reference name."""
    money = Schema(json.dumps({"type": "number", "minimum": 0}), SchemaType.JSON)
    await registry.register("money", money)
    order = Schema(
        json.dumps({"type": "object", "properties": {"amount": {"$ref": "money.json"}}}),
        SchemaType.JSON,
        (Reference("money.json", "money", 1),),
    )
    assert 1 == (await registry.register("order-value", order)).version


async def test_subjects_listing_and_prefix(registry: Registry) -> None:
    """Subjects are sorted; soft-deleted ones appear only on request; a prefix filters."""
    for name in ("b-value", "a-value", "a-key"):
        await registry.register(name, record("A", "x"))
    await registry.delete_subject("b-value")
    assert (["a-key", "a-value"], ["b-value"], ["a-value"]) == (
        await registry.subjects(),
        await registry.subjects(deleted_only=True),
        await registry.subjects(prefix="a-v"),
    )
    with pytest.raises(SubjectNotFoundError):
        await registry.versions("b-value")
