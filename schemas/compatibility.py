"""Schema validity and compatibility, for every level Confluent has.

Avro schemas are parsed by fastavro (validity, Parsing Canonical Form) and compared by Apache
``avro``'s :class:`~avro.compatibility.ReaderWriterCompatibilityChecker`; JSON schemas are
checked by :mod:`schemas.json_compat`. ``BACKWARD`` asks whether the new schema (reader) reads
data written with the old one (writer); ``FORWARD`` the reverse; ``FULL`` both. The
``_TRANSITIVE`` levels check every live version, the others only the latest.
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

__all__ = [
    "Resolved",
    "avro_canonical_form",
    "check_compatibility",
    "check_pair",
    "check_valid",
    "parse_avro",
]


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


def _json_registry(resolved: Resolved) -> Any:
    import referencing
    import referencing.jsonschema

    resources = [
        (name, referencing.jsonschema.DRAFT202012.create_resource(dep.parsed()))
        for name, dep in resolved.dependencies
    ]
    return referencing.Registry().with_resources(resources)


def json_validator(resolved: Resolved) -> Any:
    """A :mod:`jsonschema` validator for the schema, its references resolvable by name."""
    document = resolved.schema.parsed()
    if not isinstance(document, dict | bool):
        raise InvalidSchemaError(f"a JSON schema must be an object or a boolean, got {document!r}")
    cls = jsonschema.validators.validator_for(document, default=jsonschema.Draft202012Validator)
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
    else:
        json_validator(resolved)


def _avro_object(resolved: Resolved) -> avro.schema.Schema:
    names = avro.name.Names()
    for _, dependency in resolved.dependencies:
        avro.schema.make_avsc_object(dependency.parsed(), names)
    return avro.schema.make_avsc_object(resolved.schema.parsed(), names)


def _avro_pair(reader: Resolved, writer: Resolved) -> list[str]:
    try:
        reader_schema, writer_schema = _avro_object(reader), _avro_object(writer)
    except (avro.errors.AvroException, ValueError, TypeError) as exc:
        return [f"the schema cannot be compared: {exc}"]
    checker = avro.compatibility.ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(reader_schema, writer_schema)
    if result.compatibility is avro.compatibility.SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(sorted(kind.name for kind in result.incompatibilities))
    where = ", ".join(sorted(result.locations))
    return [f"{kinds} at {where}: {message}" for message in sorted(result.messages)]


def check_pair(reader: Resolved, writer: Resolved) -> list[str]:
    """Why ``reader`` cannot read what ``writer`` writes (empty when it can)."""
    if reader.schema.type is not writer.schema.type:
        return [f"the schema type changed from {writer.schema.type} to {reader.schema.type}"]
    if reader.schema.type is SchemaType.AVRO:
        return _avro_pair(reader, writer)
    return json_compat.incompatibilities(
        reader.schema.parsed(),
        writer.schema.parsed(),
        reader_refs={name: dep.parsed() for name, dep in reader.dependencies},
        writer_refs={name: dep.parsed() for name, dep in writer.dependencies},
    )


def check_compatibility(
    candidate: Resolved,
    existing: Sequence[tuple[int, Resolved]],
    level: Compatibility,
) -> CompatibilityResult:
    """The verdict for ``candidate`` against ``existing`` (``(version, schema)``, oldest first)."""
    if level is Compatibility.NONE or not existing:
        return CompatibilityResult(True)
    targets = existing if level.transitive else existing[-1:]
    messages: list[str] = []
    for version, old in reversed(targets):
        reasons: list[str] = []
        if level.backward:
            reasons += [f"BACKWARD: {r}" for r in check_pair(candidate, old)]
        if level.forward:
            reasons += [f"FORWARD: {r}" for r in check_pair(old, candidate)]
        messages += [f"{reason} (old version {version}, level {level})" for reason in reasons]
    return CompatibilityResult(not messages, tuple(messages))
