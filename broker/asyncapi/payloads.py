"""Payload schemas for the AsyncAPI document: pydantic models, JSON Schema dicts, registry subjects.

Every declared schema becomes one entry of ``components.schemas`` and messages refer to it.
A JSON Schema's own local references (``#/$defs/Line``, as pydantic writes them) are rewritten
to point inside that entry, so they resolve from the document root as AsyncAPI requires.
A registry subject is looked up (its latest version) through a :class:`SchemaRegistry`: Avro
embeds with its Avro schema format, JSON Schema with the JSON Schema format, Protobuf as text.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from broker.declarations import PayloadSchema
from broker.errors import ConfigurationError

__all__ = ["Payload", "Payloads", "SchemaRegistry", "component_name", "free_name"]

AVRO_FORMAT = "application/vnd.apache.avro;version=1.9.0"
JSON_SCHEMA_FORMAT = "application/schema+json;version=draft-07"
PROTOBUF_FORMAT = "application/vnd.google.protobuf;version={version}"
JSON_CONTENT_TYPE = "application/json"
#: The ``datacontenttype`` a registry codec gives encoded data (``schemas.serde`` sets these;
#: tests/test_asyncapi.py pins that they agree).
WIRE_CONTENT_TYPES = {
    "AVRO": "application/avro",
    "JSON": "application/vnd.schemaregistry.json",
    "PROTOBUF": "application/vnd.schemaregistry.protobuf",
}

_UNSAFE = re.compile(r"[^\w.\-]")
_PROTO_SYNTAX = re.compile(r"""^\s*syntax\s*=\s*["']proto(\d)["']""", re.M)


def component_name(text: str) -> str:
    """``text`` as a component key (letters, digits, ``.``, ``-``, ``_``)."""
    return _UNSAFE.sub("_", text) or "_"


def free_name(text: str, taken: Iterable[str]) -> str:
    """``text`` as a component key not yet ``taken``: the key, else ``key_2``, ``key_3``..."""
    used, base = set(taken), component_name(text)
    chosen, n = base, 1
    while chosen in used:
        n += 1
        chosen = f"{base}_{n}"
    return chosen


class _RegistrySchema(Protocol):
    @property
    def text(self) -> str: ...

    @property
    def type(self) -> str: ...


class _Registered(Protocol):
    @property
    def subject(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def id(self) -> int: ...

    @property
    def schema(self) -> _RegistrySchema: ...


@runtime_checkable
class SchemaRegistry(Protocol):
    """What the document needs of a schema registry client (``schemas.RegistryClient`` fits)."""

    async def latest(self, subject: str) -> _Registered:
        """The newest version of ``subject``."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Payload:
    """A message payload: a reference to its component schema, and how it travels."""

    ref: str
    content_type: str = JSON_CONTENT_TYPE
    #: The registry subject, version and id, for a subject payload.
    registry: Mapping[str, Any] | None = None
    #: Whether a registry codec encodes the data (Confluent's wire format).
    encoded: bool = False


def _relocate(schema: Any, base: str) -> Any:
    """A copy of ``schema`` whose local ``$ref`` pointers (``#/...``) start at ``base``."""
    if isinstance(schema, list):
        return [_relocate(item, base) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "$ref" and isinstance(value, str) and value.startswith("#"):
            out[key] = base + value[1:]
        elif key != "$schema":  # the AsyncAPI document states the schema format itself
            out[key] = _relocate(value, base)
    return out


class Payloads:
    """Turns declared payload schemas into component schemas, each once."""

    def __init__(self, registry: SchemaRegistry | None) -> None:
        self.registry = registry
        #: ``components.schemas`` of the document.
        self.schemas: dict[str, Any] = {}
        self._known: dict[str, Payload] = {}

    async def payload(self, schema: PayloadSchema, *, wire_format: bool = False) -> Payload:
        """The payload for ``schema``; ``wire_format`` when a registry codec encodes it."""
        if isinstance(schema, str):
            return await self._subject(schema, wire_format)
        if isinstance(schema, type):
            key = f"model:{schema.__module__}.{schema.__qualname__}"
            found = self._known.get(key)
            if found is None:
                body = schema.model_json_schema(mode="serialization")
                found = self._known[key] = self._add(schema.__name__, body, None)
            return found
        key = "json:" + json.dumps(schema, sort_keys=True, default=str)
        found = self._known.get(key)
        if found is None:
            name = str(schema.get("title") or "Payload")
            found = self._known[key] = self._add(name, dict(schema), None)
        return found

    def _add(self, name: str, body: Any, registry: Mapping[str, Any] | None) -> Payload:
        """Store ``body`` under a free component name derived from ``name``."""
        chosen = free_name(name, self.schemas)
        pointer = f"#/components/schemas/{chosen}"
        if isinstance(body, Mapping) and "schemaFormat" in body:  # a multi-format schema
            inner = body["schema"]
            if body["schemaFormat"] == JSON_SCHEMA_FORMAT:
                inner = _relocate(inner, pointer + "/schema")
            self.schemas[chosen] = {**body, "schema": inner}
        else:
            self.schemas[chosen] = _relocate(body, pointer)
        return Payload(pointer, JSON_CONTENT_TYPE, registry)

    async def _subject(self, subject: str, wire_format: bool) -> Payload:
        found = self._known.get(f"subject:{subject}")
        if found is None:
            if self.registry is None:
                raise ConfigurationError(
                    f"schema={subject!r} names a registry subject, but no schema registry was "
                    "given; pass one (the CLI's --registry URL), or bind the bus's codec to one"
                )
            registered = await self.registry.latest(subject)
            kind = str(registered.schema.type).upper()
            body = {"schemaFormat": _format(kind, registered.schema.text)}
            body["schema"] = registered.schema.text if kind == "PROTOBUF" else _parse(registered)
            info = {
                "subject": subject,
                "version": registered.version,
                "id": registered.id,
                "schemaType": kind,
            }
            found = self._known[f"subject:{subject}"] = self._add(subject, body, info)
        if not wire_format:
            return found
        kind = str(found.registry["schemaType"]) if found.registry else ""
        return dataclasses.replace(found, content_type=WIRE_CONTENT_TYPES[kind], encoded=True)


def _format(kind: str, text: str) -> str:
    if kind == "AVRO":
        return AVRO_FORMAT
    if kind == "JSON":
        return JSON_SCHEMA_FORMAT
    if kind == "PROTOBUF":
        match = _PROTO_SYNTAX.search(text)
        return PROTOBUF_FORMAT.format(version=match.group(1) if match else "2")
    raise ConfigurationError(f"registry schemas of type {kind} cannot be described in AsyncAPI")


def _parse(registered: _Registered) -> Any:
    try:
        return json.loads(registered.schema.text)
    except ValueError as exc:
        raise ConfigurationError(
            f"the {registered.schema.type} schema of subject {registered.subject!r} "
            f"(version {registered.version}) is not JSON: {exc}"
        ) from exc
