"""The bus integration: validate and encode on publish, decode on consume.

The broker's bus takes a :class:`SchemaCodec` as its payload codec. A topic is bound to a
subject explicitly (``bindings``) or through a subject name strategy: ``topic`` gives
``<topic>-value``; ``record`` uses the CloudEvent ``type`` as the record name and
``topic-record`` gives ``<topic>-<type>``. A topic whose subject has no schema passes through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, Self, TypeVar

from schemas.client import RegistryClient
from schemas.errors import SchemaDecodeError, SchemaValidationError, SubjectNotFoundError
from schemas.serde import (
    MAGIC_BYTE,
    SubjectNameStrategy,
    WireCodec,
    subject_strategy,
    unpack,
    wire_codec,
)

__all__ = ["EventLike", "SchemaCodec"]

JSON_CONTENT_TYPE = "application/json"


class EventLike(Protocol):
    """What the codec needs of a CloudEvent (``broker.envelope.Event`` fits)."""

    type: str
    data: Any
    datacontenttype: str | None
    dataschema: str | None

    def replace(self, **changes: Any) -> Self:
        """A copy with some attributes changed."""
        ...


E = TypeVar("E", bound=EventLike)


class SchemaCodec:
    """Encodes event data with its topic's schema on publish and decodes it on consume."""

    def __init__(
        self,
        client: RegistryClient,
        bindings: Mapping[str, str] | None = None,
        *,
        strategy: str | SubjectNameStrategy = "topic",
    ) -> None:
        self.client = client
        self.bindings = dict(bindings or {})
        self.strategy = subject_strategy(strategy)
        self._codecs: dict[int, WireCodec] = {}

    def subject_for(self, topic: str, event_type: str | None = None) -> str:
        """The subject bound to ``topic`` or, unbound, the strategy's (``type`` = record name)."""
        bound = self.bindings.get(topic)
        return bound if bound is not None else self.strategy(topic, event_type, False)

    async def _codec(self, schema_id: int) -> WireCodec:
        codec = self._codecs.get(schema_id)
        if codec is None:
            codec = self._codecs[schema_id] = await wire_codec(self.client, schema_id)
        return codec

    async def _latest_codec(self, subject: str) -> WireCodec | None:
        try:
            latest = await self.client.latest(subject)
        except SubjectNotFoundError:
            return None
        return await self._codec(latest.id)

    async def encode(self, topic: str, event: E) -> E:
        """Validate ``event.data`` against the subject's latest schema and encode it.

        Raises :class:`SchemaValidationError` (a ``ValueError``) naming the topic, the subject
        and the field. Data already in wire format, and topics without a schema, pass through.
        """
        data = event.data
        if isinstance(data, bytes | bytearray) and data[:1] == bytes([MAGIC_BYTE]):
            return event
        subject = self.subject_for(topic, event.type)
        codec = await self._latest_codec(subject)
        if codec is None:
            return event
        try:
            encoded = codec.encode(data)
        except SchemaValidationError as exc:
            raise SchemaValidationError(
                f"event data for topic {topic!r} does not match subject {subject!r} "
                f"(schema id {codec.schema_id}): {exc}"
            ) from exc
        return event.replace(
            data=encoded,
            datacontenttype=codec.content_type,
            dataschema=f"{self.client.url}/schemas/ids/{codec.schema_id}",
        )

    async def decode(self, topic: str, event: E) -> E:
        """Decode wire-format bytes by their schema id into a JSON value.

        Raises :class:`SchemaDecodeError` (a ``ValueError``) for an unknown id or bad bytes;
        bytes without the magic byte pass through unless the topic has a schema.
        """
        data = event.data
        if not isinstance(data, bytes | bytearray):
            return event
        if data[:1] != bytes([MAGIC_BYTE]):
            subject = self.subject_for(topic, event.type)
            if await self._latest_codec(subject) is None:
                return event
        try:
            schema_id, payload = unpack(bytes(data))
            value = (await self._codec(schema_id)).decode(payload)
        except SchemaDecodeError as exc:
            raise SchemaDecodeError(f"event data on topic {topic!r} is undecodable: {exc}") from exc
        return event.replace(data=value, datacontenttype=JSON_CONTENT_TYPE)
