"""Where saga instances live: SQLite (the default), PostgreSQL (shared) or memory (tests).

One store URL picks the backend: ``sqlite:///.choreo/sagas.db`` (the default),
``postgresql://user@host:5432/db?schema=sagas`` (both in :mod:`saga_monitor.store_sql`) or
``memory://``. Every store keeps the same things:

* ``saga_instances``: one row per (saga, correlation id) with the indexed columns the views
  filter on (state, started, updated, due, finished) and the full instance as a JSON document
  (timeline, anomalies, the (source, id) of every event applied);
* ``saga_orphans``: events of a saga whose start was not seen yet, adopted when it arrives
  (and whether they were reported as orphans: once the watermark passed them);
* ``saga_monitors``: each monitor's last watermark and lag, for its restart and the views;
* ``saga_alerts``: an outbox of alerts, written in the same transaction as the state and
  deleted once published, so a crash between the two re-sends instead of losing an alert;
* ``saga_notes``: operators' acknowledgements and annotations of instances (who, when, what);
* ``saga_causes``: why a stuck instance waits, when a dead letter explains it
  (:mod:`saga_monitor.dead_letters`).

Instances are listed with a :class:`~saga_monitor.queries.Query` (filters, search, paging,
totals). Pruning keeps finished instances ``retention`` long, and optionally acknowledged and
stuck ones for their own periods.

The monitor applies events inside one :meth:`SagaStore.transaction`; the (source, id) of the
events applied to an instance commit with it, with the broker position of the message that
carried each. A message redelivered after a crash (at-least-once) is then recognised and changes
nothing, so a restarted monitor reaches the same states.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from saga_monitor.definitions import format_duration
from saga_monitor.errors import InstanceNotFoundError
from saga_monitor.model import Alert, Entry, Instance, Observation
from saga_monitor.queries import (
    COUNTED,
    Note,
    Page,
    Query,
    StepView,
    covers,
    episode,
    matches,
    step_view_of,
)

Key = tuple[str, str]

__all__ = [
    "DEFAULT_STORE_URL",
    "LockingStore",
    "MemoryStore",
    "MonitorStatus",
    "SagaStore",
    "ThreadedStore",
    "Transaction",
    "open_saga_store",
]

DEFAULT_STORE_URL = "sqlite:///.choreo/sagas.db"


class Transaction(Protocol):
    """The reads and writes one event's application needs, committed together."""

    def get(self, saga: str, correlation_id: str) -> Instance | None: ...

    def put(self, instance: Instance) -> None: ...

    def prefetch(self, keys: Iterable[Key]) -> None:
        """A hint: the instances of these (saga, correlation id) keys are read next; a store
        may read them in one go (its :meth:`get` then answers from what it read)."""
        ...

    def find_orphan(self, saga: str, correlation_id: str, key: str) -> Observation | None:
        """The orphan buffered under ``key``, if any."""
        ...

    def add_orphan(self, saga: str, correlation_id: str, obs: Observation, key: str) -> bool:
        """Buffer an orphan event under ``key``; False when that key is buffered already."""
        ...

    def take_orphans(self, saga: str, correlation_id: str) -> list[tuple[Observation, bool]]:
        """Remove and return the buffered orphans, each with whether it was reported."""
        ...

    def mark_orphans_reported(self, keys: list[tuple[str, str, str]]) -> None:
        """Mark (saga, correlation id, event key) orphans as reported."""
        ...

    def drop_orphans(self, keys: list[tuple[str, str, str]]) -> None:
        """Forget (saga, correlation id, event key) orphans."""
        ...

    def add_alerts(self, alerts: list[Alert]) -> None: ...


class SagaStore(Protocol):
    """A saga state store (see the module docstring)."""

    url: str

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]: ...

    def due(self, watermark: datetime) -> list[tuple[str, str]]:
        """(saga, correlation id) of instances to judge again at ``watermark``: a deadline or a
        held alert whose time it passed (their ``check_at``)."""
        ...

    def unreported_orphans(self, watermark: datetime) -> list[tuple[str, str, str, Observation]]:
        """(saga, correlation id, key, event) of the orphans not reported yet whose time
        ``watermark`` passed, oldest first."""
        ...

    def pending_alerts(self, limit: int = 500) -> list[tuple[int, Alert]]: ...

    def delete_alerts(self, seqs: list[int]) -> None: ...

    def instances(
        self,
        *,
        saga: str | None = None,
        state: str | None = None,
        since: datetime | None = None,
        correlation_id: str | None = None,
        limit: int = 1000,
    ) -> list[Instance]:
        """Instances, most recently updated first."""
        ...

    def search(self, query: Query) -> Page:
        """One page of the instances answering ``query``, with the total."""
        ...

    def step_views(self, states: Iterable[str | None], limit: int) -> Iterator[StepView]:
        """What the step graphs count of up to ``limit`` of the most recently updated
        instances of each of ``states`` (None: of any state), each instance once."""
        ...

    def counts(self) -> dict[tuple[str, str], int]:
        """How many instances per (saga, state)."""
        ...

    def orphans(self, limit: int = 1000) -> list[tuple[str, str, Observation]]: ...

    def oldest_stuck(self) -> dict[str, datetime]:
        """Per saga, when its longest-stuck unacknowledged instance got stuck (the deadline
        it missed): an acknowledged instance is in someone's hands and pages no more."""
        ...

    def add_note(self, note: Note) -> Note:
        """Keep an acknowledgement or annotation, with the stuck episode the instance is in;
        returns it as kept. Raises InstanceNotFoundError when the instance is not in the
        store."""
        ...

    def notes(self, keys: list[Key]) -> dict[Key, list[Note]]:
        """The notes of the (saga, correlation id) instances asked for, oldest first."""
        ...

    def record_cause(self, saga: str, correlation_id: str, cause: dict[str, Any] | None) -> None:
        """Keep (or, with None, forget) what explains an instance's wait."""
        ...

    def causes(self, keys: list[Key]) -> dict[Key, dict[str, Any]]:
        """The causes recorded for the instances asked for."""
        ...

    def prune(
        self,
        finished_before: datetime,
        *,
        acknowledged_before: datetime | None = None,
        stuck_before: datetime | None = None,
    ) -> int:
        """Delete instances that finished (and orphans seen) before ``finished_before``,
        acknowledged ones whose last acknowledgement is older than ``acknowledged_before`` and
        stuck ones stuck since before ``stuck_before``; returns how many instances went."""
        ...

    def watermark(self, monitor: str) -> datetime | None:
        """The last watermark recorded by ``monitor`` (a group name), if any."""
        ...

    def record_monitor(
        self, monitor: str, watermark: datetime | None, lag: float, at: datetime
    ) -> None:
        """Record where ``monitor`` stands (for its next start and for the views)."""
        ...

    def record_stopped(self, monitor: str, at: datetime) -> None:
        """Record that ``monitor`` stopped cleanly at ``at`` (until it records again)."""
        ...

    def monitors(self) -> list[MonitorStatus]:
        """What each monitor recorded last."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ThreadedStore(Protocol):
    """A store whose transactions may run on a thread of their own (one connection each), as
    the monitor's apply thread does: its work there can be cancelled from another thread, and
    the thread gives its connection back when it is done."""

    threadsafe: bool

    def interrupt(self, thread: int) -> None:
        """Cancel what ``thread`` is running in the database (its transaction is undone)."""
        ...

    def release(self) -> None:
        """Close the calling thread's connection."""
        ...


@runtime_checkable
class LockingStore(Protocol):
    """A store whose transactions take a lock per instance they touch from a table of
    limited size (PostgreSQL's shared lock table): the correlator gives one transaction at
    most ``instances_per_transaction`` instances (None: any number), and a batch or a tick
    touching more gets several (see :meth:`saga_monitor.correlator.Correlator.apply_many`)."""

    instances_per_transaction: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class MonitorStatus:
    """What a monitor last recorded: its watermark, its lag behind the clock (seconds;
    infinite before it first caught up), and when; ``stopped``: when it stopped cleanly, None
    while it runs (or if it ended without a clean stop)."""

    name: str
    watermark: datetime | None
    lag: float
    updated: datetime
    stopped: datetime | None = None

    def behind(self, now: datetime, tolerance: float = 5.0) -> str | None:
        """A warning when the verdicts of ``monitor`` trail ``now`` by more than ``tolerance``
        seconds (its lag, or its silence), else None."""
        silent = max(0.0, (now - self.updated).total_seconds())
        if self.stopped is not None:
            ago = format_duration(max(0.0, (now - self.stopped).total_seconds()))
            return f"monitor {self.name} stopped {ago} ago"
        if silent > 60:
            return f"monitor {self.name} last seen {format_duration(silent)} ago"
        if self.watermark is None or self.lag == float("inf"):
            return f"monitor {self.name} has not caught up yet: verdicts wait"
        if self.lag + silent > tolerance:
            return f"monitor {self.name} behind by {format_duration(self.lag + silent)}"
        return None


def obs_doc(obs: Observation) -> str:
    """An observation as JSON text (the orphans' document)."""
    return Entry(obs, "orphan").to_json()


def obs_from(doc: str) -> Observation:
    """The observation of :func:`obs_doc`."""
    return Entry.from_dict(json.loads(doc)).event


# -- memory -------------------------------------------------------------------------------------


class _MemoryTransaction:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._data = store.data  # the store's dicts, bound once: read once an event

    def get(self, saga: str, correlation_id: str) -> Instance | None:
        return self._data.get((saga, correlation_id))

    def put(self, instance: Instance) -> None:
        self._data[(instance.saga, instance.correlation_id)] = instance

    def prefetch(self, keys: Iterable[Key]) -> None:
        return None

    def find_orphan(self, saga: str, correlation_id: str, key: str) -> Observation | None:
        return self._store.orphan_data.get((saga, correlation_id), {}).get(key)

    def add_orphan(self, saga: str, correlation_id: str, obs: Observation, key: str) -> bool:
        bucket = self._store.orphan_data.setdefault((saga, correlation_id), {})
        if key in bucket:
            return False
        bucket[key] = obs
        return True

    def take_orphans(self, saga: str, correlation_id: str) -> list[tuple[Observation, bool]]:
        bucket = self._store.orphan_data.pop((saga, correlation_id), None)
        if bucket is None:  # the common case: nothing came before the start
            return []
        reported = self._store.reported_orphans
        return [(obs, (saga, correlation_id, key) in reported) for key, obs in bucket.items()]

    def mark_orphans_reported(self, keys: list[tuple[str, str, str]]) -> None:
        self._store.reported_orphans.update(keys)

    def drop_orphans(self, keys: list[tuple[str, str, str]]) -> None:
        for saga, correlation_id, key in keys:
            bucket = self._store.orphan_data.get((saga, correlation_id), {})
            bucket.pop(key, None)
            if not bucket:
                self._store.orphan_data.pop((saga, correlation_id), None)

    def add_alerts(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            self._store.seq += 1
            self._store.alerts[self._store.seq] = alert


class MemoryStore:
    """Instances in a dict: fast, for tests, benchmarks and in-process demos; nothing persists."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.data: dict[tuple[str, str], Instance] = {}
        self.orphan_data: dict[tuple[str, str], dict[str, Observation]] = {}
        self.reported_orphans: set[tuple[str, str, str]] = set()
        self.alerts: dict[int, Alert] = {}
        self.status: dict[str, MonitorStatus] = {}
        self.notes_data: dict[Key, list[Note]] = {}
        self.cause_data: dict[Key, dict[str, Any]] = {}
        self.seq = 0

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]:
        return contextlib.nullcontext(_MemoryTransaction(self))

    def due(self, watermark: datetime) -> list[tuple[str, str]]:
        chosen = [i for i in self.data.values() if i.check_at and i.check_at <= watermark]
        chosen.sort(key=lambda i: i.check_at or watermark)
        return [(i.saga, i.correlation_id) for i in chosen]

    def unreported_orphans(self, watermark: datetime) -> list[tuple[str, str, str, Observation]]:
        rows = [
            (saga, corr, key, obs)
            for (saga, corr), bucket in self.orphan_data.items()
            for key, obs in bucket.items()
            if obs.time <= watermark and (saga, corr, key) not in self.reported_orphans
        ]
        return sorted(rows, key=lambda row: row[3].time)

    def pending_alerts(self, limit: int = 500) -> list[tuple[int, Alert]]:
        return sorted(self.alerts.items())[:limit]

    def delete_alerts(self, seqs: list[int]) -> None:
        for seq in seqs:
            self.alerts.pop(seq, None)

    def instances(
        self,
        *,
        saga: str | None = None,
        state: str | None = None,
        since: datetime | None = None,
        correlation_id: str | None = None,
        limit: int = 1000,
    ) -> list[Instance]:
        chosen = [
            i
            for i in self.data.values()
            if (saga is None or i.saga == saga)
            and (state is None or i.state == state)
            and (since is None or i.updated >= since)
            and (correlation_id is None or i.correlation_id == correlation_id)
        ]
        return sorted(chosen, key=lambda i: i.updated, reverse=True)[:limit]

    def search(self, query: Query) -> Page:
        chosen = [i for key, i in self.data.items() if matches(i, query, self._acknowledged(key))]
        chosen.sort(key=lambda i: i.correlation_id)
        chosen.sort(key=lambda i: i.updated, reverse=True)
        items = chosen[query.offset : query.offset + query.limit]
        if query.data is not None:  # counted as far as the SQL stores count
            counted = max(query.offset + query.limit, COUNTED)
            more = len(chosen) > counted
            return Page(items, min(len(chosen), counted), query.offset, query.limit, more=more)
        return Page(items, len(chosen), query.offset, query.limit)

    def _acks(self, key: Key) -> list[Note]:
        """The acknowledgements that hold for the instance of ``key`` as it is now."""
        instance = self.data.get(key)
        notes = self.notes_data.get(key, ())
        return [n for n in notes if instance is not None and covers(n, instance)]

    def _acknowledged(self, key: Key) -> bool:
        return bool(self._acks(key))

    def add_note(self, note: Note) -> Note:
        key = (note.saga, note.correlation_id)
        instance = self.data.get(key)
        if instance is None:
            raise InstanceNotFoundError(
                f"no instance of {note.saga} with correlation id {note.correlation_id}"
            )
        kept = dataclasses.replace(note, episode=episode(instance))
        self.notes_data.setdefault(key, []).append(kept)
        return kept

    def notes(self, keys: list[Key]) -> dict[Key, list[Note]]:
        return {k: list(self.notes_data[k]) for k in keys if k in self.notes_data}

    def record_cause(self, saga: str, correlation_id: str, cause: dict[str, Any] | None) -> None:
        if cause is None:
            self.cause_data.pop((saga, correlation_id), None)
        else:
            self.cause_data[(saga, correlation_id)] = dict(cause)

    def causes(self, keys: list[Key]) -> dict[Key, dict[str, Any]]:
        return {k: dict(self.cause_data[k]) for k in keys if k in self.cause_data}

    def step_views(self, states: Iterable[str | None], limit: int) -> Iterator[StepView]:
        chosen: set[Key] = set()
        for state in states:
            for item in self.search(Query(state=state, limit=limit, counted=False)).items:
                if (key := (item.saga, item.correlation_id)) not in chosen:
                    chosen.add(key)
                    yield step_view_of(item)

    def counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for instance in self.data.values():
            key = (instance.saga, instance.state)
            out[key] = out.get(key, 0) + 1
        return out

    def orphans(self, limit: int = 1000) -> list[tuple[str, str, Observation]]:
        rows = [(s, c, o) for (s, c), b in self.orphan_data.items() for o in b.values()]
        return rows[:limit]

    def oldest_stuck(self) -> dict[str, datetime]:
        out: dict[str, datetime] = {}
        for key, i in self.data.items():
            if i.state != "stuck" or i.stuck_since is None:
                continue
            if not self._acknowledged(key):
                known = out.get(i.saga)
                out[i.saga] = i.stuck_since if known is None else min(known, i.stuck_since)
        return out

    def prune(
        self,
        finished_before: datetime,
        *,
        acknowledged_before: datetime | None = None,
        stuck_before: datetime | None = None,
    ) -> int:
        def expired(key: Key, i: Instance) -> bool:
            acks = [n.at for n in self._acks(key)]
            return bool(
                (i.finished and i.finished < finished_before)
                or (acknowledged_before and acks and max(acks) < acknowledged_before)
                or (
                    stuck_before
                    and i.state == "stuck"
                    and i.stuck_since
                    and i.stuck_since < stuck_before
                )
            )

        old = [k for k, i in self.data.items() if expired(k, i)]
        for key in old:
            del self.data[key]
            self.notes_data.pop(key, None)
            self.cause_data.pop(key, None)
        for key, bucket in list(self.orphan_data.items()):
            if all(o.time < finished_before for o in bucket.values()):
                del self.orphan_data[key]
        return len(old)

    def watermark(self, monitor: str) -> datetime | None:
        status = self.status.get(monitor)
        return status.watermark if status else None

    def record_monitor(
        self, monitor: str, watermark: datetime | None, lag: float, at: datetime
    ) -> None:
        known = self.watermark(monitor)
        if watermark is None or (known is not None and known > watermark):
            watermark = known
        self.status[monitor] = MonitorStatus(monitor, watermark, lag, at)

    def record_stopped(self, monitor: str, at: datetime) -> None:
        status = self.status.get(monitor)
        if status is not None:
            self.status[monitor] = dataclasses.replace(status, stopped=at)

    def monitors(self) -> list[MonitorStatus]:
        return [self.status[name] for name in sorted(self.status)]

    def close(self) -> None:
        return None


def open_saga_store(url: str | None = None) -> SagaStore:
    """The store for ``url``: ``sqlite:///...`` (the default ``sqlite:///.choreo/sagas.db``),
    ``postgresql://...`` or ``memory://``."""
    url = url or DEFAULT_STORE_URL
    if url.split("://", 1)[0].lower() == "memory":
        return MemoryStore(url)
    from saga_monitor.store_sql import SqlSagaStore

    return SqlSagaStore(url)
