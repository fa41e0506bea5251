"""Who owes what: the service that owes each awaited event, and a board per service.

A step's owner is the ``service:`` its definition names; otherwise it is learned from the
``source`` of the events of that type seen so far (the most frequent one). A compensation is
owed by its step's service, or learned the same way.

The board lists, per service (those with stuck instances first): the instances waiting on it
(and how many of them are stuck), the oldest wait, and its step latency (from the previous step
to its event) over the recent ``window`` (p50, p99) against its own baseline (the same
service's latency before that window).
It is read from the store, over the active instances and a sample of the most recent ones.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from saga_monitor.definitions import Definitions
from saga_monitor.model import ACTIVE, Instance
from saga_monitor.queries import Query, awaited, covers
from saga_monitor.store import SagaStore

__all__ = ["UNKNOWN", "Owners", "ServiceRow", "build_board", "learn_owners", "waiting_since"]

#: The owner of an event type nobody names and nobody has published yet.
UNKNOWN = "(unknown)"
#: Instances read to learn owners and latencies (the most recently updated ones).
SAMPLE = 5000
_PROGRESS = frozenset(("step", "complete"))
_MARKS = frozenset(("start", "step", "complete"))


class Owners:
    """Event type -> owning service: named in the definitions, else learned from sources."""

    def __init__(self, named: dict[str, str], seen: dict[str, Counter[str]]) -> None:
        self.named = named
        self.seen = seen

    def of(self, event_type: str) -> str:
        """The service that owes ``event_type`` (:data:`UNKNOWN` when nothing tells)."""
        if event_type in self.named:
            return self.named[event_type]
        sources = self.seen.get(event_type)
        return sources.most_common(1)[0][0] if sources else UNKNOWN

    def types_of(self, service: str, among: set[str]) -> tuple[str, ...]:
        """The event types (of ``among``, and those named or seen) ``service`` owes."""
        every = among | set(self.named) | set(self.seen)
        return tuple(sorted(t for t in every if self.of(t) == service))

    def services(self, among: set[str]) -> list[str]:
        """Every service that owes one of ``among`` or a named or seen type."""
        every = among | set(self.named) | set(self.seen)
        return sorted({self.of(t) for t in every})


def learn_owners(definitions: Definitions | None, instances: list[Instance]) -> Owners:
    """The owners the definitions name, and those the instances' timelines show."""
    named: dict[str, str] = {}
    for saga in definitions.sagas if definitions is not None else ():
        named.update(saga.services())
    seen: dict[str, Counter[str]] = {}
    for instance in instances:
        for entry in instance.timeline:
            if not entry.duplicate:
                seen.setdefault(entry.event.type, Counter())[entry.event.source] += 1
    return Owners(named, seen)


def sample(store: SagaStore, limit: int = SAMPLE) -> list[Instance]:
    """The active instances and the most recently updated ones (without repeats)."""
    return list(sampled(store, limit, limit))


def sampled(store: SagaStore, limit: int, page: int) -> Iterator[Instance]:
    """:func:`sample`'s instances (up to ``limit`` of each state), read ``page`` at a time:
    a caller that counts them does not hold them all (paged by offset, an instance updated
    meanwhile may be met twice, given once, or not at all)."""
    chosen: set[tuple[str, str]] = set()
    for state in (*sorted(ACTIVE), "stuck", None):
        for offset in range(0, limit, page):
            size = min(page, limit - offset)
            found = store.search(Query(state=state, limit=size, offset=offset, counted=False))
            for item in found.items:
                if (key := (item.saga, item.correlation_id)) not in chosen:
                    chosen.add(key)
                    yield item
            if len(found.items) < size:
                break


def waiting_since(instance: Instance) -> datetime:
    """Since when an active instance waits: its failure while compensating, else its last
    step (or its start)."""
    if instance.phase == "compensating" and instance.failed_at is not None:
        return instance.failed_at
    return instance.progress_at or instance.started


@dataclasses.dataclass(slots=True)
class ServiceRow:
    """One service on the board."""

    service: str
    awaited: list[str] = dataclasses.field(default_factory=list)
    waiting: int = 0
    stuck: int = 0
    oldest_wait: float | None = None
    oldest: str | None = None
    recent: list[float] = dataclasses.field(default_factory=list)
    baseline: list[float] = dataclasses.field(default_factory=list)

    @property
    def slower(self) -> bool:
        """Whether its recent p99 is more than twice its baseline's (with enough of both)."""
        recent, base = percentile(self.recent, 99), percentile(self.baseline, 99)
        enough = len(self.recent) >= 5 and len(self.baseline) >= 5
        return bool(enough and recent is not None and base and recent > 2 * base)

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "awaited": list(self.awaited),
            "waiting": self.waiting,
            "stuck": self.stuck,
            "oldest_wait_seconds": self.oldest_wait,
            "oldest": self.oldest,
            "latency": {
                "p50": percentile(self.recent, 50),
                "p99": percentile(self.recent, 99),
                "samples": len(self.recent),
            },
            "baseline": {
                "p50": percentile(self.baseline, 50),
                "p99": percentile(self.baseline, 99),
                "samples": len(self.baseline),
            },
            "slower_than_baseline": self.slower,
        }


def percentile(values: list[float], pct: float) -> float | None:
    """The nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def step_latencies(instance: Instance) -> list[tuple[str, datetime, float]]:
    """(event type, when, seconds since the previous step or the start) of each step done."""
    marks = sorted(
        (e for e in instance.timeline if e.role in _MARKS and not e.duplicate),
        key=lambda e: e.event.time,
    )
    out: list[tuple[str, datetime, float]] = []
    previous: datetime | None = None
    for entry in marks:
        moment = entry.event.time
        if entry.role in _PROGRESS and previous is not None:
            out.append((entry.event.type, moment, max(0.0, (moment - previous).total_seconds())))
        previous = moment
    return out


def build_board(
    store: SagaStore,
    definitions: Definitions | None,
    now: datetime,
    *,
    window: float = 900.0,
    instances: list[Instance] | None = None,
) -> tuple[list[ServiceRow], Owners]:
    """The board (most stuck first, then most waiting, then the oldest wait) and the owners
    it used."""
    found = instances if instances is not None else sample(store)
    owners = learn_owners(definitions, found)
    rows: dict[str, ServiceRow] = {}

    def row(service: str) -> ServiceRow:
        return rows.setdefault(service, ServiceRow(service))

    for instance in found:
        if instance.phase in ACTIVE:
            _count_wait(instance, owners, row, now)
        for event_type, moment, seconds in step_latencies(instance):
            target = row(owners.of(event_type))
            recent = moment >= now - timedelta(seconds=window)
            (target.recent if recent else target.baseline).append(seconds)
    board = sorted(
        rows.values(), key=lambda r: (-r.stuck, -r.waiting, -(r.oldest_wait or 0.0), r.service)
    )
    return board, owners


def _count_wait(instance: Instance, owners: Owners, row: Any, now: datetime) -> None:
    since = waiting_since(instance)
    wait = max(0.0, (now - since).total_seconds())
    for service in dict.fromkeys(owners.of(t) for t in awaited(instance)):
        target = row(service)
        target.waiting += 1
        target.stuck += instance.state == "stuck"
        target.awaited = sorted(
            {*target.awaited, *(t for t in awaited(instance) if owners.of(t) == service)}
        )
        if target.oldest_wait is None or wait > target.oldest_wait:
            target.oldest_wait, target.oldest = wait, instance.correlation_id


def listed(store: SagaStore, items: list[Instance], owners: Owners) -> list[dict[str, Any]]:
    """The instances as ``choreo saga ls --output json`` and the console list them: their
    summary, plus who owes what they wait for, since when, their notes and the cause of the
    wait when a dead letter explains it."""
    from broker.envelope import format_time

    keys = [(i.saga, i.correlation_id) for i in items]
    notes, causes = store.notes(keys), store.causes(keys)
    out = []
    for item, key in zip(items, keys, strict=True):
        kept = notes.get(key, [])
        acks = [n for n in kept if covers(n, item)]  # an older episode's ack is history
        active = item.phase in ACTIVE
        cause = causes.get(key) if item.state == "stuck" else None
        out.append(
            {
                **item.summary(),
                "services": sorted({owners.of(t) for t in awaited(item)}),
                "waiting_since": format_time(waiting_since(item)) if active else None,
                "acknowledged": acks[-1].to_dict() if acks else None,
                "notes": [n.to_dict() for n in kept],
                "cause": cause.get("text") if cause else None,
            }
        )
    return out
