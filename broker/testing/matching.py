"""Which captured events a test means, and how to show them when the assertion fails."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from broker import deadletter
from broker.envelope import Event

__all__ = ["Match", "describe_events"]

#: Events listed in a failure message (the newest ones when there are more).
_SHOWN = 20
_UNSET: Any = object()


@dataclasses.dataclass(frozen=True, slots=True)
class Match:
    """Criteria on an event; each one given must hold (``data`` compares equal; ``where`` is
    any predicate)."""

    type: str | None = None
    source: str | None = None
    subject: str | None = None
    correlation_id: str | None = None
    key: str | None = None
    data: Any = _UNSET
    where: Callable[[Event], bool] | None = None

    @classmethod
    def of(cls, criteria: dict[str, Any]) -> Match:
        """The match for keyword criteria; TypeError naming the known ones otherwise."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(criteria) - known)
        if unknown:
            raise TypeError(
                f"unknown event criteria {', '.join(unknown)}; use {', '.join(sorted(known))}"
            )
        return cls(**criteria)

    def __call__(self, event: Event) -> bool:
        return (
            (self.type is None or event.type == self.type)
            and (self.source is None or event.source == self.source)
            and (self.subject is None or event.subject == self.subject)
            and (self.correlation_id is None or event.correlationid == self.correlation_id)
            and (self.key is None or event.partitionkey == self.key)
            and (self.data is _UNSET or event.data == self.data)
            and (self.where is None or bool(self.where(event)))
        )

    def describe(self) -> str:
        """``type='order.placed', data={'id': 1}``, or ``any attributes``."""
        parts = [
            f"{field.name}={getattr(self, field.name)!r}"
            for field in dataclasses.fields(self)
            if field.name != "where" and getattr(self, field.name) not in (None, _UNSET)
        ]
        if self.where is not None:
            parts.append(f"where={getattr(self.where, '__name__', 'predicate')}")
        return ", ".join(parts) or "any attributes"


def _short(value: Any, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def describe_events(events: Sequence[Event]) -> str:
    """One line per event (type, correlation, key, data), numbered in publish order."""
    start = max(0, len(events) - _SHOWN)
    lines = [] if not start else [f"  ... {start} earlier event(s)"]
    for number, event in enumerate(events[start:], start + 1):
        dead = deadletter.info(event)
        extras = "".join(
            f" {name}={value!r}"
            for name, value in (
                ("correlationid", event.correlationid),
                ("key", event.partitionkey),
                ("dead-lettered", f"{dead.reason}: {dead.error}" if dead else None),
            )
            if value is not None
        )
        lines.append(
            f"  {number}. {event.type} from {event.source}{extras} data={_short(event.data)}"
        )
    return "\n".join(lines)
