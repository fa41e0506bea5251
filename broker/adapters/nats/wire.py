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
from broker.envelope import NATS_PREFIXES, Event, from_binary, to_binary
from broker.errors import ConfigurationError

__all__ = ["SUBJECT", "check_topic", "decode", "encode", "event_id", "message_id", "safe_name"]

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
