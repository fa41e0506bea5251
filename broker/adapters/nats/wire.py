"""NATS names and the CloudEvents NATS binding (binary content mode).

Headers ``ce-<attr>``, ``content-type``, the data as the payload, and ``Nats-Msg-Id`` for the
server's de-duplication window: the event id, or for a dead letter the id with its group and
time, so the same event dead-lettered by two groups (or twice) is kept each time, and for a
retry copy (:mod:`broker.deferral`) the id with its group and attempt. Stream and
consumer names are the topic or group when it is safe, else a sanitised name plus a digest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from broker import deadletter
from broker.deferral import RETRY_ATTEMPT, RETRY_GROUP
from broker.envelope import (
    JSON_CONTENT_TYPE,
    NATS_PREFIXES,
    Event,
    format_time,
    from_binary,
    to_binary,
)
from broker.errors import ConfigurationError
from broker.jsontext import dumps

__all__ = [
    "SUBJECT",
    "check_topic",
    "decode",
    "encode",
    "encode_block",
    "event_id",
    "message_id",
    "safe_name",
]

SUBJECT = re.compile(r"[^.\s*>]+(?:\.[^.\s*>]+)*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_PREFIX = NATS_PREFIXES[0]


def safe_name(text: str) -> str:
    """A stream or consumer name for ``text``: unchanged when it is safe, else sanitised plus a
    digest of the original (so ``a.b`` and ``a_b`` never share a stream)."""
    cleaned = _UNSAFE.sub("_", text)
    if cleaned == text and len(text) <= 200:
        return text
    return f"{cleaned[:200]}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def check_topic(topic: str) -> None:
    """Refuse a topic that is not a literal NATS subject."""
    if not SUBJECT.fullmatch(topic):
        raise ConfigurationError(
            f"topic {topic!r} is not a valid NATS subject: use tokens of letters, digits, '-' "
            "or '_' separated by single dots, without spaces or wildcards"
        )


def message_id(event: Event) -> str:
    """The ``Nats-Msg-Id`` of ``event``: its id, plus group and time for a dead letter, plus
    group and attempt for a retry copy (so the copy is not taken for the original)."""
    extensions = event.extensions
    if RETRY_GROUP in extensions:
        return f"{event.id}:retry:{extensions[RETRY_GROUP]}:{extensions.get(RETRY_ATTEMPT)}"
    dead = deadletter.info(event)
    if dead is None:
        return event.id
    return f"{event.id}:{dead.group}:{dead.time}"


def encode(event: Event) -> tuple[dict[str, str], bytes]:
    """Headers (with ``Nats-Msg-Id``) and payload of ``event``."""
    headers, body = to_binary(event, _PREFIX)
    headers["Nats-Msg-Id"] = message_id(event)
    return headers, body


#: The attributes a list's events usually share (one ``publish_many`` call stamps them alike),
#: by identity, and their header lines: written once for the list, not once per event.
_SHARED: list[object] = [None] * 8
#: Data types a JSON event's data is encoded from directly (``Event.data_bytes`` does more).
_JSON_VALUES = frozenset((str, dict, list, int, float, bool))


def _clean(text: str, lines: int) -> bool:
    """Whether ``lines`` header lines in ``text`` are as nats-py would write them (no line
    break inside a value, no edge whitespace, no empty value, no tab)."""
    return (
        text.count("\n") == lines
        and text.count("\r") == lines
        and ":  " not in text
        and " \r" not in text
        and "\t" not in text
    )


def _shared_lines(event: Event) -> str | None:
    """The header lines of ``event``'s spec version, source, type, time, subject, data schema
    and content type (None when one needs nats-py's cleaning), kept for the next event with
    the same values."""
    shared = _SHARED
    if (
        event.time is shared[3]
        and event.source is shared[1]
        and event.type is shared[2]
        and event.specversion is shared[0]
        and event.subject is shared[4]
        and event.dataschema is shared[5]
        and event.datacontenttype is shared[6]
    ):
        return shared[7]  # type: ignore[return-value]
    values = [
        ("ce-specversion", event.specversion),
        ("ce-source", event.source),
        ("ce-type", event.type),
        ("ce-time", None if event.time is None else format_time(event.time)),
        ("ce-subject", event.subject),
        ("ce-dataschema", event.dataschema),
        ("content-type", event.datacontenttype),
    ]
    present = [(name, value) for name, value in values if value is not None]
    text: str | None = "".join([f"{name}: {value}\r\n" for name, value in present])
    if not _clean(text, len(present)):  # type: ignore[arg-type]
        text = None
    shared[:] = (
        event.specversion,
        event.source,
        event.type,
        event.time,
        event.subject,
        event.dataschema,
        event.datacontenttype,
        text,
    )
    return text


def encode_block(event: Event, extra: str = "") -> tuple[bytes, bytes] | None:
    """The NATS header block and payload of ``event`` as :func:`encode` gives them (with
    ``Nats-Msg-Id``) and ``Client.publish`` would write them, the header lines ``extra``
    (each ending in CRLF, as clean) added; None when a value needs nats-py's cleaning (then
    :func:`encode` and ``Client.publish``). The attributes shared with the previous event are
    written once (``publish_many`` stamps a list alike), so they come first and ``ce-id``
    after them: header order carries no meaning in NATS."""
    shared = _shared_lines(event)
    if shared is None:
        return None
    extensions = event.extensions
    ident = event.id
    if len(extensions) == 1:  # what publish_many stamps: a new trace, no other extension
        trace = extensions.get("traceparent")
        if (
            trace.__class__ is str
            and trace
            and ident
            and trace.isprintable()  # no line break, tab or control character to clean
            and ident.isprintable()
            and trace.strip() == trace
            and ident.strip() == ident
        ):  # the lines below as the loop writes them, without _clean's five scans
            data = event.data
            if event.datacontenttype == JSON_CONTENT_TYPE and data.__class__ in _JSON_VALUES:
                body: bytes = dumps(data)
            else:
                body = event.data_bytes()
            return (
                f"NATS/1.0\r\n{shared}ce-id: {ident}\r\nce-traceparent: {trace}\r\n"
                f"Nats-Msg-Id: {ident}\r\n{extra}\r\n"
            ).encode(), body
    # a plain event's Nats-Msg-Id is its id (message_id looks further for the others)
    plain = RETRY_GROUP not in extensions and deadletter.MARK not in extensions
    msg_id = event.id if plain else message_id(event)
    if extensions:
        own = [f"ce-id: {event.id}\r\n"]
        for name, value in extensions.items():
            text = value if value.__class__ is str else _text(value)
            own.append(f"ce-{name}: {text}\r\n")
        own.append(f"Nats-Msg-Id: {msg_id}\r\n")
        lines = "".join(own)
        count = len(own)
    else:
        lines = f"ce-id: {event.id}\r\nNats-Msg-Id: {msg_id}\r\n"
        count = 2
    if not _clean(lines, count):
        return None
    data, content_type = event.data, event.datacontenttype
    if content_type == JSON_CONTENT_TYPE and data is not None and data.__class__ in _JSON_VALUES:
        body = dumps(data)  # what data_bytes() gives, without its checks
    else:
        body = event.data_bytes()
    return f"NATS/1.0\r\n{shared}{lines}{extra}\r\n".encode(), body


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def decode(headers: Mapping[str, str], body: bytes) -> Event:
    """The event in a message (raises EnvelopeError)."""
    return from_binary(headers, body, NATS_PREFIXES)


def event_id(headers: Mapping[str, str]) -> str | None:
    """The CloudEvent id in a message's headers, without decoding the rest."""
    for prefix in NATS_PREFIXES:
        value = headers.get(f"{prefix}id")
        if value is not None:
            return value
    return None
