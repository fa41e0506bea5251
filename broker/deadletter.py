"""Dead letters: the one place that knows what a dead letter looks like and where it goes.

A dead letter is the original event, untouched, plus six extensions (DESIGN.md):

========================  ====================================================================
``dlqreason``             why: one of :data:`REASONS`
``dlqerror``              the exception type and message (at most 2,000 characters)
``dlqattempts``           handler calls made before giving up (0 when the handler never ran)
``dlqtopic``              the topic the event was on
``dlqgroup``              the group that gave up on it
``dlqtime``               when (RFC 3339)
========================  ====================================================================

It goes to the dead-letter topic named by a template (:attr:`broker.DeadLetter.topic_template`,
default :data:`DEFAULT_TEMPLATE`, ``<topic>`` plus a suffix). Everything else asks this module:
the consumer and the connectors build dead letters with :func:`dead_letter`, replay strips them
with :func:`strip`, adapters and tools name DLQ topics with :func:`dead_letter_topic` and
recognise them with :func:`is_dead_letter_topic` and :func:`origin_of`.

    >>> dead_letter_topic("orders")
    'orders.dlq'
    >>> origin_of("orders.dlq")
    'orders'
"""

from __future__ import annotations

import dataclasses
import functools
import re
import string
from datetime import UTC, datetime

from broker.envelope import Event, format_time, integer_extension

__all__ = [
    "DEFAULT_TEMPLATE",
    "EXPIRED",
    "EXTENSIONS",
    "HANDLER_ERROR",
    "MARK",
    "NOT_DEAD",
    "REASONS",
    "SCHEMA_MISMATCH",
    "UNDECODABLE",
    "UNROUTABLE",
    "DeadLetterInfo",
    "dead_letter",
    "dead_letter_topic",
    "describe",
    "info",
    "is_dead_letter",
    "is_dead_letter_topic",
    "origin_of",
    "strip",
]

#: The dead-letter topic of ``topic`` unless a policy says otherwise.
DEFAULT_TEMPLATE = "{topic}.dlq"

HANDLER_ERROR = "handler-error"
EXPIRED = "expired"
UNDECODABLE = "undecodable"
SCHEMA_MISMATCH = "schema-mismatch"
UNROUTABLE = "unroutable"
#: Every ``dlqreason`` choreograph writes.
REASONS = (HANDLER_ERROR, EXPIRED, UNDECODABLE, SCHEMA_MISMATCH, UNROUTABLE)

#: The extensions a dead letter carries on top of the original event.
EXTENSIONS = ("dlqreason", "dlqerror", "dlqattempts", "dlqtopic", "dlqgroup", "dlqtime")
#: The extension every dead letter carries (:func:`is_dead_letter` looks for it).
MARK = EXTENSIONS[0]
_MAX_ERROR = 2000
integer_extension("dlqattempts")


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """The ``dlq*`` extensions of a dead letter, read back."""

    reason: str
    error: str
    attempts: int
    topic: str
    group: str
    time: str


#: The fields of an event that is no dead letter (``info(event) or NOT_DEAD``): all empty.
NOT_DEAD = DeadLetterInfo("", "", 0, "", "", "")


def describe(error: BaseException) -> str:
    """How an exception is written into ``dlqerror``: ``Type: message``."""
    return f"{type(error).__name__}: {error}"


def dead_letter(
    event: Event,
    *,
    reason: str,
    error: str | BaseException,
    topic: str,
    group: str,
    attempts: int = 0,
    time: datetime | str | None = None,
) -> Event:
    """``event`` with the ``dlq*`` extensions: what goes to the dead-letter topic."""
    text = describe(error) if isinstance(error, BaseException) else error
    moment = time if time is not None else datetime.now(UTC)
    return event.with_extensions(
        dlqreason=reason,
        dlqerror=text[:_MAX_ERROR],
        dlqattempts=attempts,
        dlqtopic=topic,
        dlqgroup=group,
        dlqtime=moment if isinstance(moment, str) else format_time(moment),
    )


def is_dead_letter(event: Event) -> bool:
    """Whether ``event`` carries the dead-letter extensions."""
    return MARK in event.extensions


def info(event: Event) -> DeadLetterInfo | None:
    """The dead-letter extensions of ``event``, or None when it is not a dead letter."""
    extensions = event.extensions
    if "dlqreason" not in extensions:
        return None
    attempts = extensions.get("dlqattempts", 0)
    return DeadLetterInfo(
        reason=str(extensions["dlqreason"]),
        error=str(extensions.get("dlqerror", "")),
        attempts=int(attempts) if str(attempts).isdigit() else 0,
        topic=str(extensions.get("dlqtopic", "")),
        group=str(extensions.get("dlqgroup", "")),
        time=str(extensions.get("dlqtime", "")),
    )


def strip(event: Event) -> Event:
    """The original event of a dead letter, for replay: without the ``dlq*`` extensions, and
    without ``expiration`` when it was dead-lettered because that passed."""
    removed: dict[str, None] = dict.fromkeys(EXTENSIONS)
    if event.extensions.get("dlqreason") == EXPIRED:
        removed["expiration"] = None
    return event.with_extensions(**removed)


# -- topic names ----------------------------------------------------------------------------


def dead_letter_topic(topic: str, group: str = "", template: str = DEFAULT_TEMPLATE) -> str:
    """The dead-letter topic of events of ``topic`` handled by ``group``."""
    return template.format(topic=topic, group=group)


def is_dead_letter_topic(name: str, template: str = DEFAULT_TEMPLATE) -> bool:
    """Whether ``name`` is a dead-letter topic under ``template``."""
    return _pattern(template).fullmatch(name) is not None


def origin_of(dlq_topic: str, template: str = DEFAULT_TEMPLATE) -> str | None:
    """The topic whose dead letters ``dlq_topic`` holds; None when ``dlq_topic`` is not a
    dead-letter topic under ``template`` (or the template does not name the topic)."""
    match = _pattern(template).fullmatch(dlq_topic)
    if match is None or "topic" not in match.groupdict():
        return None
    return match.group("topic")


@functools.lru_cache(maxsize=64)
def _pattern(template: str) -> re.Pattern[str]:
    """A regular expression matching the names ``template`` produces."""
    parts: list[str] = []
    seen: set[str] = set()
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is None:
            continue
        if field not in ("topic", "group"):
            raise ValueError(
                f"dead-letter template {template!r} uses {{{field}}}; "
                "only {topic} and {group} are known"
            )
        parts.append(f"(?P={field})" if field in seen else f"(?P<{field}>.+?)")
        seen.add(field)
    return re.compile("".join(parts))
