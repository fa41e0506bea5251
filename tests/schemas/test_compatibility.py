"""Compatibility verdicts for every level, Avro (Apache avro's checker) and JSON Schema."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.compatibility import Resolved, check_compatibility, check_valid
from schemas.errors import InvalidSchemaError
from schemas.json_compat import incompatibilities
from schemas.model import Compatibility, Schema, SchemaType


def avro(*fields: dict[str, Any]) -> Resolved:
    document = {"type": "record", "name": "Order", "namespace": "shop", "fields": list(fields)}
    return Resolved(Schema(json.dumps(document)))


ID = {"name": "id", "type": "string"}
AMOUNT_DEFAULT = {"name": "amount", "type": "double", "default": 0.0}
AMOUNT = {"name": "amount", "type": "double"}
NOTE = {"name": "note", "type": "string"}

V1 = avro(ID)
WITH_DEFAULT = avro(ID, AMOUNT_DEFAULT)  # adds a field with a default: FULL compatible
WITH_REQUIRED = avro(ID, AMOUNT)  # adds a field without default: FORWARD only
WITHOUT_ID = avro()  # drops a field without default: BACKWARD only


def verdict(candidate: Resolved, history: list[Resolved], level: str) -> bool:
    existing = [(index + 1, schema) for index, schema in enumerate(history)]
    return check_compatibility(candidate, existing, Compatibility(level)).is_compatible


@pytest.mark.parametrize(
    ("level", "candidate", "expected"),
    [
        ("NONE", WITH_REQUIRED, True),
        ("BACKWARD", WITH_DEFAULT, True),
        ("BACKWARD", WITH_REQUIRED, False),
        ("BACKWARD", WITHOUT_ID, True),
        ("FORWARD", WITH_REQUIRED, True),
        ("FORWARD", WITHOUT_ID, False),
        ("FULL", WITH_DEFAULT, True),
        ("FULL", WITH_REQUIRED, False),
        ("FULL", WITHOUT_ID, False),
    ],
)
def test_avro_levels_against_the_latest(level: str, candidate: Resolved, expected: bool) -> None:
    """Each non-transitive level checks the reader/writer direction it names."""
    assert expected == verdict(candidate, [V1], level)


def test_transitive_levels_check_every_version_not_only_the_latest() -> None:
    """v1(id) -> v2(id, amount=0) -> v3(id, amount): v3 reads v2 but not v1."""
    history = [V1, WITH_DEFAULT]
    assert (True, False) == (
        verdict(WITH_REQUIRED, history, "BACKWARD"),
        verdict(WITH_REQUIRED, history, "BACKWARD_TRANSITIVE"),
    )


def test_forward_transitive_and_full_transitive() -> None:
    """v1(id, note) -> v2(id, note='' default) -> v3(id): only the latest reads v3's data."""
    v1 = avro(ID, NOTE)
    v2 = avro(ID, {"name": "note", "type": "string", "default": ""})
    v3 = avro(ID)
    assert (True, False) == (
        verdict(v3, [v1, v2], "FORWARD"),
        verdict(v3, [v1, v2], "FORWARD_TRANSITIVE"),
    )
    assert (True, False) == (
        verdict(v3, [v1, v2], "FULL"),
        verdict(v3, [v1, v2], "FULL_TRANSITIVE"),
    )


def test_incompatible_avro_verdict_names_the_field_and_the_version() -> None:
    """The reasons are Confluent's: what broke and where, then the old version, its text and
    the level."""
    result = check_compatibility(WITH_REQUIRED, [(1, V1)], Compatibility.BACKWARD)
    reason, version, old, level = result.messages
    assert reason.startswith("{errorType:'READER_FIELD_MISSING_DEFAULT_VALUE'")
    assert "amount at /fields/1" in reason
    assert "{oldSchemaVersion: 1}" == version
    assert old.startswith("{oldSchema: '")
    assert '"name": "Order"' in old
    assert "{validateFields: 'false', compatibility: 'BACKWARD'}" == level


def test_transitive_check_reports_the_newest_failing_version_only() -> None:
    """Like Confluent, a transitive check stops at the newest old version that fails."""
    history = [(1, V1), (2, WITH_DEFAULT), (3, V1)]
    result = check_compatibility(WITH_REQUIRED, history, Compatibility.BACKWARD_TRANSITIVE)
    assert ["{oldSchemaVersion: 3}"] == [m for m in result.messages if "oldSchemaVersion" in m]


def test_full_reasons_say_which_direction_failed() -> None:
    """Under FULL each reason says whether reading old data or new data failed."""
    result = check_compatibility(WITH_REQUIRED, [(1, V1)], Compatibility.FULL)
    assert "description:'backward: amount" in result.messages[0]


def test_type_change_int_to_long_is_backward_but_not_forward() -> None:
    """Avro promotes int to long when reading, not the other way."""
    ints, longs = avro({"name": "n", "type": "int"}), avro({"name": "n", "type": "long"})
    assert (True, False) == (verdict(longs, [ints], "BACKWARD"), verdict(longs, [ints], "FORWARD"))


def test_invalid_avro_and_json_schemas_are_refused() -> None:
    """Validity comes from the parsers: a record without fields, a bad JSON Schema type."""
    with pytest.raises(InvalidSchemaError):
        check_valid(Resolved(Schema('{"type": "record", "name": "X"}')))
    with pytest.raises(InvalidSchemaError):
        check_valid(Resolved(Schema('{"type": "whatever"}', SchemaType.JSON)))
    with pytest.raises(InvalidSchemaError):
        check_valid(Resolved(Schema("not json")))


# -- JSON Schema ----------------------------------------------------------------------------------


def obj(props: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or [], **extra}


STRING = {"type": "string"}
NUMBER = {"type": "number"}


@pytest.mark.parametrize(
    ("reader", "writer", "compatible"),
    [
        (obj({"a": STRING}), obj({"a": STRING}), True),
        (obj({"a": NUMBER}), obj({"a": {"type": "integer"}}), True),
        (obj({"a": {"type": "integer"}}), obj({"a": NUMBER}), False),
        (obj({"a": STRING}, ["a"]), obj({"a": STRING}), False),
        (obj({"a": STRING}), obj({"a": STRING}, ["a"]), True),
        (obj({"a": STRING}, additionalProperties=False), obj({"a": STRING, "b": STRING}), False),
        (obj({"a": STRING}), obj({"a": STRING, "b": STRING}), True),
        (obj({"a": STRING, "b": STRING}), obj({"a": STRING}), False),
        (
            obj({"a": STRING, "b": STRING}),
            obj({"a": STRING}, additionalProperties=False),
            True,
        ),
        ({"enum": ["x", "y", "z"]}, {"enum": ["x", "y"]}, True),
        ({"enum": ["x"]}, {"enum": ["x", "y"]}, False),
        ({"type": "string", "maxLength": 5}, {"type": "string", "maxLength": 10}, False),
        ({"type": "string", "maxLength": 10}, {"type": "string", "maxLength": 5}, True),
        ({"type": "array", "items": NUMBER}, {"type": "array", "items": {"type": "integer"}}, True),
        ({"type": "array", "items": STRING}, {"type": "array", "items": NUMBER}, False),
        ({"anyOf": [STRING, NUMBER]}, STRING, True),
        (STRING, {"anyOf": [STRING, NUMBER]}, False),
        (
            {"$ref": "#/$defs/a", "$defs": {"a": STRING}},
            {"$ref": "#/$defs/a", "$defs": {"a": STRING}},
            True,
        ),
        ({}, obj({"a": STRING}), True),
    ],
)
def test_json_reader_writer_rules(reader: Any, writer: Any, compatible: bool) -> None:
    """The reader accepts everything the writer accepts, keyword by keyword."""
    assert compatible == (incompatibilities(reader, writer) == [])


def test_json_levels_use_both_directions() -> None:
    """Adding an optional property to a closed model is BACKWARD but not FORWARD."""
    old = Resolved(
        Schema(json.dumps(obj({"a": STRING}, additionalProperties=False)), SchemaType.JSON)
    )
    new = Resolved(
        Schema(
            json.dumps(obj({"a": STRING, "b": STRING}, additionalProperties=False)), SchemaType.JSON
        )
    )
    assert (True, False, False) == (
        verdict(new, [old], "BACKWARD"),
        verdict(new, [old], "FORWARD"),
        verdict(new, [old], "FULL"),
    )


def test_json_reasons_point_at_the_property() -> None:
    """A newly required property is reported with its JSON pointer."""
    reasons = incompatibilities(obj({"a": STRING}, ["a"]), obj({"a": STRING}))
    assert [("REQUIRED_ATTRIBUTE_ADDED", "#/required/a: property 'a' is required")] == reasons


def test_a_type_change_between_avro_and_json_is_incompatible() -> None:
    """Changing the schema type is never compatible."""
    json_schema = Resolved(Schema(json.dumps(STRING), SchemaType.JSON))
    assert False is verdict(json_schema, [V1], "BACKWARD")
