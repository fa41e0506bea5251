"""Where saga instances live: SQLite (the default), PostgreSQL (shared) or memory (tests).

One store URL picks the backend: ``sqlite:///.choreo/sagas.db`` (the default),
``postgresql://user@host:5432/db?schema=sagas`` (both in :mod:`saga_monitor.store_sql`) or
``memory://``. Every store keeps the same things:

* ``saga_instances``: one row per (saga, correlation id) with the indexed columns the views
  filter on (state, started, updated, due, finished) and the full instance as a JSON document
  (timeline, anomalies, the (source, id) of every event applied);
* ``saga_orphans``: events of a saga whose start was not seen yet, adopted when it arrives;
* ``saga_alerts``: an outbox of alerts, written in the same transaction as the state and
  deleted once published, so a crash between the two re-sends instead of losing an alert.

The monitor applies each event inside one :meth:`SagaStore.transaction`; the (source, id) of the
events applied to an instance commit with it. A delivery redelivered after a crash (at-least-
once) is then recognised and changes nothing, so a restarted monitor reaches the same states.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Protocol

from saga_monitor.model import ACTIVE, Alert, Instance, Observation

__all__ = [
    "DEFAULT_STORE_URL",
    "MemoryStore",
    "SagaStore",
    "Transaction",
    "open_saga_store",
]

DEFAULT_STORE_URL = "sqlite:///.choreo/sagas.db"


class Transaction(Protocol):
    """The reads and writes one event's application needs, committed together."""

    def get(self, saga: str, correlation_id: str) -> Instance | None: ...

    def put(self, instance: Instance) -> None: ...

    def add_orphan(self, saga: str, correlation_id: str, obs: Observation) -> bool:
        """Buffer an orphan event; False when that (source, id) is buffered already."""
        ...

    def take_orphans(self, saga: str, correlation_id: str) -> list[Observation]: ...

    def add_alerts(self, alerts: list[Alert]) -> None: ...


class SagaStore(Protocol):
    """A saga state store (see the module docstring)."""

    url: str

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]: ...

    def due(self, now: datetime) -> list[tuple[str, str]]:
        """(saga, correlation id) of active, not yet stuck instances whose deadline passed."""
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

    def counts(self) -> dict[tuple[str, str], int]:
        """How many instances per (saga, state)."""
        ...

    def orphans(self, limit: int = 1000) -> list[tuple[str, str, Observation]]: ...

    def prune(self, finished_before: datetime) -> int:
        """Delete instances that finished (and orphans seen) before the time; returns how many."""
        ...

    def close(self) -> None: ...


#: The protocol's name in the correlator and the monitor (until they say ``SagaStore``).
Store = SagaStore


# -- memory -------------------------------------------------------------------------------------


class _MemoryTransaction:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def get(self, saga: str, correlation_id: str) -> Instance | None:
        return self._store.data.get((saga, correlation_id))

    def put(self, instance: Instance) -> None:
        self._store.data[(instance.saga, instance.correlation_id)] = instance

    def add_orphan(self, saga: str, correlation_id: str, obs: Observation) -> bool:
        bucket = self._store.orphan_data.setdefault((saga, correlation_id), {})
        if obs.key in bucket:
            return False
        bucket[obs.key] = obs
        return True

    def take_orphans(self, saga: str, correlation_id: str) -> list[Observation]:
        return list(self._store.orphan_data.pop((saga, correlation_id), {}).values())

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
        self.alerts: dict[int, Alert] = {}
        self.seq = 0
        self._txn = _MemoryTransaction(self)

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]:
        return contextlib.nullcontext(self._txn)

    def due(self, now: datetime) -> list[tuple[str, str]]:
        return [
            key
            for key, i in self.data.items()
            if ((i.phase in ACTIVE and i.stuck_since is None) or i.missing)
            and i.due is not None
            and i.due <= now
        ]

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

    def counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for instance in self.data.values():
            key = (instance.saga, instance.state)
            out[key] = out.get(key, 0) + 1
        return out

    def orphans(self, limit: int = 1000) -> list[tuple[str, str, Observation]]:
        rows = [(s, c, o) for (s, c), b in self.orphan_data.items() for o in b.values()]
        return rows[:limit]

    def prune(self, finished_before: datetime) -> int:
        old = [k for k, i in self.data.items() if i.finished and i.finished < finished_before]
        for key in old:
            del self.data[key]
        for key, bucket in list(self.orphan_data.items()):
            if all(o.time < finished_before for o in bucket.values()):
                del self.orphan_data[key]
        return len(old)

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
