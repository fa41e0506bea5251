"""Serializers writing Confluent's wire format: magic byte 0, 4-byte big-endian id, payload.

Avro payloads are fastavro's schemaless encoding; JSON payloads are UTF-8 JSON validated with
:mod:`jsonschema`; Protobuf payloads are in :mod:`schemas.proto_serde`. Subject name
strategies pick the subject for a topic: ``topic`` (``<topic>-value``), ``record`` (the
record's full name) and ``topic-record`` (``<topic>-<record>``). JSON schemas can be
generated from pydantic models.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import io
import json
import re
import struct
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import fastavro
from pydantic import BaseModel

from schemas.avro_check import compile_check
from schemas.client import RegistryClient
from schemas.compatibility import Resolved, json_validator, parse_avro
from schemas.errors import (
    InvalidInputError,
    NotFoundError,
    SchemaDecodeError,
    SchemaValidationError,
)
from schemas.model import Schema, SchemaType

__all__ = [
    "AVRO_CONTENT_TYPE",
    "JSON_WIRE_CONTENT_TYPE",
    "MAGIC_BYTE",
    "STRATEGIES",
    "AvroWireCodec",
    "Deserializer",
    "JsonWireCodec",
    "Serializer",
    "SubjectNameStrategy",
    "WireCodec",
    "json_schema_for",
    "pack",
    "plain",
    "record_name",
    "record_name_strategy",
    "subject_strategy",
    "topic_name_strategy",
    "topic_record_name_strategy",
    "unpack",
    "wire_codec",
]

MAGIC_BYTE = 0
AVRO_CONTENT_TYPE = "application/avro"
# Not "+json": the bytes start with the wire header, so they are not a JSON document.
JSON_WIRE_CONTENT_TYPE = "application/vnd.schemaregistry.json"
_HEADER = struct.Struct(">BI")
# Decoded values of these types are not JSON values and need converting.
_LOGICAL = re.compile(r'"(logicalType|bytes|fixed)"')


def pack(schema_id: int, payload: bytes) -> bytes:
    """Prefix ``payload`` with the wire header for ``schema_id``."""
    return _HEADER.pack(MAGIC_BYTE, schema_id) + payload


def unpack(data: bytes) -> tuple[int, bytes]:
    """The schema id and payload of wire-format bytes (:class:`SchemaDecodeError` if not)."""
    try:
        magic, schema_id = _HEADER.unpack_from(data)
    except struct.error:
        magic = schema_id = -1
    if magic != MAGIC_BYTE:
        raise SchemaDecodeError(
            f"not Confluent wire format: expected magic byte 0 and a 4-byte schema id, "
            f"got {bytes(data[:5])!r}"
        )
    payload = data[_HEADER.size :]
    return schema_id, payload if type(payload) is bytes else bytes(payload)


# -- subject name strategies --------------------------------------------------------------------

SubjectNameStrategy = Callable[[str, str | None, bool], str]


def topic_name_strategy(topic: str, record: str | None = None, is_key: bool = False) -> str:
    """``<topic>-value`` (or ``<topic>-key``): Confluent's default."""
    return f"{topic}-{'key' if is_key else 'value'}"


def record_name_strategy(topic: str, record: str | None = None, is_key: bool = False) -> str:
    """The record's fully qualified name."""
    if not record:
        raise InvalidInputError(f"the record name strategy needs a record name (topic {topic!r})")
    return record


def topic_record_name_strategy(topic: str, record: str | None = None, is_key: bool = False) -> str:
    """``<topic>-<record full name>``."""
    return f"{topic}-{record_name_strategy(topic, record, is_key)}"


STRATEGIES: Mapping[str, SubjectNameStrategy] = {
    "topic": topic_name_strategy,
    "record": record_name_strategy,
    "topic-record": topic_record_name_strategy,
}


def subject_strategy(name: str | SubjectNameStrategy) -> SubjectNameStrategy:
    """A strategy by name (``topic``, ``record``, ``topic-record``, or Confluent's
    ``TopicRecordNameStrategy`` spelling) or the callable itself."""
    if callable(name):
        return name
    key = re.sub(r"(?<=[a-z])(?=[A-Z])", "-", name).lower().replace("_", "-")
    key = key.removesuffix("-strategy").removesuffix("-name")
    try:
        return STRATEGIES[key]
    except KeyError:
        raise InvalidInputError(
            f"unknown subject name strategy {name!r}; use topic, record or topic-record"
        ) from None


def record_name(schema: Schema) -> str | None:
    """The full name of an Avro record (a JSON schema's ``title``, a Protobuf schema's first
    message when it compiles without references)."""
    if schema.type is SchemaType.PROTOBUF:
        return _first_message(schema)
    document = schema.parsed()
    if not isinstance(document, dict):
        return None
    if schema.type is SchemaType.JSON:
        title = document.get("title")
        return str(title) if title else None
    name, namespace = document.get("name"), document.get("namespace")
    if not name:
        return None
    return str(name) if "." in str(name) or not namespace else f"{namespace}.{name}"


def _first_message(schema: Schema) -> str | None:
    from schemas.proto_schema import compile_schema, message_paths

    try:
        paths = message_paths(compile_schema(schema).file)
    except InvalidInputError:
        return None
    return paths[0][0] if paths else None


def json_schema_for(model: type[BaseModel]) -> Schema:
    """The JSON schema of a pydantic model (draft 2020-12), ready to register."""
    document = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    document.update(model.model_json_schema())
    return Schema(json.dumps(document, separators=(",", ":")), SchemaType.JSON)


# -- codecs for one registered schema ------------------------------------------------------------


class WireCodec(Protocol):
    """Encodes and decodes values with one registered schema."""

    schema_id: int
    content_type: str

    def encode(self, value: Any) -> bytes:
        """Validate ``value`` and return wire-format bytes."""
        ...

    def decode(self, payload: bytes) -> Any:
        """Read a payload (without the wire header) into a JSON-friendly value."""
        ...


def plain(value: Any) -> Any:
    """A pydantic model or a dataclass as plain data (anything else unchanged)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _jsonable(value: Any) -> Any:
    """Avro's decoded logical types as JSON values (ISO dates, decimal strings, base64 bytes)."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


class AvroWireCodec:
    """Avro through fastavro's schemaless writer and reader."""

    content_type = AVRO_CONTENT_TYPE

    def __init__(self, schema_id: int, resolved: Resolved) -> None:
        self.schema_id = schema_id
        self.parsed = parse_avro(resolved)
        self._check = compile_check(self.parsed)
        self._plain_values = not _LOGICAL.search(json.dumps(self.parsed))
        self._header = _HEADER.pack(MAGIC_BYTE, schema_id)

    def validate(self, value: Any) -> None:
        """Raise :class:`SchemaValidationError` naming the first field that does not fit."""
        self._check(value, "")

    def encode(self, value: Any) -> bytes:
        """Validate and write."""
        if not isinstance(value, dict):
            value = plain(value)
        self._check(value, "")
        out = io.BytesIO(self._header)
        out.seek(_HEADER.size)
        try:
            fastavro.schemaless_writer(out, self.parsed, value)
        except (TypeError, ValueError, KeyError) as exc:
            raise SchemaValidationError(f"the data does not fit the schema: {exc}") from exc
        return out.getvalue()

    def decode(self, payload: bytes) -> Any:
        """Read with the writer's schema."""
        try:
            value = fastavro.schemaless_reader(io.BytesIO(payload), self.parsed, None)
        except Exception as exc:
            raise SchemaDecodeError(
                f"payload does not decode with schema {self.schema_id}: {exc}"
            ) from exc
        return value if self._plain_values else _jsonable(value)


class JsonWireCodec:
    """JSON validated by :mod:`jsonschema`."""

    content_type = JSON_WIRE_CONTENT_TYPE

    def __init__(self, schema_id: int, resolved: Resolved) -> None:
        self.schema_id = schema_id
        self.validator = json_validator(resolved)
        self._header = _HEADER.pack(MAGIC_BYTE, schema_id)

    def validate(self, value: Any) -> None:
        """Raise :class:`SchemaValidationError` naming the field that does not fit."""
        errors = sorted(self.validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            problems = [f"field {_json_path(err.absolute_path)!r}: {err.message}" for err in errors]
            raise SchemaValidationError("; ".join(problems[:5]))

    def encode(self, value: Any) -> bytes:
        """Validate and write compact UTF-8 JSON."""
        value = plain(value)
        self.validate(value)
        return self._header + json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, payload: bytes) -> Any:
        """Parse the JSON payload."""
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise SchemaDecodeError(
                f"payload of schema {self.schema_id} is not JSON: {exc}"
            ) from exc


def _json_path(path: Any) -> str:
    parts = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return f"${parts}"


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, dict) else str(value.get("name", value))
    return text if len(text) <= 60 else text[:57] + "..."


async def wire_codec(client: RegistryClient, schema_id: int) -> WireCodec:
    """The codec for a registered schema id (:class:`SchemaDecodeError` if unknown)."""
    try:
        schema = await client.get_schema(schema_id)
    except NotFoundError as exc:
        raise SchemaDecodeError(f"unknown schema id {schema_id}: {exc}") from exc
    resolved = await client.resolve(schema)
    if schema.type is SchemaType.AVRO:
        return AvroWireCodec(schema_id, resolved)
    if schema.type is SchemaType.PROTOBUF:
        from schemas.proto_serde import ProtobufWireCodec

        return ProtobufWireCodec(schema_id, resolved)
    return JsonWireCodec(schema_id, resolved)


# -- serializer and deserializer -----------------------------------------------------------------


class Serializer:
    """Value -> wire bytes for a topic, registering or looking up the schema as configured.

    With a ``schema`` (or a pydantic model class, for JSON), the subject comes from the
    strategy and the schema is registered (``auto_register``) or looked up. Without one, the
    subject's latest schema is used.
    """

    def __init__(
        self,
        client: RegistryClient,
        schema: Schema | type[BaseModel] | None = None,
        *,
        strategy: str | SubjectNameStrategy = "topic",
        auto_register: bool = True,
        is_key: bool = False,
    ) -> None:
        self.client = client
        if isinstance(schema, type):
            schema = json_schema_for(schema)
        self.schema = schema
        self.strategy = subject_strategy(strategy)
        self.auto_register = auto_register
        self.is_key = is_key
        self._codecs: dict[str, WireCodec] = {}

    def subject(self, topic: str) -> str:
        """The subject for ``topic`` under this serializer's strategy."""
        name = record_name(self.schema) if self.schema is not None else None
        return self.strategy(topic, name, self.is_key)

    async def _codec(self, topic: str) -> WireCodec:
        subject = self.subject(topic)
        codec = self._codecs.get(subject)
        if codec is None:
            if self.schema is None:
                schema_id = (await self.client.latest(subject)).id
            elif self.auto_register:
                schema_id = await self.client.register(subject, self.schema)
            else:
                schema_id = (await self.client.lookup(subject, self.schema)).id
            codec = self._codecs[subject] = await wire_codec(self.client, schema_id)
        return codec

    async def serialize(self, topic: str, value: Any) -> bytes:
        """Validate and encode ``value`` for ``topic``."""
        return (await self._codec(topic)).encode(value)


class Deserializer:
    """Wire bytes -> value, by the schema id in the header (cached per id)."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._codecs: dict[int, WireCodec] = {}

    async def codec(self, schema_id: int) -> WireCodec:
        """The cached codec for ``schema_id``."""
        codec = self._codecs.get(schema_id)
        if codec is None:
            codec = self._codecs[schema_id] = await wire_codec(self.client, schema_id)
        return codec

    async def deserialize(self, data: bytes) -> Any:
        """Decode wire-format bytes."""
        schema_id, payload = unpack(data)
        return (await self.codec(schema_id)).decode(payload)
