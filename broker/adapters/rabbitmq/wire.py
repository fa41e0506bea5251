"""The AMQP 0-9-1 CloudEvents binding as RabbitMQ carries it (binary content mode).

Application headers ``cloudEvents_<attr>`` (integers and booleans keep their AMQP type; the
``cloudEvents:`` prefix and knative's ``ce-`` are read too; a ``time`` sent as an AMQP 1.0 style
millisecond timestamp is accepted), the ``content_type`` and ``message_id`` properties, and
``delivery_mode=2``. A message RabbitMQ dead-lettered itself because its TTL passed (an
``x-death`` header with reason ``expired``) is given the core's ``dlq*`` extensions.

Each message choreograph publishes also carries a ``choreo-message`` header naming that message
(not its event: publishing one event twice makes two messages): a queue has no positions, so
this is the delivery's :attr:`~broker.ports.Delivery.position`, by which the saga monitor tells
a message delivered again from a second message with the same event. A message without it (from
another producer) has no position, and only the broker's ``redelivered`` flag tells.
"""

from __future__ import annotations

import itertools
import os
import struct
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp import encode as pamqp_encode

from broker import deadletter
from broker.adapters.rabbitmq.delay import is_wait_queue
from broker.envelope import AMQP_PREFIXES, Event, format_time, from_binary, to_binary
from broker.errors import EnvelopeError

__all__ = [
    "MESSAGE_HEADER",
    "PREFIX",
    "READ_PREFIXES",
    "decode_message",
    "encode_event",
    "encode_headers",
    "message_id",
]

PREFIX = AMQP_PREFIXES[0]
READ_PREFIXES = (*AMQP_PREFIXES, "ce-")
#: The header naming each published message (see the module's docstring).
MESSAGE_HEADER = "choreo-message"


class _MessageNames:
    """``<process prefix>-<n>``: unique per message, cheap to make; a forked child takes a
    prefix of its own."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self.prefix = uuid.uuid4().hex[:16] + "-"
        self.counter = itertools.count()

    def next(self) -> str:
        return self.prefix + str(next(self.counter))


_names = _MessageNames()


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    if isinstance(value, datetime):
        return format_time(value if value.tzinfo else value.replace(tzinfo=UTC))
    return str(value)


def _attribute(name: str, value: Any) -> Any:
    """A header value as the envelope reads it: text, or an int/bool extension value."""
    if isinstance(value, str | bool):
        return value
    if isinstance(value, int) and not name.endswith("time"):
        return value
    if isinstance(value, int):  # an AMQP 1.0 style timestamp in milliseconds
        return format_time(datetime.fromtimestamp(value / 1000, UTC))
    return _text(value)


def decode_message(
    message: DeliveredMessage,
) -> tuple[Event | None, dict[str, str], EnvelopeError | None]:
    """The event in an AMQP message (or why there is none) and its headers as text."""
    props = message.header.properties
    raw = props.headers or {}
    fields = {name: _attribute(name, value) for name, value in raw.items()}
    if props.content_type:
        fields["content-type"] = props.content_type
    error: EnvelopeError | None = None
    try:
        event: Event | None = from_binary(fields, message.body, READ_PREFIXES)
    except EnvelopeError as exc:
        event, error = None, exc
    except Exception as exc:  # odd header types must not stop the consumer
        event, error = None, EnvelopeError(f"unreadable AMQP message: {exc!r}")
    else:
        if "x-death" in raw and event is not None and not deadletter.is_dead_letter(event):
            event = _mark_expired(event, raw["x-death"])
    headers = {
        name: value if isinstance(value, str) else _text(value) for name, value in fields.items()
    }
    if props.message_id:
        headers["message-id"] = props.message_id
    return event, headers, error


def _mark_expired(event: Event, deaths: Any) -> Event:
    """Give a message RabbitMQ dead-lettered itself the ``dlq*`` extensions of the core."""
    death = deaths[0] if isinstance(deaths, list) and deaths else {}
    if not isinstance(death, Mapping) or _text(death.get("reason", "")) != "expired":
        return event
    queue = _text(death.get("queue", ""))
    if is_wait_queue(queue):  # it waited for its delivery time there: not an expiry
        return event
    keys = death.get("routing-keys") or [death.get("exchange", "")]
    topic = _text(keys[0]) if keys else ""
    when = death.get("time")
    return deadletter.dead_letter(
        event,
        reason=deadletter.EXPIRED,
        error=f"TTL passed in RabbitMQ queue {queue}",
        topic=topic,
        group=queue[len(topic) + 1 :] if queue.startswith(topic + ".") else queue,
        time=_text(when) if when is not None else None,
    )


_pack_length = struct.Struct(">I").pack


def encode_headers(headers: Mapping[str, Any]) -> bytes:
    """An AMQP field table; text and booleans inline (pamqp's generic encoder is 4x slower)."""
    parts = []
    for key, value in headers.items():
        name = key.encode()
        parts.append(bytes((len(name),)) + name)
        if isinstance(value, str):
            text = value.encode()
            parts.append(b"S" + _pack_length(len(text)) + text)
        elif isinstance(value, bool):
            parts.append(b"t\x01" if value else b"t\x00")
        else:
            parts.append(pamqp_encode.encode_table_value(value))
    table = b"".join(parts)
    return _pack_length(len(table)) + table


def _short(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"AMQP short string over 255 bytes: {text[:40]!r}...")
    return bytes((len(raw),)) + raw


class _Properties(spec.Basic.Properties):
    """The properties choreograph sets, marshalled directly (pamqp's generic path is slower).

    No ``__slots__`` here on purpose: pamqp's own code reads the fields named by
    ``self.__slots__``. Anything beyond our five fields falls back to pamqp.
    """

    def marshal(self) -> bytes:
        if (
            self.content_encoding
            or self.priority
            or self.correlation_id
            or self.reply_to
            or (
                self.timestamp
                or self.message_type
                or self.user_id
                or self.app_id
                or self.cluster_id
            )
        ):
            return super().marshal()
        flags, parts = 0, []
        if self.content_type:
            flags |= 0x8000
            parts.append(_short(self.content_type))
        if self.headers is not None:
            flags |= 0x2000
            parts.append(encode_headers(self.headers))
        if self.delivery_mode is not None:
            flags |= 0x1000
            parts.append(bytes((self.delivery_mode,)))
        if self.expiration:
            flags |= 0x0100
            parts.append(_short(self.expiration))
        if self.message_id:
            flags |= 0x0080
            parts.append(_short(self.message_id))
        return _pack_flags(flags) + b"".join(parts)


_pack_flags = struct.Struct(">H").pack


def encode_event(event: Event, ttl: float | None) -> tuple[bytes, spec.Basic.Properties]:
    """Body and properties of the AMQP binary-mode binding, persistent."""
    text_headers, body = to_binary(event, PREFIX)
    content_type = text_headers.pop("content-type", None)
    headers: dict[str, Any] = text_headers
    headers[MESSAGE_HEADER] = _names.next()
    for name, value in event.extensions.items():
        if not isinstance(value, str):
            headers[PREFIX + name] = value
    expiration = None
    if ttl is not None:
        expiration = str(max(1, int(ttl * 1000)))
    props = _Properties(
        content_type=content_type,
        message_id=event.id,
        delivery_mode=2,
        headers=headers,
        expiration=expiration,
    )
    return body, props


def message_id(message: DeliveredMessage) -> str | None:
    props = message.header.properties
    headers = props.headers or {}
    for prefix in READ_PREFIXES:
        value = headers.get(prefix + "id")
        if value is not None:
            return _text(value)
    return props.message_id
