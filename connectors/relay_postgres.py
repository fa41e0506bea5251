"""The PostgreSQL relay: logical replication with ``pgoutput`` from a named slot.

The replication stream is read with psycopg2's ``LogicalReplicationConnection`` without a
thread: the connection's socket is registered with the event loop (``loop.add_reader``) and
``read_message()`` (non-blocking) is drained whenever it is readable. Reading, decoding,
publishing and ``send_feedback`` therefore all happen on the loop's thread, one at a time, so
the psycopg2 connection is never shared between threads and a confirmation can never overtake
a publish. Only the short blocking calls (connecting, creating the slot, health queries) run in
``asyncio.to_thread``.

Guarantees: rows are handed out per whole transaction, in commit order; the slot's flush LSN is
advanced (``send_feedback(flush_lsn=commit end LSN)``) only after the broker accepted every
event of those transactions; on restart the server resumes from the slot's confirmed position.
When idle, the relay confirms the server's reported WAL end so an idle slot does not retain WAL,
and it checks the retained WAL (warning + ``choreo_outbox_retained_wal_bytes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client import Gauge

from broker.observability import get_logger
from connectors.db import check_postgres_settings, connect_postgres
from connectors.dburl import DatabaseURL, check_identifier
from connectors.errors import (
    DatabaseUnavailableError,
    OutboxError,
    OutboxMissingError,
    PositionLostError,
    RelayLockedError,
)
from connectors.outbox_table import DEFAULT_SLOT, OFFSETS_TABLE, ensure_slot, publication_name
from connectors.pgoutput import (
    Begin,
    Commit,
    Insert,
    Relation,
    decode_message,
    format_lsn,
    to_python,
)
from connectors.relay import Change
from connectors.routing import OutboxRow

__all__ = ["RETAINED_WAL", "PostgresSource", "postgres_status"]

log = get_logger("connectors.postgres")

RETAINED_WAL = Gauge(
    "choreo_outbox_retained_wal_bytes", "WAL the replication slot keeps on the server", ["slot"]
)

_SLOT_QUERY = (
    "SELECT active, active_pid, confirmed_flush_lsn::text, "
    "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
    "FROM pg_replication_slots WHERE slot_name = %s"
)


class PostgresSource:
    """Committed outbox rows from a pgoutput logical replication slot."""

    def __init__(
        self,
        url: str,
        *,
        table: str = "outbox",
        slot: str = DEFAULT_SLOT,
        binary: bool = False,
        batch_rows: int = 1000,
        wal_warning_bytes: int = 256 * 1024 * 1024,
        health_interval: float = 10.0,
    ) -> None:
        self.db = DatabaseURL.parse(url)
        self.table = check_identifier(table)
        self.slot = check_identifier(slot, "slot")
        self.name = f"postgres:{slot}"
        self.binary = binary
        self.batch_rows = batch_rows
        self.wal_warning_bytes = wal_warning_bytes
        self.health_interval = health_interval
        self.retained_wal: int | None = None
        self._conn: Any = None  # replication connection
        self._cursor: Any = None
        self._sql: Any = None  # plain connection: health checks and progress
        self._readable = asyncio.Event()
        self._relations: dict[int, Relation] = {}
        self._txn: list[OutboxRow] | None = None
        self._ready: list[OutboxRow] = []
        self._ready_lsn = 0
        self._ready_time: datetime | None = None
        self._confirmed = 0
        self._handed_out = 0
        self._last_health = 0.0
        self._last_progress = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        self._relations.clear()  # a new stream starts at the confirmed position
        self._txn, self._ready, self._ready_lsn, self._ready_time = None, [], 0, None
        self._handed_out = self._confirmed
        try:
            await asyncio.to_thread(self._prepare)
            await asyncio.to_thread(self._start_replication)
        except BaseException:
            await self.close()
            raise
        loop = asyncio.get_running_loop()
        loop.add_reader(self._cursor.fileno(), self._readable.set)

    def _prepare(self) -> None:
        self._sql = connect_postgres(self.db)
        self._sql.autocommit = True
        with self._sql.cursor() as cur:
            check_postgres_settings(cur, self.db)
            cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (self._publication,))
            if cur.fetchone() is None:
                raise OutboxMissingError(
                    f"PostgreSQL at {self.db.masked} has no publication {self._publication} for "
                    f"table {self.table}; create the outbox first (connectors.init_outbox)",
                    database=self.db.masked,
                    table=self.table,
                )
            cur.execute(_SLOT_QUERY, (self.slot,))
            found = cur.fetchone()
            if found is not None and found[0]:
                raise self._locked(found[1])
            if found is None:
                self._refuse_lost_slot(cur)
            else:
                self._refuse_invalidated_slot(cur)
            if ensure_slot(cur, self.slot, self.db):
                log.warning(
                    "replication slot created now; rows committed before it are not relayed "
                    "(create the outbox before the application writes)",
                    slot=self.slot,
                )

    def _refuse_lost_slot(self, cur: Any) -> None:
        """A missing slot after this relay has relayed rows was dropped: a new one would
        silently skip every row committed in between, so refuse (the operator recreates it)."""
        import psycopg2.errors

        try:
            cur.execute(
                f'SELECT position, last_created_at FROM "{OFFSETS_TABLE}" WHERE relay = %s',
                (self.name,),
            )
        except psycopg2.errors.UndefinedTable:
            return
        progress = cur.fetchone()
        if progress is not None:
            raise PositionLostError(
                f"replication slot {self.slot} on {self.db.masked} is gone, but this relay had "
                f"confirmed {progress[0]} (last relayed row created {_when(progress[1])}): rows "
                "committed after the slot was dropped are in no replication stream and a new "
                f"slot would skip them; create the slot again (choreo outbox init --table "
                f"{self.table} --slot {self.slot}), then re-insert the rows of {self.table} "
                "created since (docs/outbox.md, 'A lost slot')"
            )

    def _refuse_invalidated_slot(self, cur: Any) -> None:
        """PostgreSQL 13+ invalidates a slot past ``max_slot_wal_keep_size``: say what to do."""
        cur.execute("SHOW server_version_num")
        if int(cur.fetchone()[0]) < 130000:
            return
        cur.execute(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
        )
        found = cur.fetchone()
        if found is not None and found[0] == "lost":
            raise PositionLostError(
                f"replication slot {self.slot} on {self.db.masked} was invalidated by the server "
                "(wal_status=lost: it fell behind by more than max_slot_wal_keep_size), so rows "
                f"committed since its position cannot be streamed; drop it (SELECT "
                f"pg_drop_replication_slot('{self.slot}')), create it again (choreo outbox init "
                f"--table {self.table} --slot {self.slot}) and re-insert the rows of {self.table} "
                "created since (docs/outbox.md, 'A lost slot')"
            )

    @property
    def _publication(self) -> str:
        return publication_name(self.table)

    def _locked(self, pid: Any) -> RelayLockedError:
        return RelayLockedError(
            f"replication slot {self.slot} on {self.db.masked} is already in use by another "
            f"relay (server pid {pid}); stop that relay or give this one a different slot"
        )

    def _start_replication(self) -> None:
        import psycopg2
        import psycopg2.errors
        from psycopg2.extras import LogicalReplicationConnection

        self._conn = connect_postgres(self.db, connection_factory=LogicalReplicationConnection)
        self._cursor = self._conn.cursor()
        options = {"proto_version": "1", "publication_names": self._publication}
        if self.binary:
            options["binary"] = "true"
        try:
            self._cursor.start_replication(slot_name=self.slot, decode=False, options=options)
        except psycopg2.errors.ObjectInUse as exc:
            self._conn.close()
            raise self._locked("?") from exc
        except psycopg2.Error as exc:
            self._conn.close()
            reason = " ".join(str(exc).split())  # the server's message and DETAIL, one line
            raise OutboxError(
                f"cannot stream slot {self.slot} from {self.db.masked}: {reason}"
            ) from exc

    async def close(self) -> None:
        if self._cursor is not None and not self._cursor.closed:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._cursor.fileno())
        for conn in (self._conn, self._sql):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self._conn = self._cursor = self._sql = None

    # -- reading -------------------------------------------------------------------------------

    async def next_change(self, timeout: float) -> Change | None:
        deadline = time.monotonic() + timeout
        drained = 0
        while True:
            message = self._read()
            drained += 1
            if drained % 256 == 0:
                await asyncio.sleep(0)  # a long backlog: let the publishers in flight run
            if message is None:
                if self._ready_lsn:
                    return self._take()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._readable.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._readable.wait(), timeout=min(remaining, 1.0))
                continue
            self._handle(decode_message(message.payload))
            if self._ready_lsn and len(self._ready) >= self.batch_rows and self._txn is None:
                return self._take()

    def _read(self) -> Any:
        with self._connection_errors():
            return self._cursor.read_message()

    @contextlib.contextmanager
    def _connection_errors(self) -> Iterator[None]:
        """psycopg2 errors on the replication or health connection: the database went away."""
        import psycopg2

        try:
            yield
        except psycopg2.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DatabaseUnavailableError(
                f"lost the replication stream of slot {self.slot} from {self.db.masked}: "
                f"{first}; the relay resumes from the slot's confirmed position"
            ) from exc

    def _handle(self, message: Any) -> None:
        if isinstance(message, Begin):
            self._txn = []
        elif isinstance(message, Relation):
            self._relations[message.oid] = message
        elif isinstance(message, Insert):
            row = self._row(message)
            if row is not None and self._txn is not None:
                self._txn.append(row)
        elif isinstance(message, Commit):
            self._ready.extend(self._txn or [])
            self._txn = None
            self._ready_lsn = message.end_lsn
            self._ready_time = message.commit_time

    def _row(self, insert: Insert) -> OutboxRow | None:
        relation = self._relations.get(insert.relation_oid)
        if relation is None:
            raise OutboxError(f"pgoutput Insert for unknown relation {insert.relation_oid}")
        if relation.name != self.table:
            return None
        values = {
            column.name: to_python(kind, raw, column.type_oid)
            for column, (kind, raw) in zip(relation.columns, insert.values, strict=True)
        }
        return OutboxRow(
            id=str(values.get("id")),
            aggregatetype=str(values.get("aggregatetype") or ""),
            aggregateid=str(values.get("aggregateid") or ""),
            type=str(values.get("type") or ""),
            payload=values.get("payload"),
            headers=values.get("headers"),
            created_at=values.get("created_at"),
        )

    def _take(self) -> Change:
        change = Change(self._ready, position=self._ready_lsn, committed_at=self._ready_time)
        self._handed_out = self._ready_lsn
        self._ready = []
        self._ready_lsn = 0
        self._ready_time = None
        return change

    # -- confirming ----------------------------------------------------------------------------

    async def confirm(self, change: Change) -> None:
        lsn = int(change.position)
        with self._connection_errors():
            self._cursor.send_feedback(flush_lsn=lsn, force=True)
        self._confirmed = max(self._confirmed, lsn)
        now = time.monotonic()
        if change.rows and now - self._last_progress >= 1.0:
            self._last_progress = now
            try:  # progress is for `status` only: the slot is the position of record
                await asyncio.to_thread(self._store_progress, lsn, change)
            except Exception as exc:
                log.warning("recording relay progress failed", slot=self.slot, error=str(exc))
        await self._maybe_check_health()

    def _store_progress(self, lsn: int, change: Change) -> None:
        with self._sql.cursor() as cur:
            cur.execute(
                f'INSERT INTO "{OFFSETS_TABLE}" (relay, position, relayed, last_created_at, '
                "updated_at) VALUES (%s, %s, %s, %s, now()) ON CONFLICT (relay) DO UPDATE SET "
                "position = EXCLUDED.position, relayed = "
                f'"{OFFSETS_TABLE}".relayed + EXCLUDED.relayed, '
                "last_created_at = EXCLUDED.last_created_at, updated_at = now()",
                (self.name, format_lsn(lsn), len(change.rows), change.rows[-1].created_at),
            )

    async def heartbeat(self) -> None:
        """Idle: confirm the server's WAL end (nothing is pending) and ask for a fresh one."""
        idle = self._txn is None and not self._ready_lsn and self._handed_out <= self._confirmed
        if idle:
            wal_end = int(self._cursor.wal_end or 0)
            flush = wal_end if wal_end > self._confirmed else 0
            with self._connection_errors():
                self._cursor.send_feedback(flush_lsn=flush, reply=True, force=True)
            self._confirmed = max(self._confirmed, flush)
        await self._maybe_check_health()

    async def _maybe_check_health(self) -> None:
        now = time.monotonic()
        if now - self._last_health < self.health_interval:
            return
        self._last_health = now
        with self._connection_errors():
            retained = await asyncio.to_thread(self._retained_wal)
        self.retained_wal = retained
        RETAINED_WAL.labels(self.slot).set(retained)
        if retained > self.wal_warning_bytes:
            log.warning(
                "replication slot retains a lot of WAL; is the broker keeping up?",
                slot=self.slot,
                retained_bytes=retained,
                threshold_bytes=self.wal_warning_bytes,
            )

    def _retained_wal(self) -> int:
        with self._sql.cursor() as cur:
            cur.execute(_SLOT_QUERY, (self.slot,))
            found = cur.fetchone()
        return int(found[3] or 0) if found else 0


def _when(moment: Any) -> str:
    return moment.isoformat() if isinstance(moment, datetime) else "unknown"


def postgres_status(url: str, table: str = "outbox", slot: str = DEFAULT_SLOT) -> dict[str, Any]:
    """Slot health, confirmed position and lag of the PostgreSQL relay of ``table``."""
    import psycopg2.errors

    db = DatabaseURL.parse(url)
    check_identifier(table)
    conn = connect_postgres(db)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(_SLOT_QUERY, (slot,))
            found = cur.fetchone()
            cur.execute(
                f'SELECT position, relayed, last_created_at, updated_at FROM "{OFFSETS_TABLE}" '
                "WHERE relay = %s",
                (f"postgres:{slot}",),
            )
            progress = cur.fetchone()
            last = progress[2] if progress else None
            cur.execute(
                f'SELECT COUNT(*), EXTRACT(EPOCH FROM now() - MIN(created_at)) FROM "{table}" '
                "WHERE %s::timestamptz IS NULL OR created_at > %s::timestamptz",
                (last, last),
            )
            pending, lag = cur.fetchone()
    except psycopg2.errors.UndefinedTable as exc:
        raise OutboxMissingError.no_table(db.masked, table, exc) from exc
    finally:
        conn.close()
    return {
        "database": db.masked,
        "table": table,
        "slot": slot,
        "slot_exists": found is not None,
        "slot_active": bool(found and found[0]),
        "active_pid": found[1] if found else None,
        "position": found[2] if found else None,
        "retained_wal_bytes": int(found[3] or 0) if found else None,
        "relayed": int(progress[1]) if progress else 0,
        "updated_at": progress[3].isoformat() if progress else None,
        "lag_events": int(pending),
        "lag_seconds": round(float(lag or 0.0), 3),
        "healthy": found is not None,
    }
