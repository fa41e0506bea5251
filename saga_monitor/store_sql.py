"""The SQL saga stores: what SQLite (here) and PostgreSQL (:mod:`.store_postgres`) share.

See :mod:`saga_monitor.store` for what every store keeps and why each event's application is
one transaction.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from saga_monitor.errors import StoreError
from saga_monitor.model import Alert, Instance, Observation
from saga_monitor.store import (
    DEFAULT_STORE_URL,
    MonitorStatus,
    Transaction,
    instance_row,
    obs_doc,
    obs_from,
    utc,
)

__all__ = ["SQLStore", "SQLiteStore"]


class _SQLTransaction:
    def __init__(self, store: SQLStore, cursor: Any) -> None:
        self._store = store
        self._cur = cursor

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        self._cur.execute(self._store.sql(sql), params)
        return self._cur

    def get(self, saga: str, correlation_id: str) -> Instance | None:
        cache = self._store.cache
        if cache is not None:
            cached = cache.get((saga, correlation_id))
            if cached is not None:
                cache.move_to_end((saga, correlation_id))
                return cached
        row = self._run(
            "SELECT doc FROM saga_instances WHERE saga = ? AND correlation_id = ?",
            (saga, correlation_id),
        ).fetchone()
        instance = Instance.from_dict(json.loads(row[0])) if row else None
        if instance is not None:
            self._store.remember(instance)
        return instance

    def put(self, instance: Instance) -> None:
        self._store.remember(instance)
        self._run(
            "INSERT INTO saga_instances (saga, correlation_id, state, started, updated, due, "
            "finished, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (saga, correlation_id) "
            "DO UPDATE SET state = excluded.state, started = excluded.started, "
            "updated = excluded.updated, due = excluded.due, finished = excluded.finished, "
            "doc = excluded.doc",
            instance_row(instance),
        )

    def find_orphan(self, saga: str, correlation_id: str, key: str) -> Observation | None:
        row = self._run(
            "SELECT doc FROM saga_orphans WHERE saga = ? AND correlation_id = ? AND event_key = ?",
            (saga, correlation_id, key),
        ).fetchone()
        return obs_from(row[0]) if row else None

    def add_orphan(self, saga: str, correlation_id: str, obs: Observation, key: str) -> bool:
        cur = self._run(
            "INSERT INTO saga_orphans (saga, correlation_id, event_key, time, doc) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (saga, correlation_id, key, obs.time.timestamp(), obs_doc(obs)),
        )
        return bool(cur.rowcount)

    def take_orphans(self, saga: str, correlation_id: str) -> list[tuple[Observation, bool]]:
        rows = self._run(
            "SELECT doc, reported FROM saga_orphans WHERE saga = ? AND correlation_id = ? "
            "ORDER BY time",
            (saga, correlation_id),
        ).fetchall()
        if rows:
            self._run(
                "DELETE FROM saga_orphans WHERE saga = ? AND correlation_id = ?",
                (saga, correlation_id),
            )
        return [(obs_from(row[0]), bool(row[1])) for row in rows]

    def mark_orphans_reported(self, keys: list[tuple[str, str, str]]) -> None:
        for saga, correlation_id, key in keys:
            self._run(
                "UPDATE saga_orphans SET reported = 1 WHERE saga = ? AND correlation_id = ? "
                "AND event_key = ?",
                (saga, correlation_id, key),
            )

    def drop_orphans(self, keys: list[tuple[str, str, str]]) -> None:
        for saga, correlation_id, key in keys:
            self._run(
                "DELETE FROM saga_orphans WHERE saga = ? AND correlation_id = ? AND event_key = ?",
                (saga, correlation_id, key),
            )

    def add_alerts(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            self._run("INSERT INTO saga_alerts (doc) VALUES (?)", (json.dumps(alert.to_dict()),))


class SQLStore:
    """The SQL both backends share; a subclass gives the connection and the dialect."""

    url: str
    placeholder = "?"
    schema_sql: tuple[str, ...] = ()
    #: Instances kept in memory between events (None: always read the database, as a store
    #: shared by several monitors must).
    cache_size: int | None = None

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._conn: Any = None
        self.cache: OrderedDict[tuple[str, str], Instance] | None = (
            OrderedDict() if self.cache_size else None
        )

    def remember(self, instance: Instance) -> None:
        """Keep ``instance`` in the cache (evicting the least recently used)."""
        if self.cache is None or not self.cache_size:
            return
        self.cache[(instance.saga, instance.correlation_id)] = instance
        self.cache.move_to_end((instance.saga, instance.correlation_id))
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    def sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def _translate(self, exc: Exception) -> StoreError:
        return StoreError(f"saga store {self.url}: {exc}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._lock:
            cursor = self._conn.cursor()
            try:
                yield _SQLTransaction(self, cursor)
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                if self.cache is not None:
                    self.cache.clear()  # cached instances may hold the undone changes
                raise
            finally:
                cursor.close()

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            cursor = self._conn.cursor()
            try:
                cursor.execute(self.sql(sql), params)
                rows = cursor.fetchall() if cursor.description else []
                self._conn.commit()
                return list(rows)
            except Exception as exc:
                self._conn.rollback()
                raise self._translate(exc) from exc
            finally:
                cursor.close()

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with self._lock:
            cursor = self._conn.cursor()
            try:
                cursor.execute(self.sql(sql), params)
                count = int(cursor.rowcount)
                self._conn.commit()
                return count
            except Exception as exc:
                self._conn.rollback()
                raise self._translate(exc) from exc
            finally:
                cursor.close()

    def _create_schema(self) -> None:
        for statement in self.schema_sql:
            self._execute(statement)

    def due(self, watermark: datetime) -> list[tuple[str, str]]:
        rows = self._query(
            "SELECT saga, correlation_id FROM saga_instances WHERE due IS NOT NULL AND due <= ? "
            "ORDER BY due",
            (watermark.timestamp(),),
        )
        return [(row[0], row[1]) for row in rows]

    def unreported_orphans(self, watermark: datetime) -> list[tuple[str, str, str, Observation]]:
        rows = self._query(
            "SELECT saga, correlation_id, event_key, doc FROM saga_orphans WHERE reported = 0 "
            "AND time <= ? ORDER BY time LIMIT 1000",
            (watermark.timestamp(),),
        )
        return [(row[0], row[1], row[2], obs_from(row[3])) for row in rows]

    def pending_alerts(self, limit: int = 500) -> list[tuple[int, Alert]]:
        rows = self._query("SELECT seq, doc FROM saga_alerts ORDER BY seq LIMIT ?", (limit,))
        return [(int(row[0]), Alert.from_dict(json.loads(row[1]))) for row in rows]

    def delete_alerts(self, seqs: list[int]) -> None:
        for seq in seqs:
            self._execute("DELETE FROM saga_alerts WHERE seq = ?", (seq,))

    def instances(
        self,
        *,
        saga: str | None = None,
        state: str | None = None,
        since: datetime | None = None,
        correlation_id: str | None = None,
        limit: int = 1000,
    ) -> list[Instance]:
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        for column, value in (("saga", saga), ("state", state), ("correlation_id", correlation_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("updated >= ?")
            params.append(since.timestamp())
        rows = self._query(
            f"SELECT doc FROM saga_instances WHERE {' AND '.join(where)} "
            "ORDER BY updated DESC LIMIT ?",
            (*params, limit),
        )
        return [Instance.from_dict(json.loads(row[0])) for row in rows]

    def counts(self) -> dict[tuple[str, str], int]:
        rows = self._query("SELECT saga, state, COUNT(*) FROM saga_instances GROUP BY saga, state")
        return {(row[0], row[1]): int(row[2]) for row in rows}

    def orphans(self, limit: int = 1000) -> list[tuple[str, str, Observation]]:
        rows = self._query(
            "SELECT saga, correlation_id, doc FROM saga_orphans ORDER BY time LIMIT ?", (limit,)
        )
        return [(row[0], row[1], obs_from(row[2])) for row in rows]

    def prune(self, finished_before: datetime) -> int:
        cutoff = finished_before.timestamp()
        if self.cache is not None:
            self.cache.clear()
        count = self._execute(
            "DELETE FROM saga_instances WHERE finished IS NOT NULL AND finished < ?", (cutoff,)
        )
        self._execute("DELETE FROM saga_orphans WHERE time < ?", (cutoff,))
        return count

    def watermark(self, monitor: str) -> datetime | None:
        rows = self._query("SELECT watermark FROM saga_monitors WHERE name = ?", (monitor,))
        return utc(rows[0][0]) if rows and rows[0][0] is not None else None

    def record_monitor(
        self, monitor: str, watermark: datetime | None, lag: float, at: datetime
    ) -> None:
        mark = watermark.timestamp() if watermark is not None else None
        lag = lag if lag != float("inf") else -1.0
        self._execute(
            "INSERT INTO saga_monitors (name, watermark, lag, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET watermark = CASE WHEN excluded.watermark IS NULL "
            "THEN saga_monitors.watermark WHEN saga_monitors.watermark IS NULL "
            "OR excluded.watermark > saga_monitors.watermark THEN excluded.watermark "
            "ELSE saga_monitors.watermark END, lag = excluded.lag, updated = excluded.updated",
            (monitor, mark, lag, at.timestamp()),
        )

    def monitors(self) -> list[MonitorStatus]:
        rows = self._query("SELECT name, watermark, lag, updated FROM saga_monitors ORDER BY name")
        return [
            MonitorStatus(
                row[0],
                utc(row[1]) if row[1] is not None else None,
                float(row[2]) if row[2] is not None and row[2] >= 0 else float("inf"),
                utc(row[3]),
            )
            for row in rows
        ]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


_SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS saga_instances (saga TEXT NOT NULL, correlation_id TEXT NOT NULL, "
    "state TEXT NOT NULL, started REAL NOT NULL, updated REAL NOT NULL, due REAL, finished REAL, "
    "doc TEXT NOT NULL, PRIMARY KEY (saga, correlation_id))",
    "CREATE INDEX IF NOT EXISTS saga_instances_due ON saga_instances (due)",
    "CREATE INDEX IF NOT EXISTS saga_instances_updated ON saga_instances (updated)",
    "CREATE INDEX IF NOT EXISTS saga_instances_corr ON saga_instances (correlation_id)",
    "CREATE TABLE IF NOT EXISTS saga_orphans (saga TEXT NOT NULL, correlation_id TEXT NOT NULL, "
    "event_key TEXT NOT NULL, time REAL NOT NULL, doc TEXT NOT NULL, "
    "reported INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (saga, correlation_id, event_key))",
    "CREATE TABLE IF NOT EXISTS saga_alerts (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "doc TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS saga_monitors (name TEXT PRIMARY KEY, watermark REAL, "
    "lag REAL, updated REAL NOT NULL)",
)


class SQLiteStore(SQLStore):
    """``sqlite:///path/to/sagas.db``: one file, WAL mode, safe to read from other processes.

    One monitor writes to it (it keeps recent instances in memory); the CLI and the web page
    may read it at the same time. Several monitors share a PostgreSQL store instead.
    """

    schema_sql = _SQLITE_SCHEMA
    cache_size = 50_000

    def __init__(self, url: str = DEFAULT_STORE_URL) -> None:
        super().__init__()
        self.url = url
        path = url.removeprefix("sqlite://").split("?", 1)[0]
        path = path[1:] if path.startswith("/") else path
        self.path = Path(path or ".choreo/sagas.db")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot open the saga store {url}: {exc}; check the path is writable"
            ) from exc
        self._create_schema()
