"""Times and JSON text as the records' documents write them, and the monitor's wall clock.

Times are RFC 3339 text (``format_time``'s, cached: an instance's times are written again on
every event) or, where msgspec writes the document, aware UTC datetimes it writes as the same
text. A document msgspec refuses is written by the standard library instead.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

from broker.envelope import format_time, parse_time
from broker.jsontext import dumps_text


@functools.lru_cache(maxsize=65_536)
def _iso(value: datetime) -> str:
    return format_time(value)


def _time(value: datetime | None) -> str | None:
    """RFC 3339 text; cached, since an instance's times are written again on every event."""
    return _iso(value) if value is not None else None


def _stamp(value: datetime | None) -> datetime | str | None:
    """A time for msgspec to write: itself in UTC (msgspec writes format_time's text), else
    format_time's text."""
    return value if value is None or value.tzinfo is UTC else _iso(value)


def _dumps(document: dict[str, Any]) -> str:
    """Compact JSON text of a document (msgspec; the standard library for what it refuses)."""
    try:
        return dumps_text(document)
    except (TypeError, ValueError, OverflowError):
        return json.dumps(document, default=str, separators=(",", ":"))


def _parse(value: str | None) -> datetime | None:
    return parse_time(value) if value else None


def utcnow() -> datetime:
    """The wall clock, as the default clock of the monitor (never called by the machine)."""
    return datetime.now(UTC)
