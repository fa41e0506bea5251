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
recognise them with :func:`is_dead_letter_topic` and :func:`origin_of`. Operators choose dead
letters with a :class:`DeadLetterSelection` (type, reason text, source, time, group) and triage
them with :func:`groups` (by reason, exception type and event type unless told otherwise).

These are the rules, with no I/O; :mod:`broker.deadletter_ops` applies them to a broker
(listing, grouping, replay and purge through an adapter), and the :class:`broker.Bus` methods
delegate to it.

    >>> dead_letter_topic("orders")
    'orders.dlq'
    >>> origin_of("orders.dlq")
    'orders'
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import string
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime

from broker.envelope import Event, format_time, integer_extension, parse_time
from broker.errors import ConfigurationError, TopicNotFoundError

__all__ = [
    "DEFAULT_GROUPING",
    "DEFAULT_TEMPLATE",
    "EXPIRED",
    "EXTENSIONS",
    "GROUP_KEYS",
    "HANDLER_ERROR",
    "MARK",
    "NOT_DEAD",
    "REASONS",
    "SCHEMA_MISMATCH",
    "UNDECODABLE",
    "UNROUTABLE",
    "DeadLetterGroup",
    "DeadLetterInfo",
    "DeadLetterSelection",
    "choose",
    "dead_letter",
    "dead_letter_topic",
    "dead_time",
    "describe",
    "error_type",
    "group_id",
    "group_value",
    "groups",
    "info",
    "is_dead_letter",
    "is_dead_letter_topic",
    "origin_of",
    "require_ids",
    "select",
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


# -- choosing and grouping dead letters -----------------------------------------------------

#: What :func:`groups` can group dead letters by: ``reason`` (``dlqreason``), ``error`` (the
#: exception type in ``dlqerror``), ``type`` and ``source`` (the event's), ``topic`` and
#: ``group`` (``dlqtopic``, ``dlqgroup``).
GROUP_KEYS = ("reason", "error", "type", "source", "topic", "group")
#: The default grouping: by failure (reason and exception type) and event type, as operators
#: triage them.
DEFAULT_GROUPING = ("reason", "error", "type")


def error_type(error: str) -> str:
    """The exception type a ``dlqerror`` names (``RuntimeError`` of ``RuntimeError: boom``);
    the whole text when it names none."""
    head, colon, _ = error.partition(":")
    return head if colon and head.isidentifier() else error


def group_value(event: Event, key: str) -> str:
    """``event``'s value for the grouping ``key`` (one of :data:`GROUP_KEYS`)."""
    dead = info(event) or NOT_DEAD
    values = {
        "reason": lambda: dead.reason,
        "error": lambda: error_type(dead.error),
        "type": lambda: event.type,
        "source": lambda: event.source,
        "topic": lambda: dead.topic,
        "group": lambda: dead.group,
    }
    if key not in values:
        raise ValueError(f"cannot group dead letters by {key!r}; use {', '.join(GROUP_KEYS)}")
    return values[key]()


def group_id(event: Event, by: Sequence[str] = DEFAULT_GROUPING) -> str:
    """The id of the group ``event`` falls in under ``by``: the same for the same values,
    whatever the broker or the order of the dead letters (10 hex digits)."""
    key = json.dumps([[name, group_value(event, name)] for name in by])
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def dead_time(event: Event) -> datetime | None:
    """When ``event`` was dead-lettered (its ``dlqtime``), or None when it does not say."""
    try:
        return parse_time(str(event.extensions["dlqtime"]))
    except (KeyError, ValueError):
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetterSelection:
    """Which dead letters a listing, replay or purge takes: those that meet every condition
    given (none given: all of them).

    ``type`` and ``source`` are the event's, exactly; ``reason`` is text found in its
    ``dlqreason`` or ``dlqerror``; ``since`` and ``before`` bound its ``dlqtime`` (since is
    inclusive; a dead letter without a readable ``dlqtime`` meets neither); ``group`` is a
    group id from :func:`groups` under the grouping ``by``."""

    type: str | None = None
    reason: str | None = None
    source: str | None = None
    since: datetime | None = None
    before: datetime | None = None
    group: str | None = None
    by: tuple[str, ...] = DEFAULT_GROUPING

    def __post_init__(self) -> None:
        for moment, name in ((self.since, "since"), (self.before, "before")):
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"{name} must be an aware datetime (with a zone)")
        for key in self.by:
            if key not in GROUP_KEYS:
                raise ValueError(
                    f"cannot group dead letters by {key!r}; use {', '.join(GROUP_KEYS)}"
                )

    @property
    def everything(self) -> bool:
        """Whether no condition is given (every dead letter is taken)."""
        return all(
            value is None
            for value in (self.type, self.reason, self.source, self.since, self.before, self.group)
        )

    def matches(self, event: Event) -> bool:
        """Whether ``event`` meets every condition."""
        dead = info(event) or NOT_DEAD
        return (
            (self.type is None or event.type == self.type)
            and (self.source is None or event.source == self.source)
            and (self.reason is None or self.reason in dead.reason or self.reason in dead.error)
            and self._in_time(event)
            and (self.group is None or group_id(event, self.by) == self.group)
        )

    def _in_time(self, event: Event) -> bool:
        if self.since is None and self.before is None:
            return True
        moment = dead_time(event)
        return (
            moment is not None
            and (self.since is None or moment >= self.since)
            and (self.before is None or moment < self.before)
        )

    def describe(self) -> str:
        """The conditions in words, for messages (``type=job.created, reason~'fire'``)."""
        given = [
            f"type={self.type}" if self.type is not None else "",
            f"reason~{self.reason!r}" if self.reason is not None else "",
            f"source={self.source}" if self.source is not None else "",
            f"since {format_time(self.since)}" if self.since is not None else "",
            f"before {format_time(self.before)}" if self.before is not None else "",
            f"group {self.group}" if self.group is not None else "",
        ]
        return ", ".join(part for part in given if part) or "everything"


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetterGroup:
    """Dead letters that share the values of a grouping (:func:`groups`)."""

    #: Stable id, for :attr:`DeadLetterSelection.group` (``choreo dlq replay --group``).
    id: str
    #: The grouping's keys and this group's values, in the grouping's order.
    key: tuple[tuple[str, str], ...]
    count: int
    #: The earliest and the latest ``dlqtime`` (empty when none says).
    first: str
    last: str
    #: The id of one dead letter of the group (the oldest), for ``choreo dlq show``.
    example: str


def groups(events: Iterable[Event], by: Sequence[str] = DEFAULT_GROUPING) -> list[DeadLetterGroup]:
    """``events`` grouped by the values of ``by``: the largest group first (then by id)."""
    members: dict[str, list[Event]] = {}
    for event in events:
        members.setdefault(group_id(event, by), []).append(event)
    found = [_group(gid, entries, by) for gid, entries in members.items()]
    return sorted(found, key=lambda g: (-g.count, g.id))


def _group(gid: str, entries: list[Event], by: Sequence[str]) -> DeadLetterGroup:
    timed = sorted((t, e.id) for e in entries if (t := dead_time(e)) is not None)
    return DeadLetterGroup(
        id=gid,
        key=tuple((name, group_value(entries[0], name)) for name in by),
        count=len(entries),
        first=format_time(timed[0][0]) if timed else "",
        last=format_time(timed[-1][0]) if timed else "",
        example=timed[0][1] if timed else entries[0].id,
    )


def require_ids(dlq_topic: str, ids: Collection[str], present: Sequence[Event]) -> None:
    """Raise when some of ``ids`` are not among the dead letters ``present``."""
    missing = set(ids) - {event.id for event in present}
    if missing:
        raise TopicNotFoundError(f"no event with id {', '.join(sorted(missing))} in {dlq_topic}")


def choose(
    dlq_topic: str,
    entries: list[Event],
    ids: Collection[str] | None,
    where: DeadLetterSelection | None,
) -> list[Event]:
    """The dead letters among ``entries`` that ``ids`` and ``where`` choose; raise (nothing
    done) when a named id or group is not there, when an id is left out by ``where``, or
    when deleting the chosen by id would delete others too."""
    if ids is not None:
        require_ids(dlq_topic, ids, entries)
    chosen = [e for e in entries if ids is None or e.id in ids]
    if where is None:
        return chosen
    chosen = select(dlq_topic, chosen, where, among=entries)
    unmatched = set(ids or ()) - {e.id for e in chosen}
    if unmatched:
        raise TopicNotFoundError(
            f"event {', '.join(sorted(unmatched))} in {dlq_topic} does not match {where.describe()}"
        )
    _require_own_ids(dlq_topic, entries, chosen)
    return chosen


def select(
    dlq_topic: str,
    entries: Sequence[Event],
    where: DeadLetterSelection,
    *,
    among: Sequence[Event] | None = None,
) -> list[Event]:
    """The ``entries`` that ``where`` selects; raise when it names a group that none of the
    dead letters of ``dlq_topic`` (``among``, else ``entries``) is in."""
    _require_group(dlq_topic, where, entries if among is None else among)
    return [entry for entry in entries if where.matches(entry)]


def _require_group(dlq_topic: str, where: DeadLetterSelection, present: Sequence[Event]) -> None:
    """Raise when ``where`` names a group that none of the dead letters ``present`` is in."""
    if where.group is None:
        return
    if not any(group_id(event, where.by) == where.group for event in present):
        raise TopicNotFoundError(
            f"no group {where.group} in {dlq_topic} (grouped by {','.join(where.by)})"
        )


def _require_own_ids(dlq_topic: str, entries: Sequence[Event], chosen: Sequence[Event]) -> None:
    """Raise when a chosen dead letter shares its id with one that is not chosen (the same
    event dead-lettered by two groups): a delete by id would take both."""
    chosen_ids = {id(event) for event in chosen}
    shared = {e.id for e in entries if id(e) not in chosen_ids} & {e.id for e in chosen}
    if shared:
        raise ConfigurationError(
            f"dead letters {', '.join(sorted(shared))} in {dlq_topic} share their id with "
            "dead letters the selection leaves out (the same event dead-lettered twice), and a "
            "delete by id would take both; choose them with --id alone, or narrow the filters"
        )
