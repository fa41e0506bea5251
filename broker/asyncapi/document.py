"""Build the AsyncAPI 3.0 document of one or more buses from their declarations.

* a **channel** per topic a bus publishes (``bus.publisher``) or subscribes to; address = topic;
* a **send** operation per (bus, topic) it publishes to, and a **receive** operation per
  (subscription, topic), whose identity is the consumer group (Kafka ``groupId`` and NATS
  ``queue`` bindings, and ``x-choreograph.group``);
* a **message** per CloudEvents type (its name), headers = the CloudEvents attributes as the
  bus's backend carries them, payload = the declared schema (:mod:`broker.asyncapi.payloads`).

A subscription that names no type receives every message declared on its topics; a topic
nobody describes carries "any CloudEvent".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from broker.asyncapi.bindings import (
    Wire,
    channel_bindings,
    headers_schema,
    message_bindings,
    message_headers,
    operation_bindings,
    server_object,
    wire_of,
)
from broker.asyncapi.payloads import (
    Payload,
    Payloads,
    SchemaRegistry,
    component_name,
    free_name,
)
from broker.declarations import PayloadSchema, SubscriptionSpec
from broker.errors import ConfigurationError

if TYPE_CHECKING:
    from broker.bus import Bus

__all__ = ["ASYNCAPI_VERSION", "asyncapi_document"]

ASYNCAPI_VERSION = "3.0.0"


@dataclasses.dataclass(slots=True)
class _Message:
    id: str
    type: str | None
    payload: Payload | None
    wire: Wire
    summary: str | None = None

    def render(self, headers: str) -> dict[str, Any]:
        """The message object; ``headers`` refers to the schema of the common headers."""
        payload = self.payload
        out: dict[str, Any] = {}
        if self.type:
            out.update(name=self.type, title=self.type)
        else:
            out["title"] = "any CloudEvent"
        if self.summary:
            out["summary"] = self.summary
        if payload is not None:
            out["contentType"] = payload.content_type
        out["headers"] = message_headers(self.wire, headers, self.type)
        if payload is not None:
            out["payload"] = {"$ref": payload.ref}
        out["correlationId"] = {
            "description": "The CloudEvents correlationid extension.",
            "location": f"$message.header#/{self.wire.prefix}correlationid",
        }
        out["bindings"] = message_bindings(payload is not None and payload.encoded)
        if payload is not None and payload.registry is not None:
            out["x-choreograph"] = {"registry": dict(payload.registry)}
        return out


@dataclasses.dataclass(slots=True)
class _Channel:
    id: str
    topic: str
    messages: dict[str, None] = dataclasses.field(default_factory=dict)
    servers: dict[str, None] = dataclasses.field(default_factory=dict)

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "address": self.topic,
            "title": self.topic,
            "description": (
                f"Kafka topic `{self.topic}`; RabbitMQ durable topic exchange `{self.topic}` "
                f"(routing key `{self.topic}`, one durable queue `{self.topic}.<group>` per "
                f"group); NATS subject `{self.topic}` (one durable consumer per group)."
            ),
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in self.messages},
        }
        if self.servers:
            out["servers"] = [{"$ref": f"#/servers/{s}"} for s in self.servers]
        out["bindings"] = channel_bindings(self.topic)
        return out


class _Builder:
    def __init__(self, registry: SchemaRegistry | None) -> None:
        self.payloads = Payloads(registry)
        self.servers: dict[str, Any] = {}
        self.channels: dict[str, _Channel] = {}
        self.messages: list[_Message] = []
        self.operations: dict[str, Any] = {}
        self._server_of: dict[int, str | None] = {}
        #: (operation id, topic, wire) of the receives that name no type: they get every
        #: message of their channel once all are known.
        self._untyped: list[tuple[str, str, Wire]] = []

    # -- parts -------------------------------------------------------------------------------

    def server(self, bus: Bus) -> str | None:
        key = id(bus)
        if key not in self._server_of:
            wire = wire_of(bus.url)
            found = server_object(bus.url, wire, f"The broker of {bus.source}.")
            name = None
            if found is not None:
                same = [n for n, s in self.servers.items() if s["host"] == found["host"]]
                name = same[0] if same else free_name(wire.name, self.servers)
                self.servers.setdefault(name, found)
            self._server_of[key] = name
        return self._server_of[key]

    def channel(self, bus: Bus, topic: str) -> _Channel:
        found = self.channels.get(topic)
        if found is None:
            taken = {c.id for c in self.channels.values()}
            found = self.channels[topic] = _Channel(free_name(topic, taken), topic)
        server = self.server(bus)
        if server is not None:
            found.servers[server] = None
        return found

    async def payload(self, bus: Bus, schema: PayloadSchema | None) -> Payload | None:
        if schema is None:
            return None
        return await self.payloads.payload(schema, wire_format=bus.codec is not None)

    def message(self, event_type: str | None, payload: Payload | None, wire: Wire) -> _Message:
        same = [m for m in self.messages if m.type == event_type]
        for candidate in same:
            if candidate.payload == payload or (payload is None and event_type is not None):
                return candidate
        for candidate in same:
            if event_type is not None and candidate.payload is None:
                candidate.payload = payload  # declared without a schema: now we know it
                return candidate
        base = event_type or (payload.ref.rsplit("/", 1)[1] if payload else "cloudevent")
        taken = {m.id for m in self.messages}
        created = _Message(free_name(base, taken), event_type, payload, wire)
        self.messages.append(created)
        return created

    def operation(self, base: str, alternative: str, body: dict[str, Any]) -> str:
        name = base
        if name in self.operations:
            name = free_name(f"{base}.{alternative}", self.operations)
        self.operations[name] = body
        return name

    # -- declarations ------------------------------------------------------------------------

    async def publications(self, bus: Bus) -> None:
        wire = wire_of(bus.url)
        by_topic: dict[str, list[_Message]] = {}
        for spec in bus.declarations.publications:
            message = self.message(spec.type, await self.payload(bus, spec.schema), wire)
            if spec.description and not message.summary:
                message.summary = spec.description
            self.channel(bus, spec.topic).messages[message.id] = None
            by_topic.setdefault(spec.topic, []).append(message)
        for topic, sent in by_topic.items():
            channel = self.channel(bus, topic)
            types = ", ".join(dict.fromkeys(m.type or "" for m in sent))
            body: dict[str, Any] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{channel.id}"},
                "title": f"{bus.source} publishes {types}",
                "messages": _refs(channel, sent),
                "bindings": operation_bindings(None),
                "x-choreograph": {"source": bus.source},
            }
            self.operation(f"send.{channel.id}", component_name(bus.source), body)

    async def subscriptions(self, bus: Bus) -> None:
        wire = wire_of(bus.url)
        for spec in bus.declarations.subscriptions:
            payload = await self.payload(bus, spec.schema)
            for topic in spec.topics:
                channel = self.channel(bus, topic)
                body = self._receive(bus, spec, channel)
                name = self.operation(
                    f"receive.{channel.id}.{component_name(spec.group)}",
                    component_name(bus.source),
                    body,
                )
                if spec.type is None and payload is None:
                    self._untyped.append((name, topic, wire))
                    continue
                message = self.message(spec.type, payload, wire)
                channel.messages[message.id] = None
                body["messages"] = _refs(channel, [message])

    def _receive(self, bus: Bus, spec: SubscriptionSpec, channel: _Channel) -> dict[str, Any]:
        body: dict[str, Any] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel.id}"},
            "title": f"{spec.group} handles {channel.topic}",
        }
        if spec.summary:
            body["summary"] = spec.summary
        body["messages"] = []
        body["bindings"] = operation_bindings(spec.group)
        body["x-choreograph"] = {
            "group": spec.group,
            "handler": spec.handler_name,
            "source": bus.source,
            "amqpQueue": f"{channel.topic}.{spec.group}",
            "deadLetterTopic": bus.dead_letter_topic(channel.topic, spec.group),
        }
        return body

    def render_messages(self) -> dict[str, Any]:
        """The messages, and a schema of their common headers per wire in the components."""
        headers: dict[str, str] = {}
        for message in self.messages:
            if message.wire.name not in headers:
                name = free_name(f"CloudEventHeaders.{message.wire.name}", self.payloads.schemas)
                self.payloads.schemas[name] = headers_schema(message.wire)
                headers[message.wire.name] = f"#/components/schemas/{name}"
        return {m.id: m.render(headers[m.wire.name]) for m in self.messages}

    def finish(self) -> None:
        """Give each receive that named no type every message of its channel (or any)."""
        for name, topic, wire in self._untyped:
            channel = self.channels[topic]
            if not channel.messages:
                channel.messages[self.message(None, None, wire).id] = None
            self.operations[name]["messages"] = _refs(
                channel, (m for m in self.messages if m.id in channel.messages)
            )


def _refs(channel: _Channel, messages: Iterable[_Message]) -> list[dict[str, str]]:
    ids = dict.fromkeys(m.id for m in messages)
    return [{"$ref": f"#/channels/{channel.id}/messages/{m}"} for m in ids]


def _buses(buses: Any) -> list[Bus]:
    from broker.bus import Bus

    found = [buses] if isinstance(buses, Bus) else list(buses)
    wrong = [b for b in found if not isinstance(b, Bus)]
    if wrong or not found:
        raise ConfigurationError(
            f"an AsyncAPI document describes a Bus or a list of them, not {wrong[0]!r}"
            if wrong
            else "an AsyncAPI document needs at least one Bus"
        )
    return found


async def asyncapi_document(
    buses: Bus | Iterable[Bus],
    *,
    registry: SchemaRegistry | None = None,
    title: str | None = None,
    version: str = "1.0.0",
    description: str | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document (a JSON-ready dict) of what ``buses`` publish and consume.

    ``registry`` resolves payload schemas named by a registry subject; by default, the client
    of a bus's codec when it has one (``schemas.SchemaCodec`` does).
    """
    found = _buses(buses)
    if registry is None:
        registry = _codec_registry(found)
    builder = _Builder(registry)
    for bus in found:
        await builder.publications(bus)
    for bus in found:
        await builder.subscriptions(bus)
    builder.finish()
    sources = ", ".join(dict.fromkeys(bus.source for bus in found))
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title or sources,
            "version": version,
            "description": description
            or f"The events {sources} publish and consume, as CloudEvents 1.0.",
        },
        "defaultContentType": "application/json",
    }
    if builder.servers:
        document["servers"] = builder.servers
    document["channels"] = {c.id: c.render() for c in builder.channels.values()}
    document["operations"] = builder.operations
    messages = builder.render_messages()
    document["components"] = {"schemas": builder.payloads.schemas, "messages": messages}
    return document


def _codec_registry(buses: list[Bus]) -> SchemaRegistry | None:
    for bus in buses:
        client = getattr(bus.codec, "client", None)
        if isinstance(client, SchemaRegistry):
            return client
    return None
