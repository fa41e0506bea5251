"""JSON Schema compatibility, one rule per keyword (docs/registry.md lists the same rules).

Each case reads as: a reader (the new schema under BACKWARD) and a writer (the old one); the
pair is compatible when every document the writer accepts is accepted by the reader.
"""

# ruff: noqa: E501 - the rule table keeps one case per line, so it reads as a table

from __future__ import annotations

from typing import Any

import pytest

from schemas.compatibility import Resolved, check_valid
from schemas.json_compat import incompatibilities
from schemas.model import Schema, SchemaType

S = {"type": "string"}
N = {"type": "number"}
INT = {"type": "integer"}
NEW = {"$schema": "https://json-schema.org/draft/2020-12/schema"}


def obj(**keywords: Any) -> dict[str, Any]:
    return {"type": "object", **keywords}


def arr(**keywords: Any) -> dict[str, Any]:
    return {"type": "array", **keywords}


def compatible(reader: Any, writer: Any) -> bool:
    return incompatibilities(reader, writer) == []


RULES: list[tuple[str, Any, Any, bool]] = [
    # type: integer widens to number, not the reverse; a writer without type writes anything
    ("type widened", N, INT, True),
    ("type narrowed", INT, N, False),
    ("type added", S, {}, False),
    ("type union widened", {"type": ["string", "null"]}, S, True),
    # enum / const: each writer value must be valid for the reader
    ("enum extended", {"enum": ["A", "B", "C"]}, {"enum": ["A", "B"]}, True),
    ("enum narrowed", {"enum": ["A"]}, {"enum": ["A", "B"]}, False),
    ("enum to type", S, {"enum": ["A", "B"]}, True),
    ("enum to another type", INT, {"enum": ["A", "B"]}, False),
    ("const added", {"const": "A"}, S, False),
    # numeric limits and multipleOf
    ("maximum increased", {"type": "number", "maximum": 10}, {"type": "number", "maximum": 5}, True),
    ("minimum added", {"type": "number", "minimum": 0}, N, False),
    ("exclusiveMinimum under minimum", {"exclusiveMinimum": 0}, {"minimum": 1}, True),
    ("exclusiveMaximum at maximum", {"exclusiveMaximum": 5}, {"maximum": 5}, False),
    ("multipleOf reduced", {"multipleOf": 5}, {"multipleOf": 10}, True),
    ("multipleOf changed", {"multipleOf": 3}, {"multipleOf": 10}, False),
    ("limits ignore other types", {"type": "string", "minimum": 3}, S, True),
    # strings
    ("maxLength increased", {"maxLength": 10}, {"maxLength": 5}, True),
    ("minLength added", {"type": "string", "minLength": 1}, S, False),
    ("pattern removed", S, {"type": "string", "pattern": "^a"}, True),
    ("pattern changed", {"pattern": "^b"}, {"pattern": "^a"}, False),
    ("format is an annotation", {"type": "string", "format": "email"}, S, True),
    # properties and content models
    ("optional property added to closed model", obj(properties={"a": S, "b": S}, additionalProperties=False), obj(properties={"a": S}, additionalProperties=False), True),
    ("property added to open model", obj(properties={"a": S, "b": S}), obj(properties={"a": S}), False),
    ("empty property added to open model", obj(properties={"a": S, "b": {}}), obj(properties={"a": S}), True),
    ("property removed from open model", obj(properties={"a": S}), obj(properties={"a": S, "b": S}), True),
    ("property removed from closed model", obj(properties={"a": S}, additionalProperties=False), obj(properties={"a": S, "b": S}), False),
    ("false property removed from closed model", obj(properties={"a": S}, additionalProperties=False), obj(properties={"a": S, "b": False}, additionalProperties=False), True),
    ("additionalProperties narrowed", obj(additionalProperties=S), obj(), False),
    ("additionalProperties extended", obj(), obj(additionalProperties=S), True),
    # required
    ("required removed", obj(properties={"a": S}), obj(properties={"a": S}, required=["a"]), True),
    ("required added", obj(properties={"a": S}, required=["a"]), obj(properties={"a": S}), False),
    # patternProperties
    ("property removed, covered by a pattern", obj(properties={}, patternProperties={"^I_": N}, additionalProperties=False), obj(properties={"I_1": INT}, additionalProperties=False), True),
    ("property removed, not covered by a pattern", obj(patternProperties={"^I_": INT}, additionalProperties=False), obj(properties={"I_1": N}, additionalProperties=False), False),
    ("pattern property narrowed", obj(patternProperties={"^I_": INT}), obj(patternProperties={"^I_": N}), False),
    ("pattern property widened", obj(patternProperties={"^I_": N}), obj(patternProperties={"^I_": INT}), True),
    # propertyNames
    ("propertyNames widened", obj(propertyNames={"maxLength": 9}), obj(propertyNames={"maxLength": 3}), True),
    ("propertyNames added to an open model", obj(propertyNames={"maxLength": 3}), obj(), False),
    ("propertyNames fit a closed model", obj(propertyNames={"maxLength": 3}), obj(properties={"ab": S}, additionalProperties=False), True),
    # dependencies / dependentRequired / dependentSchemas
    ("dependency array narrowed", obj(dependencies={"a": ["b"]}), obj(dependencies={"a": ["b", "c"]}), True),
    ("dependency array extended", obj(dependentRequired={"a": ["b", "c"]}), obj(dependentRequired={"a": ["b"]}), False),
    ("dependent schema removed", obj(), obj(dependentSchemas={"a": {"required": ["b"]}}), True),
    ("dependent schema added", obj(dependencies={"a": {"required": ["b"]}}), obj(), False),
    # min/maxProperties
    ("maxProperties decreased", obj(maxProperties=2), obj(maxProperties=3), False),
    ("minProperties decreased", obj(minProperties=1), obj(minProperties=2), True),
    # unevaluatedProperties
    ("optional property added, unevaluated closed", obj(properties={"a": S, "b": S}, unevaluatedProperties=False), obj(properties={"a": S}, unevaluatedProperties=False), True),
    ("unevaluatedProperties narrowed", obj(unevaluatedProperties=S), obj(), False),
    ("unevaluated sees allOf properties", {"allOf": [obj(properties={"a": S})], "unevaluatedProperties": False}, obj(properties={"a": S}, additionalProperties=False), True),
    # items, prefixItems, additionalItems (draft 7 tuples too)
    ("items widened", arr(items=N), arr(items=INT), True),
    ("items narrowed", arr(items=INT), arr(items=N), False),
    ("tuple item added to a closed tuple", arr(items=[S, N]), arr(items=[S], additionalItems=False), True),
    ("tuple item added to an open tuple", arr(items=[S, N]), arr(items=[S]), False),
    ("prefixItems shrunk while items constrains the rest", {"type": "array", "prefixItems": [S, N], "items": S}, {"type": "array", "prefixItems": [S, N, N], "items": S}, False),
    ("prefixItems shrunk, rest covers it", {"type": "array", "prefixItems": [S], "items": N}, {"type": "array", "prefixItems": [S, INT], "items": N}, True),
    ("additionalItems narrowed", arr(items=[S], additionalItems=INT), arr(items=[S], additionalItems=N), False),
    ("unevaluatedItems narrowed", arr(unevaluatedItems=INT), arr(), False),
    # contains / minContains / maxContains, uniqueItems, min/maxItems
    ("minContains decreased", arr(contains=S, minContains=1, **NEW), arr(contains=S, minContains=2, **NEW), True),
    ("minContains increased", arr(contains=S, minContains=3, **NEW), arr(contains=S, minContains=2, **NEW), False),
    ("minContains is not draft 7", arr(contains=S, minContains=3), arr(contains=S, minContains=2), True),
    ("contains added", arr(contains=S), arr(), False),
    ("maxContains added", arr(contains=S, maxContains=1, **NEW), arr(contains=S, **NEW), False),
    ("uniqueItems removed", arr(), arr(uniqueItems=True), True),
    ("uniqueItems added", arr(uniqueItems=True), arr(), False),
    ("maxItems added", arr(maxItems=3), arr(), False),
    # not
    ("not narrowed", {"not": INT}, {"not": N}, True),
    ("not widened", {"not": N}, {"not": INT}, False),
    ("not of a type the writer never writes", {"type": "string", "not": N}, S, True),
    ("not added", {"not": {"maxLength": 1}}, S, False),
    # allOf / anyOf / oneOf: matched by content, not position
    ("allOf reordered", {"allOf": [{"maxLength": 5}, S]}, {"allOf": [S, {"maxLength": 5}]}, True),
    ("allOf branch added", {"allOf": [S, {"maxLength": 5}]}, {"allOf": [S]}, False),
    ("anyOf branch added", {"anyOf": [S, N, {"type": "null"}]}, {"anyOf": [N, S]}, True),
    ("anyOf branch removed", {"anyOf": [S]}, {"anyOf": [S, N]}, False),
    ("oneOf to a type union", {"type": ["string", "number"]}, {"oneOf": [S, N]}, True),
    ("oneOf unchanged", {"oneOf": [obj(properties={"a": S}), obj(properties={"b": S})]}, {"oneOf": [obj(properties={"a": S}), obj(properties={"b": S})]}, True),
    ("oneOf branch of another type added", {"oneOf": [S, {"type": "null"}]}, S, True),
    ("oneOf branch overlapping the data added", {"oneOf": [S, {"maxLength": 3}]}, S, False),
    ("oneOf branch with another discriminator added", {"oneOf": [obj(properties={"k": {"const": "a"}}, required=["k"]), obj(properties={"k": {"const": "b"}}, required=["k"])]}, obj(properties={"k": {"const": "a"}}, required=["k"]), True),
    ("type union to anyOf", {"anyOf": [S, N]}, {"type": ["string", "number"]}, True),
    # if / then / else
    ("conditional unchanged", {"if": S, "then": {"maxLength": 3}}, {"if": S, "then": {"maxLength": 3}}, True),
    ("conditional added", {"if": S, "then": {"maxLength": 3}}, S, False),
    ("conditional the writer always meets", {"if": S, "then": {"maxLength": 3}}, {"type": "string", "maxLength": 2}, True),
    # references and recursion
    ("recursive schemas terminate", {"$ref": "#/$defs/t", "$defs": {"t": obj(properties={"n": {"$ref": "#/$defs/t"}})}}, {"$ref": "#/$defs/t", "$defs": {"t": obj(properties={"n": {"$ref": "#/$defs/t"}})}}, True),
    # boolean schemas and annotations
    ("anything reads into true", True, obj(properties={"a": S}), True),
    ("false writes nothing", S, False, True),
    ("annotations do not matter", {"type": "string", "title": "x", "description": "y", "$comment": "z"}, S, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("reader", "writer", "expected"),
    [pytest.param(r, w, e, id=name) for name, r, w, e in RULES],
)
def test_keyword_rule(reader: Any, writer: Any, expected: bool) -> None:
    """The reader reads everything the writer writes exactly when the keyword rule says so."""
    assert expected == compatible(reader, writer)


def test_draft_7_is_the_default_dialect() -> None:
    """Without $schema a tuple `items` array is valid (draft 7), as in Confluent's registry."""
    tuple_items = {"type": "array", "items": [S, N]}
    check_valid(Resolved(Schema(str(tuple_items).replace("'", '"'), SchemaType.JSON)))
    modern = {"$schema": "https://json-schema.org/draft/2020-12/schema", **tuple_items}
    with pytest.raises(ValueError, match="invalid JSON schema"):
        check_valid(Resolved(Schema(str(modern).replace("'", '"'), SchemaType.JSON)))


def test_reasons_carry_confluents_difference_types() -> None:
    """Each reason is (Confluent's difference type, where and why)."""
    reasons = incompatibilities(obj(properties={"a": S, "b": S}), obj(properties={"a": S}))
    assert [
        (
            "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL",
            "#/properties/b: property 'b' is added to an open content model",
        )
    ] == reasons
