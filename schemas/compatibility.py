"""Schema validity and compatibility, for every level Confluent has.

Avro schemas are parsed by fastavro (validity, Parsing Canonical Form) and compared by Apache
``avro``'s :class:`~avro.compatibility.ReaderWriterCompatibilityChecker`; JSON schemas are
checked by :mod:`schemas.json_compat`; Protobuf schemas are compiled to descriptors
(:mod:`schemas.proto_schema`) and compared by :mod:`schemas.proto_compat`. ``BACKWARD`` asks
whether the new schema (reader) reads data written with the old one (writer); ``FORWARD`` the
reverse; ``FULL`` both. The ``_TRANSITIVE`` levels check every live version, newest first, the
others only the latest.

The reasons are Confluent's: one ``{errorType:'...', description:'...'}`` per problem found
against the first old version that fails, then ``{oldSchemaVersion: N}``, ``{oldSchema:
'...'}`` and ``{validateFields: 'false', compatibility: 'LEVEL'}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import avro.compatibility
import avro.errors
import avro.name
import avro.schema
import fastavro
import fastavro.schema
import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from schemas import json_compat
from schemas.errors import InvalidSchemaError
from schemas.model import Compatibility, CompatibilityResult, Schema, SchemaType
from schemas.proto_schema import CompiledProto, compile_schema

__all__ = [
    "Resolved",
    "avro_canonical_form",
    "check_compatibility",
    "check_pair",
    "check_valid",
    "compiled_proto",
    "json_validator",
    "parse_avro",
]

_MAX_LOGGED_SCHEMA = 2000  # Confluent truncates the old schema in messages at this size


@dataclasses.dataclass(frozen=True, slots=True)
class Resolved:
    """A schema with the schemas it references, dependencies first, by reference name."""

    schema: Schema
    dependencies: tuple[tuple[str, Schema], ...] = ()


def parse_avro(resolved: Resolved) -> Any:
    """The fastavro-parsed schema, its references' named types included."""
    named: dict[str, Any] = {}
    try:
        for _, dependency in resolved.dependencies:
            fastavro.parse_schema(dependency.parsed(), named_schemas=named)
        return fastavro.parse_schema(resolved.schema.parsed(), named_schemas=named)
    except InvalidSchemaError:
        raise
    except Exception as exc:
        raise InvalidSchemaError(f"invalid Avro schema: {exc}") from exc


def avro_canonical_form(resolved: Resolved) -> str:
    """Avro's Parsing Canonical Form (fastavro), e.g. for fingerprints."""
    return str(fastavro.schema.to_parsing_canonical_form(parse_avro(resolved)))


def compiled_proto(resolved: Resolved) -> CompiledProto:
    """The Protobuf schema compiled with its references (:class:`InvalidSchemaError` if not)."""
    return compile_schema(resolved.schema, resolved.dependencies)


def _json_registry(resolved: Resolved) -> Any:
    import referencing
    import referencing.jsonschema

    resources = [
        (
            name,
            referencing.Resource.from_contents(
                dep.parsed(), default_specification=referencing.jsonschema.DRAFT7
            ),
        )
        for name, dep in resolved.dependencies
    ]
    return referencing.Registry().with_resources(resources)


def json_validator(resolved: Resolved) -> Any:
    """A :mod:`jsonschema` validator for the schema, its references resolvable by name.

    Without ``$schema`` the schema is read as draft 7, as Confluent's registry does.
    """
    document = resolved.schema.parsed()
    if not isinstance(document, dict | bool):
        raise InvalidSchemaError(f"a JSON schema must be an object or a boolean, got {document!r}")
    cls = jsonschema.validators.validator_for(document, default=jsonschema.Draft7Validator)
    try:
        cls.check_schema(document)
    except jsonschema.exceptions.SchemaError as exc:
        raise InvalidSchemaError(f"invalid JSON schema: {exc.message}") from exc
    return cls(document, registry=_json_registry(resolved))


def check_valid(resolved: Resolved) -> None:
    """Raise :class:`InvalidSchemaError` unless the schema parses as its type."""
    if resolved.schema.type is SchemaType.AVRO:
        parse_avro(resolved)
        try:  # Apache avro is stricter than fastavro in places (e.g. a record needs fields)
            _avro_object(resolved)
        except (avro.errors.AvroException, ValueError, TypeError, KeyError) as exc:
            raise InvalidSchemaError(f"invalid Avro schema: {exc}") from exc
    elif resolved.schema.type is SchemaType.PROTOBUF:
        compiled_proto(resolved)
    else:
        json_validator(resolved)


def _avro_object(resolved: Resolved) -> avro.schema.Schema:
    names = avro.name.Names()
    for _, dependency in resolved.dependencies:
        avro.schema.make_avsc_object(dependency.parsed(), names)
    return avro.schema.make_avsc_object(resolved.schema.parsed(), names)


def _reason(kind: str, description: str) -> str:
    return f"{{errorType:'{kind}', description:'{description}'}}"


def _avro_pair(reader: Resolved, writer: Resolved) -> list[str]:
    try:
        reader_schema, writer_schema = _avro_object(reader), _avro_object(writer)
    except (avro.errors.AvroException, ValueError, TypeError) as exc:
        return [_reason("INVALID_SCHEMA", f"the schema cannot be compared: {exc}")]
    checker = avro.compatibility.ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(reader_schema, writer_schema)
    if result.compatibility is avro.compatibility.SchemaCompatibilityType.compatible:
        return []
    where = ", ".join(sorted(result.locations))
    details = "; ".join(sorted(result.messages))
    kinds = sorted({kind.name.upper() for kind in result.incompatibilities})
    return [_reason(kind, f"{details} at {where}") for kind in kinds]


def check_pair(reader: Resolved, writer: Resolved) -> list[str]:
    """Why ``reader`` cannot read what ``writer`` writes (empty when it can)."""
    if reader.schema.type is not writer.schema.type:
        return [
            _reason(
                "DIFFERENT_SCHEMA_TYPE",
                f"the schema type changed from {writer.schema.type} to {reader.schema.type}",
            )
        ]
    if reader.schema.type is SchemaType.AVRO:
        return _avro_pair(reader, writer)
    if reader.schema.type is SchemaType.PROTOBUF:
        from schemas import proto_compat

        return proto_compat.incompatibilities(compiled_proto(reader), compiled_proto(writer))
    return [
        _reason(kind, description)
        for kind, description in json_compat.incompatibilities(
            reader.schema.parsed(),
            writer.schema.parsed(),
            reader_refs={name: dep.parsed() for name, dep in reader.dependencies},
            writer_refs={name: dep.parsed() for name, dep in writer.dependencies},
        )
    ]


def _against(candidate: Resolved, old: Resolved, level: Compatibility) -> list[str]:
    both = level.backward and level.forward
    reasons: list[str] = []
    if level.backward:
        found = check_pair(candidate, old)
        reasons += [_directed(r, "backward") for r in found] if both else found
    if level.forward:
        found = check_pair(old, candidate)
        reasons += [_directed(r, "forward") for r in found] if both else found
    return reasons


def _directed(reason: str, direction: str) -> str:
    return reason.replace("description:'", f"description:'{direction}: ", 1)


def _old_schema(schema: Schema) -> str:
    text = schema.text
    if len(text) <= _MAX_LOGGED_SCHEMA:
        return f"{{oldSchema: '{text}'}}"
    return f"{{oldSchema: <truncated> '{text[:_MAX_LOGGED_SCHEMA]}...'}}"


def check_compatibility(
    candidate: Resolved,
    existing: Sequence[tuple[int, Resolved]],
    level: Compatibility,
) -> CompatibilityResult:
    """The verdict for ``candidate`` against ``existing`` (``(version, schema)``, oldest first).

    Like Confluent's registry, the check stops at the newest old version that fails and
    reports its reasons, its version and its text.
    """
    if level is Compatibility.NONE or not existing:
        return CompatibilityResult(True)
    targets = existing if level.transitive else existing[-1:]
    for version, old in reversed(targets):
        reasons = _against(candidate, old, level)
        if reasons:
            context = (
                f"{{oldSchemaVersion: {version}}}",
                _old_schema(old.schema),
                f"{{validateFields: 'false', compatibility: '{level}'}}",
            )
            return CompatibilityResult(False, (*reasons, *context))
    return CompatibilityResult(True)
