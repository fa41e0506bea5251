"""What the console and ``choreo saga ls`` ask a saga store: a :class:`Query` and its
:class:`Page`, the notes operators attach to instances, and the search syntax.

A search text is either a correlation-id prefix (``order-00``) or a payload field
(``data.customer=customer-10``: any event of the instance whose data has that value at that
path; numbers and booleans compare by their JSON text, ``data.amount=10``).

Every store answers a query the same way (:func:`matches` is the reference the memory store
uses, and the one the SQL stores apply after their indexed pre-filter for payload searches).
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime
from typing import Any

import msgspec

from saga_monitor.errors import SagaConfigError
from saga_monitor.model import Instance

__all__ = [
    "ACK",
    "COUNTED",
    "NOTE",
    "DataField",
    "Note",
    "Page",
    "Query",
    "StepView",
    "covers",
    "episode",
    "field_in_timeline",
    "label",
    "matches",
    "parse_search",
    "step_view",
]

ACK = "ack"
NOTE = "note"
#: Longest note, author and search text taken (longer is a usage error, not a truncation).
MAX_NOTE = 2000
MAX_WHO = 200
MAX_SEARCH = 500
#: Matches a payload search counts: beyond, its total is "10000+" (the pages stay exact).
COUNTED = 10_000
_PATH = re.compile(r"data(\.[^.=\s]+)+\Z")


@dataclasses.dataclass(frozen=True, slots=True)
class DataField:
    """A payload search: ``path`` into an event's data (``("customer",)``) equals ``value``."""

    path: tuple[str, ...]
    value: str

    def found_in(self, data: Any) -> bool:
        """Whether ``data`` holds :attr:`value` at :attr:`path`."""
        for key in self.path:
            if not isinstance(data, dict) or key not in data:
                return False
            data = data[key]
        text = data if isinstance(data, str) else json.dumps(data)
        return bool(text == self.value)


@dataclasses.dataclass(frozen=True, slots=True)
class Query:
    """Which instances to list, and which page of them (most recently updated first).

    ``awaiting``: only instances that wait for one of these event types (a step expected next
    or a compensation owed): how a service filter reaches the store.
    ``acknowledged``: True for acknowledged instances only, False for the others.
    ``counted``: False when the caller needs the page only (the board's sample) or knows the
    total (the console, from the counts it read): a store may then skip counting, and the
    page's ``total`` is only the instances up to the page's end (``more`` while it is full).
    """

    saga: str | None = None
    state: str | None = None
    since: datetime | None = None
    correlation_prefix: str | None = None
    data: DataField | None = None
    anomaly: str | None = None
    awaiting: tuple[str, ...] | None = None
    acknowledged: bool | None = None
    limit: int = 200
    offset: int = 0
    counted: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    """One page of a query's answer and how many instances match in all (``more``: at least
    ``total`` do: a payload search stops counting at :data:`COUNTED`)."""

    items: list[Instance]
    total: int
    offset: int
    limit: int
    more: bool = False

    def total_text(self) -> str:
        """The total as people read it: ``1234``, or ``10000+`` when it is a lower bound."""
        return f"{self.total}+" if self.more else str(self.total)


@dataclasses.dataclass(frozen=True, slots=True)
class Note:
    """An operator's acknowledgement (``kind`` ``ack``) or annotation (``note``) of an
    instance: who wrote it, when, and what; and the stuck episode the instance was in
    (:func:`episode`, set by the store that keeps the note)."""

    saga: str
    correlation_id: str
    kind: str
    who: str
    at: datetime
    text: str
    #: When the instance had got stuck as the note was written (None: it was not stuck).
    episode: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        from broker.envelope import format_time

        return {
            "saga": self.saga,
            "correlation_id": self.correlation_id,
            "kind": self.kind,
            "who": self.who,
            "at": format_time(self.at),
            "note": self.text,
            "stuck_since": format_time(self.episode) if self.episode is not None else None,
        }


def episode(instance: Instance) -> datetime | None:
    """The stuck episode ``instance`` is in: when it got stuck (the deadline it missed, which
    stays the same until it moves on), or None when it is not stuck."""
    return instance.stuck_since if instance.state == "stuck" else None


def label(note: Note, instance: Instance) -> str:
    """How a note is named beside ``instance``: its kind, and for an acknowledgement that no
    longer holds (see :func:`covers`), that it was for an earlier episode."""
    if note.kind == ACK and not covers(note, instance):
        return f"{ACK} (earlier episode)"
    return note.kind


def covers(note: Note, instance: Instance) -> bool:
    """Whether ``note`` acknowledges ``instance`` as it is now: an acknowledgement holds for
    the stuck episode it was given in (or, given when the instance was not stuck, while it is
    not), so an instance that moves on and gets stuck again is unacknowledged again."""
    return note.kind == ACK and note.episode == episode(instance)


def parse_search(text: str | None) -> tuple[str | None, DataField | None]:
    """(correlation-id prefix, payload field) of a search text (see the module docstring)."""
    if text is None or not text.strip():
        return None, None
    if len(text) > MAX_SEARCH or "\x00" in text:
        raise SagaConfigError(f"a search is at most {MAX_SEARCH} characters, without NUL")
    path, sep, value = text.partition("=")
    if sep and path.strip().startswith("data."):
        path = path.strip()
        if not _PATH.match(path):
            raise SagaConfigError(
                f"search {text!r}: a payload field is data.<field>[.<field>...]=<value>"
            )
        return None, DataField(tuple(path.split(".")[1:]), value)
    return text.strip(), None


def check_note(who: str, text: str, kind: str) -> None:
    """Refuse an empty author, an over-long note, NUL characters or an unknown kind."""
    if kind not in (ACK, NOTE):
        raise SagaConfigError(f"a note is an {ACK!r} or a {NOTE!r}, not {kind!r}")
    if not who.strip() or len(who) > MAX_WHO:
        raise SagaConfigError(f"who acknowledges must be named, in at most {MAX_WHO} characters")
    if len(text) > MAX_NOTE:
        raise SagaConfigError(f"a note is at most {MAX_NOTE} characters")
    if "\x00" in who or "\x00" in text:
        raise SagaConfigError("a note must not contain a NUL character")
    try:
        (who + text).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SagaConfigError("a note must be valid Unicode text (no lone surrogates)") from exc


def awaited(instance: Instance) -> list[str]:
    """The event types an instance waits for: its next steps, then the compensations owed."""
    return [*instance.expected, *(t for t in instance.waiting if t not in instance.expected)]


def matches(instance: Instance, query: Query, acknowledged: bool = False) -> bool:
    """Whether ``instance`` answers ``query`` (``acknowledged``: whether it has an ack)."""
    checks = (
        query.saga is None or instance.saga == query.saga,
        query.state is None or instance.state == query.state,
        query.since is None or instance.updated >= query.since,
        query.correlation_prefix is None
        or instance.correlation_id.startswith(query.correlation_prefix),
        query.anomaly is None or any(a.kind == query.anomaly for a in instance.anomalies),
        query.awaiting is None or bool(set(query.awaiting) & set(awaited(instance))),
        query.acknowledged is None or query.acknowledged == acknowledged,
    )
    if not all(checks):
        return False
    field = query.data
    return field is None or any(field.found_in(e.event.data) for e in instance.timeline)


class _Entry(msgspec.Struct):
    data: Any = None


class _Timeline(msgspec.Struct):
    timeline: list[_Entry]


_timeline = msgspec.json.Decoder(_Timeline).decode


def field_in_timeline(field: DataField, document: str | bytes) -> bool:
    """Whether an event of the instance stored as ``document`` (its JSON) holds ``field``: what
    :func:`matches` checks of a payload search, read from the events' data alone."""
    return any(field.found_in(entry.data) for entry in _timeline(document).timeline)


class _Typed(msgspec.Struct):
    type: str


class StepView(msgspec.Struct):
    """What the step graphs count of an instance (``saga serve``'s ``/sagas``), decoded from
    its stored document alone: the rest of the document is skipped, not decoded (counting the
    graphs' sample of 100,000 instances decoded whole took 6-10 s of CPU)."""

    saga: str
    state: str
    expected_next: list[str] = msgspec.field(default_factory=list)
    timeline: list[_Typed] = msgspec.field(default_factory=list)


#: The :class:`StepView` of a stored instance document (JSON text).
step_view = msgspec.json.Decoder(StepView).decode


def step_view_of(instance: Instance) -> StepView:
    """The :class:`StepView` of a decoded instance (what :data:`step_view` reads of its
    document)."""
    timeline = [_Typed(entry.event.type) for entry in instance.timeline]
    return StepView(instance.saga, instance.state, list(instance.expected), timeline)
