"""Protobuf payloads in Confluent's wire format, for the bus codec and the serializers.

After the magic byte and the schema id, a Protobuf payload carries the **message indexes**:
the path of the message type in the schema's file (``[0]`` is the first top-level message,
``[1, 0]`` the first message nested in the second). They are written as zigzag varints, a
count then the indexes, and ``[0]`` as the single byte ``0``, as confluent-kafka does.

Values are JSON-like dicts in protobuf's JSON mapping (``json_format``): field names as in the
``.proto`` file (lowerCamelCase is accepted too), 64-bit integers as strings, enums by name,
``google.protobuf.Timestamp`` as an RFC 3339 string. A generated message object is accepted
as is.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from schemas.compatibility import Resolved, compiled_proto
from schemas.errors import InvalidSchemaError, SchemaDecodeError, SchemaValidationError
from schemas.proto_schema import message_paths

if TYPE_CHECKING:
    from google.protobuf.message import Message

__all__ = [
    "PROTOBUF_WIRE_CONTENT_TYPE",
    "ProtobufWireCodec",
    "read_indexes",
    "write_indexes",
]

# Not "application/x-protobuf": the bytes start with the wire header.
PROTOBUF_WIRE_CONTENT_TYPE = "application/vnd.schemaregistry.protobuf"
_HEADER = struct.Struct(">BI")


def _zigzag(value: int) -> bytes:
    number = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        if not number:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def write_indexes(indexes: Sequence[int]) -> bytes:
    """Confluent's message-index array for ``indexes``."""
    if list(indexes) == [0]:
        return b"\x00"
    return _zigzag(len(indexes)) + b"".join(_zigzag(i) for i in indexes)


def _read_zigzag(data: bytes, offset: int) -> tuple[int, int]:
    shift = number = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise SchemaDecodeError("the Protobuf message indexes are cut short")
        byte = data[offset]
        number |= (byte & 0x7F) << shift
        offset, shift = offset + 1, shift + 7
        if not byte & 0x80:
            return (number >> 1) ^ -(number & 1), offset


def read_indexes(data: bytes) -> tuple[tuple[int, ...], int]:
    """The message indexes at the start of ``data`` and where the message starts."""
    count, offset = _read_zigzag(data, 0)
    if count == 0:
        return (0,), offset
    if not 0 < count <= 128:
        raise SchemaDecodeError(f"the Protobuf message index count {count} is not valid")
    indexes = []
    for _ in range(count):
        index, offset = _read_zigzag(data, offset)
        indexes.append(index)
    return tuple(indexes), offset


class ProtobufWireCodec:
    """Protobuf messages of one registered schema: the first message type by default."""

    content_type = PROTOBUF_WIRE_CONTENT_TYPE

    def __init__(self, schema_id: int, resolved: Resolved, message: str | None = None) -> None:
        compiled = compiled_proto(resolved)
        self.schema_id = schema_id
        self._pool = compiled.pool()
        paths = message_paths(compiled.file)
        if not paths:
            raise InvalidSchemaError(f"Protobuf schema {schema_id} defines no message")
        self._indexes = dict(paths)
        self._names = {indexes: name for name, indexes in paths}
        self.message = message or paths[0][0]
        if self.message not in self._indexes:
            raise InvalidSchemaError(f"Protobuf schema {schema_id} has no message {message!r}")
        self._header = _HEADER.pack(0, schema_id)
        self._classes: dict[str, type[Message]] = {}

    def _class(self, name: str) -> type[Message]:
        cls = self._classes.get(name)
        if cls is None:
            from google.protobuf import message_factory

            descriptor = self._pool.FindMessageTypeByName(name)
            cls = self._classes[name] = message_factory.GetMessageClass(descriptor)
        return cls

    def encode(self, value: Any) -> bytes:
        """Validate (by building the message) and write the wire bytes."""
        from google.protobuf import json_format
        from google.protobuf.message import Message

        if isinstance(value, Message):
            name = value.DESCRIPTOR.full_name
            if name not in self._indexes:
                raise SchemaValidationError(
                    f"message {name} is not defined by schema {self.schema_id}"
                )
            body = value.SerializeToString()
        else:
            name, message = self.message, self._class(self.message)()
            try:
                json_format.ParseDict(_plain(value), message)
            except (json_format.ParseError, TypeError, ValueError) as exc:
                raise SchemaValidationError(f"the data does not fit {name}: {exc}") from exc
            body = message.SerializeToString()
        return self._header + write_indexes(self._indexes[name]) + body

    def decode(self, payload: bytes) -> Any:
        """Read a payload (message indexes, then the message) into a JSON-friendly dict."""
        from google.protobuf import json_format
        from google.protobuf.message import DecodeError

        indexes, offset = read_indexes(payload)
        name = self._names.get(indexes)
        if name is None:
            raise SchemaDecodeError(
                f"message indexes {list(indexes)} name no message of schema {self.schema_id}"
            )
        message = self._class(name)()
        try:
            message.ParseFromString(payload[offset:])
        except DecodeError as exc:
            raise SchemaDecodeError(
                f"payload does not decode as {name} (schema {self.schema_id}): {exc}"
            ) from exc
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )


def _plain(value: Any) -> Any:
    from schemas.serde import plain

    return plain(value)
