"""Turn outbox rows into CloudEvents and topics, like Debezium's outbox event router.

* topic: ``route`` formatted with the row (default ``outbox.event.{aggregatetype}``; fields
  ``aggregatetype``, ``aggregateid``, ``type``), or looked up in ``routes`` by aggregatetype;
* CloudEvent ``id`` = row ``id``, ``type`` = row ``type``, ``partitionkey`` = ``aggregateid``
  (the Kafka message key), ``time`` = ``created_at``, ``source`` configurable;
* ``headers`` (a JSON object) -> extensions, for names that are valid extension names; a
  ``deliverat`` header (RFC 3339 with a zone) is the event's delivery time, in UTC;
* ``correlationid`` from a header (``correlation_header``) or a payload field
  (``correlation_field``, a dotted path).

A row that cannot become an event (a payload that is not JSON where JSON is required, headers
that are not a JSON object, a route that cannot be formatted) becomes a dead letter on
``dlq_topic`` with ``dlqreason``/``dlqerror``: it is published there and the stream goes on.
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from broker import deadletter
from broker.delay import DELIVER_AT
from broker.envelope import Event, format_time
from broker.names import TOPIC_RULE, is_portable_topic
from connectors.errors import OutboxConfigError, RoutingError

__all__ = ["DEFAULT_DLQ_TOPIC", "DEFAULT_ROUTE", "OutboxRow", "Routed", "Router"]

DEFAULT_ROUTE = "outbox.event.{aggregatetype}"
DEFAULT_DLQ_TOPIC = deadletter.dead_letter_topic("outbox")
DLQ_GROUP = "outbox-relay"

PayloadFormat = Literal["json", "text", "bytes"]

_EXTENSION = re.compile(r"[a-z0-9]{1,40}\Z")
_RESERVED = frozenset(
    ("id", "source", "type", "specversion", "time", "subject", "datacontenttype", "dataschema")
)
_RESERVED_EXTENSIONS = frozenset(("partitionkey", "expiration", "data"))
_ROUTE_FIELDS = frozenset(("aggregatetype", "aggregateid", "type"))
_CONTENT_TYPES = {
    "json": "application/json",
    "text": "text/plain",
    "bytes": "application/octet-stream",
}


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxRow:
    """One committed outbox row as a relay read it (values as the database gave them)."""

    id: str
    aggregatetype: str
    aggregateid: str
    type: str
    payload: Any = None
    headers: Any = None
    created_at: datetime | None = None
    unreadable: str | None = None
    """Why the source could not read the row's values (it is dead-lettered as ``undecodable``
    with the raw ``payload`` the source had, e.g. the SQL of a statement-format binlog entry)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Routed:
    """Where a row goes: its topic and event; ``dead`` when it is a dead letter."""

    topic: str
    event: Event
    dead: bool = False


class Router:
    """Maps outbox rows to (topic, CloudEvent); rows that cannot be mapped to the DLQ."""

    def __init__(
        self,
        *,
        route: str = DEFAULT_ROUTE,
        routes: Mapping[str, str] | None = None,
        source: str = "choreo-outbox",
        dlq_topic: str = DEFAULT_DLQ_TOPIC,
        payload_format: PayloadFormat = "json",
        correlation_header: str | None = "correlationid",
        correlation_field: str | None = None,
    ) -> None:
        _check_template(route)
        if payload_format not in _CONTENT_TYPES:
            raise OutboxConfigError(f"payload format {payload_format!r} is not json, text or bytes")
        self.route = route
        self.routes = dict(routes) if routes is not None else None
        self.source = source
        self.dlq_topic = dlq_topic
        self.payload_format = payload_format
        self.correlation_header = correlation_header
        self.correlation_field = correlation_field.split(".") if correlation_field else None

    def route_row(self, row: OutboxRow) -> Routed:
        """The topic and event for ``row``, or a dead letter for the DLQ topic."""
        topic: str | None = None
        try:
            if row.unreadable:
                raise RoutingError(row.unreadable)
            topic = self.topic_for(row)
            return Routed(topic, self.event_for(row))
        except RoutingError as exc:
            return Routed(self.dlq_topic, self.dead_letter(row, exc.reason, exc, topic), dead=True)

    def topic_for(self, row: OutboxRow) -> str:
        """The topic ``row`` is published to; :class:`RoutingError` when there is none."""
        if self.routes is not None:
            topic = self.routes.get(row.aggregatetype)
            if topic is None:
                raise RoutingError(
                    f"no route for aggregatetype {row.aggregatetype!r}",
                    reason=deadletter.UNROUTABLE,
                )
        else:
            fields = {"aggregatetype": row.aggregatetype, "aggregateid": row.aggregateid}
            topic = self.route.format(**fields, type=row.type)
        if not is_portable_topic(topic):
            raise RoutingError(
                f"route {self.route!r} gives {topic!r} for aggregatetype {row.aggregatetype!r}, "
                f"which is not a valid topic name ({TOPIC_RULE})",
                reason=deadletter.UNROUTABLE,
            )
        return topic

    def event_for(self, row: OutboxRow) -> Event:
        """The CloudEvent for ``row``."""
        if not row.type:
            raise RoutingError(f"outbox row {row.id} has an empty type")
        data = self._data(row)
        extensions = self._extensions(row, data)
        return Event(
            type=row.type,
            source=self.source,
            id=row.id,
            data=data,
            time=row.created_at or datetime.now(UTC),
            datacontenttype=_CONTENT_TYPES[self.payload_format],
            extensions=extensions,
        )

    def dead_letter(
        self, row: OutboxRow, reason: str, error: Exception, topic: str | None
    ) -> Event:
        """The DLQ event for a row that could not be routed: raw payload plus ``dlq*``."""
        payload = row.payload
        if isinstance(payload, memoryview | bytearray):
            payload = bytes(payload)
        if payload is not None and not isinstance(payload, str | bytes):
            payload = json.dumps(payload, default=str)
        extensions: dict[str, str | int | bool] = {}
        if row.aggregateid:
            extensions["partitionkey"] = str(row.aggregateid)
        binary = isinstance(payload, bytes)
        event = Event(
            type=row.type or "outbox.invalid",
            source=self.source,
            id=row.id,
            data=payload,
            time=row.created_at or datetime.now(UTC),
            datacontenttype="application/octet-stream" if binary else "text/plain",
            extensions=extensions,
        )
        return deadletter.dead_letter(
            event, reason=reason, error=error, topic=topic or self.route, group=DLQ_GROUP
        )

    # -- pieces --------------------------------------------------------------------------------

    def _data(self, row: OutboxRow) -> Any:
        payload = row.payload
        if isinstance(payload, memoryview | bytearray):
            payload = bytes(payload)
        if self.payload_format == "bytes":
            return payload.encode() if isinstance(payload, str) else payload
        if self.payload_format == "text":
            return payload.decode(errors="replace") if isinstance(payload, bytes) else payload
        if isinstance(payload, bytes | str):
            try:
                return json.loads(payload)
            except ValueError as exc:  # includes UnicodeDecodeError
                raise RoutingError(f"payload of outbox row {row.id} is not JSON: {exc}") from exc
        return payload

    def _extensions(self, row: OutboxRow, data: Any) -> dict[str, str | int | bool]:
        headers = _headers(row)
        extensions: dict[str, str | int | bool] = {}
        for name, value in headers.items():
            key = name.lower()
            if _EXTENSION.match(key) and key not in _RESERVED and key not in _RESERVED_EXTENSIONS:
                extensions[key] = _extension_value(value)
        if DELIVER_AT in extensions:
            extensions[DELIVER_AT] = _delivery_time(row, extensions[DELIVER_AT])
        correlation = None
        if self.correlation_header:
            correlation = headers.get(self.correlation_header)
        if correlation is None and self.correlation_field and isinstance(data, Mapping):
            correlation = _lookup(data, self.correlation_field)
        if correlation is not None:
            extensions["correlationid"] = str(correlation)
        extensions["partitionkey"] = str(row.aggregateid)
        return extensions


def _headers(row: OutboxRow) -> Mapping[str, Any]:
    raw = row.headers
    if raw is None or raw in ("", b""):
        return {}
    if isinstance(raw, bytes | str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise RoutingError(f"headers of outbox row {row.id} are not JSON: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise RoutingError(f"headers of outbox row {row.id} are not a JSON object")
    return raw


def _delivery_time(row: OutboxRow, value: object) -> str:
    """A row's ``deliverat`` header as RFC 3339 in UTC; RoutingError when it is not a time
    with a zone (the row is dead-lettered rather than delivered at the wrong time)."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        raise RoutingError(
            f"the deliverat header of outbox row {row.id} is {value!r}, not an RFC 3339 time "
            "with a zone (e.g. 2026-12-01T09:00:00Z)"
        )
    return format_time(moment.astimezone(UTC))


def _extension_value(value: Any) -> str | int | bool:
    if isinstance(value, bool | int | str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


def _lookup(data: Mapping[str, Any], path: list[str]) -> Any:
    current: Any = data
    for part in path:
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def _check_template(route: str) -> None:
    try:
        fields = [(name, spec) for _, name, spec, _ in string.Formatter().parse(route)]
    except ValueError as exc:
        raise OutboxConfigError(f"route template {route!r} is invalid: {exc}") from exc
    names = {name for name, _ in fields if name is not None}
    if any(re.search(r"\d{4}", spec or "") for _, spec in fields):  # before formatting it
        raise OutboxConfigError(f"route template {route!r} pads beyond a topic's 249 characters")
    unknown = names - _ROUTE_FIELDS
    if unknown:
        raise OutboxConfigError(
            f"route template {route!r} uses {', '.join(sorted(unknown))}; the fields are "
            "{aggregatetype}, {aggregateid} and {type}"
        )
    try:  # a format spec or conversion that no text takes (e.g. {aggregatetype:d})
        route.format(**dict.fromkeys(_ROUTE_FIELDS, "x"))
    except (ValueError, TypeError) as exc:
        raise OutboxConfigError(f"route template {route!r} is invalid: {exc}") from exc
