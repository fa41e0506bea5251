"""How each kind of backend carries a channel and its events, in AsyncAPI terms.

Names on the broker (DESIGN.md): Kafka topic = topic name; RabbitMQ a durable topic exchange
named after the topic, routing key = topic, one durable queue ``<topic>.<group>`` per group;
NATS subject = topic name, one durable JetStream consumer per group. Every channel and
operation carries the Kafka, AMQP and NATS bindings (an application moves between backends by
URL); the message headers and the ``servers`` entry follow the backend of the bus's URL.
CloudEvents attributes travel as headers in binary content mode: ``ce_<attr>`` on Kafka,
``cloudEvents_<attr>`` on AMQP, ``ce-<attr>`` on NATS; the embedded backends (SQLite, memory)
keep the attributes by their own names.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

from broker.envelope import AMQP_PREFIXES, KAFKA_PREFIXES, NATS_PREFIXES

__all__ = [
    "Wire",
    "channel_bindings",
    "headers_schema",
    "message_bindings",
    "message_headers",
    "operation_bindings",
    "server_object",
    "wire_of",
]

KAFKA_BINDING = "0.5.0"
AMQP_BINDING = "0.3.0"
NATS_BINDING = "0.1.0"

_TEXT: dict[str, Any] = {"type": "string"}
_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
#: CloudEvents attributes choreograph reads or writes: (name, schema, required, description).
ATTRIBUTES: tuple[tuple[str, dict[str, Any], bool, str], ...] = (
    ("specversion", {"type": "string", "const": "1.0"}, True, "CloudEvents version."),
    ("id", {"type": "string", "minLength": 1}, True, "Event id, unique per source."),
    ("source", {"type": "string", "minLength": 1}, True, "The service that published it."),
    ("type", _TEXT, True, "The CloudEvents type."),
    ("time", _TIME, False, "When it happened (RFC 3339)."),
    ("subject", _TEXT, False, "What it is about, within the source."),
    ("dataschema", _TEXT, False, "The registry schema of the data (set by a registry codec)."),
    ("correlationid", _TEXT, False, "The business transaction (saga) it belongs to."),
    ("causationid", _TEXT, False, "The id of the event that caused it."),
    ("traceparent", _TEXT, False, "W3C trace context."),
    ("tracestate", _TEXT, False, "W3C trace state."),
    ("partitionkey", _TEXT, False, "Ordering key; events with one key keep their order."),
    (
        "expiration",
        _TIME,
        False,
        "Absolute expiry time (a publish TTL); expired events are dead-lettered.",
    ),
    ("deliverat", _TIME, False, "Delivery time (a delayed publish); no group sees it before."),
    ("retrygroup", _TEXT, False, "On a deferred retry's copy: the only group that handles it."),
    (
        "retryattempt",
        {"type": ["integer", "string"]},
        False,
        "On a deferred retry's copy: the attempt it brings (2 or more; text in headers).",
    ),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Wire:
    """How one kind of backend carries events."""

    #: Key of the server in ``servers``.
    name: str
    #: How the page and the header schema's title name it.
    title: str
    #: AsyncAPI server protocol; ``None`` for the embedded backends (no server to join).
    protocol: str | None
    #: Prefix of the CloudEvents attribute headers.
    prefix: str
    protocol_version: str | None = None
    #: Headers the binding adds besides the attributes.
    extra_headers: tuple[tuple[str, str], ...] = ()


_CONTENT_TYPE = ("content-type", "The data's media type (CloudEvents datacontenttype).")
_KAFKA = Wire("kafka", "Kafka headers", "kafka", KAFKA_PREFIXES[0], extra_headers=(_CONTENT_TYPE,))
_AMQP = Wire("amqp", "AMQP application headers", "amqp", AMQP_PREFIXES[0], "0.9.1")
_NATS = Wire(
    "nats",
    "NATS headers",
    "nats",
    NATS_PREFIXES[0],
    extra_headers=(_CONTENT_TYPE, ("Nats-Msg-Id", "The event id: JetStream de-duplicates on it.")),
)
_EMBEDDED = Wire("embedded", "embedded broker", None, "")
_WIRES = {
    "kafka": _KAFKA,
    "amqp": _AMQP,
    "amqps": dataclasses.replace(_AMQP, protocol="amqps"),
    "nats": _NATS,
    "tls": _NATS,
}


def wire_of(url: str) -> Wire:
    """The wire of the backend a (masked) broker URL names."""
    return _WIRES.get(urlsplit(url).scheme.lower(), _EMBEDDED)


def server_object(url: str, wire: Wire, description: str) -> dict[str, Any] | None:
    """The ``servers`` entry for a bus on ``url`` (no credentials, no options), or ``None``
    for an embedded backend."""
    if wire.protocol is None:
        return None
    parts = urlsplit(url)
    server: dict[str, Any] = {
        "host": parts.netloc.rpartition("@")[2] or "localhost",
        "protocol": wire.protocol,
    }
    if wire.protocol_version:
        server["protocolVersion"] = wire.protocol_version
    if parts.path not in ("", "/"):
        server["pathname"] = parts.path
    server["description"] = description
    return server


def headers_schema(wire: Wire) -> dict[str, Any]:
    """The JSON Schema of the headers every event carries: the CloudEvents attributes as
    ``wire`` names them."""
    properties: dict[str, Any] = {}
    required = []
    for name, schema, needed, description in ATTRIBUTES:
        properties[wire.prefix + name] = {**schema, "description": description}
        if needed:
            required.append(wire.prefix + name)
    if wire.prefix == "":
        properties["datacontenttype"] = {**_TEXT, "description": _CONTENT_TYPE[1]}
    for header, description in wire.extra_headers:
        properties[header] = {**_TEXT, "description": description}
    return {
        "title": f"CloudEvents attributes ({wire.title})",
        "type": "object",
        "required": required,
        "properties": properties,
    }


def message_headers(wire: Wire, common: str, event_type: str | None) -> dict[str, Any]:
    """A message's headers: the ``common`` ones (a reference) with ``type`` fixed."""
    if event_type is None:
        return {"$ref": common}
    fixed = {wire.prefix + "type": {"type": "string", "const": event_type}}
    return {"type": "object", "allOf": [{"$ref": common}, {"properties": fixed}]}


def channel_bindings(topic: str) -> dict[str, Any]:
    """Where ``topic`` lives on each broker (NATS has no channel binding: subject = address)."""
    return {
        "kafka": {"topic": topic, "bindingVersion": KAFKA_BINDING},
        "amqp": {
            "is": "routingKey",
            "exchange": {"name": topic, "type": "topic", "durable": True, "autoDelete": False},
            "bindingVersion": AMQP_BINDING,
        },
    }


def operation_bindings(group: str | None) -> dict[str, Any]:
    """Bindings of a send (``group`` is ``None``) or of a receive by ``group``."""
    if group is None:
        return {"amqp": {"deliveryMode": 2, "bindingVersion": AMQP_BINDING}}
    bindings: dict[str, Any] = {
        "kafka": {"groupId": {"type": "string", "enum": [group]}, "bindingVersion": KAFKA_BINDING},
        "amqp": {"ack": True, "bindingVersion": AMQP_BINDING},
    }
    if len(group) <= 255:
        bindings["nats"] = {"queue": group, "bindingVersion": NATS_BINDING}
    return bindings


def message_bindings(registry_encoded: bool) -> dict[str, Any]:
    """The Kafka message binding: key = ``partitionkey``; where the schema id is when a registry
    codec encodes the data (Confluent's wire format: magic byte, 4-byte id, payload)."""
    kafka: dict[str, Any] = {
        "key": {"type": "string", "description": "The event's partitionkey, if any."},
    }
    if registry_encoded:
        kafka["schemaIdLocation"] = "payload"
        kafka["schemaIdPayloadEncoding"] = "confluent"
    kafka["bindingVersion"] = KAFKA_BINDING
    return {"kafka": kafka}
