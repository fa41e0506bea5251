"""The embedded relay: poll a SQLite outbox table on its ``seq`` cursor.

SQLite commits one writer at a time and ``seq`` is AUTOINCREMENT, so ``seq`` grows in commit
order and ``WHERE seq > cursor ORDER BY seq`` never skips a row that commits later. The cursor
lives in ``choreo_outbox_offsets`` in the same database file and is updated only after the
broker accepted every row up to it. One relay per (table, relay name): a second one finds the
lock file taken and refuses to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import time
from datetime import UTC, datetime
from typing import IO, Any

from broker.observability import get_logger
from connectors.db import connect_sqlite
from connectors.dburl import DatabaseURL, check_identifier
from connectors.errors import (
    DatabaseUnavailableError,
    OutboxError,
    OutboxMissingError,
    RelayLockedError,
)
from connectors.outbox_table import OFFSETS_TABLE
from connectors.relay import Change
from connectors.routing import OutboxRow

__all__ = ["SQLiteSource", "sqlite_status"]

log = get_logger("connectors.sqlite")

_COLUMNS = "seq, id, aggregatetype, aggregateid, type, payload, headers, created_at"


def _parse_time(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class SQLiteSource:
    """Committed rows of a SQLite outbox table, by polling after the stored cursor."""

    def __init__(
        self,
        url: str,
        *,
        table: str = "outbox",
        name: str | None = None,
        batch_size: int = 1000,
        poll_interval: float = 0.02,
    ) -> None:
        self.db = DatabaseURL.parse(url)
        self.table = check_identifier(table)
        self.name = name or f"sqlite:{self.db.name}:{table}"
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.cursor = 0
        self._read_cursor = 0
        self._conn: sqlite3.Connection | None = None
        self._store_conn: sqlite3.Connection | None = None
        self._lock: IO[bytes] | None = None
        self._pending: tuple[int, int, datetime | None] | None = None
        self._store_wake = asyncio.Event()
        self._checkpointer: asyncio.Task[None] | None = None
        self._closing = False

    async def open(self) -> None:
        self._closing = False  # also when reopened after a lost database
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        if not os.path.exists(self.db.database):
            raise OutboxMissingError(
                f"SQLite database {self.db.url} does not exist; create the outbox first "
                "(connectors.init_outbox)",
                database=self.db.url,
                table=self.table,
            )
        self._take_lock()
        connect_sqlite(self.db).close()  # sets WAL mode, translates open errors
        # one connection to read rows, another (used only by the checkpointer) to store the
        # cursor: sharing one across threads would run the write inside a read snapshot
        self._conn, self._store_conn = (
            sqlite3.connect(
                self.db.database, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            for _ in range(2)
        )
        self.cursor = self._read_cursor = self._load_cursor()

    def _take_lock(self) -> None:
        path = f"{self.db.database}.{self.table}.relay.lock"
        handle = open(path, "wb")  # noqa: SIM115 - held open for the relay's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise RelayLockedError(
                f"another relay is already reading table {self.table} of {self.db.url} "
                f"(lock file {path} is held); stop it first, one relay per outbox table"
            ) from exc
        self._lock = handle

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxError("the SQLite relay source is not open")
        return self._conn

    def _load_cursor(self) -> int:
        try:
            self._db().execute(f'SELECT 1 FROM "{self.table}" LIMIT 0')
            row = (
                self._db()
                .execute(f'SELECT position FROM "{OFFSETS_TABLE}" WHERE relay = ?', (self.name,))
                .fetchone()
            )
        except sqlite3.OperationalError as exc:
            raise OutboxMissingError(
                f"{self.db.url} has no outbox table {self.table!r} ({exc}); create the outbox "
                "first (connectors.init_outbox)",
                database=self.db.url,
                table=self.table,
            ) from exc
        return int(row[0]) if row else 0

    def _fetch(self) -> list[tuple[Any, ...]]:
        return (
            self._db()
            .execute(
                f'SELECT {_COLUMNS} FROM "{self.table}" WHERE seq > ? ORDER BY seq LIMIT ?',
                (self._read_cursor, self.batch_size),
            )
            .fetchall()
        )

    async def next_change(self, timeout: float) -> Change | None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                rows = await asyncio.to_thread(self._fetch)
            except sqlite3.Error as exc:
                raise DatabaseUnavailableError(
                    f"cannot read outbox table {self.table} of {self.db.url}: {exc}"
                ) from exc
            if rows:
                return self._change(rows)
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(self.poll_interval)

    def _change(self, rows: list[tuple[Any, ...]]) -> Change:
        records = [
            OutboxRow(
                id=str(r[1]),
                aggregatetype=r[2],
                aggregateid=str(r[3]),
                type=r[4],
                payload=r[5],
                headers=r[6],
                created_at=_parse_time(r[7]),
            )
            for r in rows
        ]
        self._read_cursor = int(rows[-1][0])  # read ahead; ``cursor`` moves on confirm
        return Change(records, position=self._read_cursor, committed_at=records[-1].created_at)

    async def confirm(self, change: Change) -> None:
        """Advance the cursor; a background task writes it to the database.

        The write needs SQLite's write lock, which the application's own transactions contend
        for; waiting for it here would stall the stream. The stored cursor only ever trails
        what the broker accepted, so a crash re-sends at most the rows published since the last
        completed write.
        """
        self.cursor = int(change.position)
        count = len(change.rows) + (self._pending[1] if self._pending else 0)
        last = change.rows[-1].created_at if change.rows else None
        if last is None and self._pending:
            last = self._pending[2]
        self._pending = (self.cursor, count, last)
        self._store_wake.set()
        if self._checkpointer is None:
            self._checkpointer = asyncio.create_task(self._checkpoint_loop())

    async def _checkpoint_loop(self) -> None:
        while not self._closing:
            await self._store_wake.wait()
            self._store_wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            await asyncio.to_thread(self._store, *pending)
        except sqlite3.Error as exc:
            log.warning("storing the outbox cursor failed", relay=self.name, error=str(exc))
            self._merge_back(pending)
            await asyncio.sleep(0.5)
            self._store_wake.set()

    def _store(self, position: int, count: int, last: datetime | None) -> None:
        if self._store_conn is None:
            raise OutboxError("the SQLite relay source is not open")
        self._store_conn.execute(
            f'INSERT INTO "{OFFSETS_TABLE}" (relay, position, relayed, last_created_at, '
            "updated_at) VALUES (?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) "
            "ON CONFLICT(relay) DO UPDATE SET position = excluded.position, "
            "relayed = relayed + excluded.relayed, last_created_at = excluded.last_created_at, "
            "updated_at = excluded.updated_at",
            (self.name, str(position), count, last.isoformat() if last else None),
        )

    async def heartbeat(self) -> None:
        return None

    def _merge_back(self, pending: tuple[int, int, datetime | None]) -> None:
        """Put an unsaved position back; a newer one that arrived meanwhile wins."""
        newer = self._pending
        if newer is None:
            self._pending = pending
        else:
            self._pending = (newer[0], newer[1] + pending[1], newer[2] or pending[2])

    async def close(self) -> None:
        self._closing = True
        if self._checkpointer is not None:
            self._store_wake.set()  # it stores what is pending, then ends
            await self._checkpointer
            self._checkpointer = None
        if self._store_conn is not None:
            await self._flush()  # a last try if the checkpointer's write failed
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._store_conn is not None:
            self._store_conn.close()
            self._store_conn = None
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None


def sqlite_status(url: str, table: str = "outbox", name: str | None = None) -> dict[str, Any]:
    """Position, lag in events and seconds of the SQLite relay of ``table``."""
    db = DatabaseURL.parse(url)
    check_identifier(table)
    relay = name or f"sqlite:{db.name}:{table}"
    conn = connect_sqlite(db)
    try:
        row = conn.execute(
            f'SELECT position, relayed, updated_at FROM "{OFFSETS_TABLE}" WHERE relay = ?',
            (relay,),
        ).fetchone()
        cursor = int(row[0]) if row else 0
        pending, oldest = conn.execute(
            f'SELECT COUNT(*), MIN(created_at) FROM "{table}" WHERE seq > ?', (cursor,)
        ).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise OutboxError(f"reading the outbox of {db.url} failed: {exc}") from exc
        raise OutboxMissingError.no_table(db.url, table, exc) from exc
    finally:
        conn.close()
    oldest_time = _parse_time(oldest)
    lag = (datetime.now(UTC) - oldest_time).total_seconds() if oldest_time else 0.0
    return {
        "database": db.url,
        "table": table,
        "relay": relay,
        "position": cursor,
        "relayed": int(row[1]) if row else 0,
        "updated_at": row[2] if row else None,
        "lag_events": int(pending),
        "lag_seconds": round(max(lag, 0.0), 3),
        "healthy": True,
    }
