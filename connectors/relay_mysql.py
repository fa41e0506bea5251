"""The MySQL/MariaDB relay: the row binlog, read with ``mysql-replication``.

``pymysqlreplication`` is a blocking client, so a reader thread follows the binlog and hands
committed transactions (the ``WriteRowsEvent`` rows of the outbox table between a GTID/BEGIN and
its ``XidEvent``) to the event loop through a bounded queue (the thread blocks when the relay
falls behind). The position after each commit (binlog file/position, plus the MariaDB GTID) is
stored in ``choreo_outbox_offsets`` in the same database, only after the broker accepted every
row up to it. On restart the relay resumes from there, by file/position or by GTID
(``resume="gtid"``, MariaDB). ``choreo outbox init`` records the starting position, so rows
written before the first relay run are not missed. A ``GET_LOCK`` keeps a second relay out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import re
import threading
import time
import zlib
from datetime import UTC, datetime
from typing import Any, Literal

from broker.observability import get_logger
from connectors.db import check_mysql_settings, connect_mysql
from connectors.dburl import DatabaseURL, check_identifier
from connectors.errors import (
    CDCSettingsError,
    DatabaseUnavailableError,
    OutboxError,
    OutboxMissingError,
    PositionLostError,
    RelayLockedError,
)
from connectors.outbox_table import OFFSETS_TABLE
from connectors.relay import Change
from connectors.routing import OutboxRow

__all__ = ["MySQLSource", "mysql_status", "record_start_position"]

log = get_logger("connectors.mysql")

_STOP = object()
_ER_MASTER_FATAL_READING_BINLOG = 1236
_CONNECTION_LOST = frozenset((2003, 2006, 2013))  # cannot connect, gone away, lost

# an INSERT/REPLACE logged as SQL (binlog_format=STATEMENT or MIXED in the writing session)
_STATEMENT_INSERT = re.compile(
    r"\s*(?:/\*.*?\*/\s*)*(?:INSERT|REPLACE)\b"
    r"(?:\s+(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|IGNORE)\b)*(?:\s+INTO\b)?\s*"
    r"(?:`(?P<first>[^`]+)`|(?P<first_bare>\w+))"
    r"(?:\s*\.\s*(?:`(?P<second>[^`]+)`|(?P<second_bare>\w+)))?",
    re.IGNORECASE | re.DOTALL,
)


def default_name(db: DatabaseURL, table: str) -> str:
    return f"mysql:{db.database}.{table}"


def _current_position(cur: Any) -> dict[str, Any]:
    cur.execute("SHOW MASTER STATUS")
    found = cur.fetchone()
    if not found:
        raise CDCSettingsError("SHOW MASTER STATUS is empty: the binlog is off (set log_bin)")
    cur.execute("SELECT @@GLOBAL.gtid_binlog_pos")
    gtid = cur.fetchone()[0] if cur.rowcount else ""
    return {"file": found[0], "pos": int(found[1]), "gtid": gtid or ""}


def record_start_position(cur: Any, relay: str) -> None:
    """Store the current binlog position for ``relay`` unless it has one already."""
    position = _current_position(cur)
    cur.execute(
        f"INSERT IGNORE INTO `{OFFSETS_TABLE}` (relay, position) VALUES (%s, %s)",
        (relay, json.dumps(position)),
    )


def _as_text(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    if isinstance(value, dict):  # MySQL JSON decoded by the library, possibly with bytes keys
        return json.dumps({_as_text(k): v for k, v in value.items()}, default=_as_text)
    return value


def _pymysql_connect(**settings: Any) -> Any:
    """PyMySQL connect for mysql-replication, which still passes the deprecated ``db=``."""
    import pymysql

    if "db" in settings:
        settings["database"] = settings.pop("db")
    if "passwd" in settings:
        settings["password"] = settings.pop("passwd")
    return pymysql.connect(**settings)


class MySQLSource:
    """Committed outbox rows from the MySQL/MariaDB row binlog."""

    def __init__(
        self,
        url: str,
        *,
        table: str = "outbox",
        name: str | None = None,
        server_id: int | None = None,
        resume: Literal["position", "gtid"] = "position",
        batch_rows: int = 1000,
        idle_store_interval: float = 10.0,
    ) -> None:
        self.db = DatabaseURL.parse(url)
        self.table = check_identifier(table)
        self.name = name or default_name(self.db, table)
        self.server_id = server_id or 100_000 + zlib.crc32(self.name.encode()) % 1_000_000
        self.resume = resume
        self.batch_rows = batch_rows
        self.idle_store_interval = idle_store_interval
        self.position: dict[str, Any] = {}
        self._ctl: Any = None
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=20_000)
        self._wake = asyncio.Event()
        self._stopping = threading.Event()
        self._txn: list[OutboxRow] = []
        self._last_store = 0.0
        self._columns: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        self._stopping.clear()  # also when reopened after a lost connection
        self._queue = queue.Queue(maxsize=20_000)
        self._txn = []
        self._stream = None
        try:
            await asyncio.to_thread(self._prepare)
        except BaseException:
            await self.close()
            raise
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._follow, args=(loop,), name=f"choreo-binlog-{self.name}", daemon=True
        )
        self._thread.start()

    def _prepare(self) -> None:
        self._columns = self._column_names()
        self._ctl = connect_mysql(self.db)
        with self._ctl.cursor() as cur:
            check_mysql_settings(cur, self.db)
            # this session holds the relay lock: never let the server drop it as idle
            cur.execute("SET SESSION wait_timeout = 31536000")
            cur.execute("SELECT GET_LOCK(%s, 0)", (f"choreo_outbox:{self.name}",))
            if cur.fetchone()[0] != 1:
                raise RelayLockedError(
                    f"another relay is already reading the binlog for {self.name} on "
                    f"{self.db.masked}; stop it first (one relay per outbox table)"
                )
            try:  # a --table with a typo would follow the binlog for nothing, forever
                cur.execute(f"SELECT 1 FROM `{self.table}` LIMIT 0")
                cur.execute(
                    f"SELECT position FROM `{OFFSETS_TABLE}` WHERE relay = %s", (self.name,)
                )
            except Exception as exc:
                reason = exc.args[-1] if exc.args else exc
                raise OutboxMissingError.no_table(self.db.masked, self.table, reason) from exc
            found = cur.fetchone()
            if found is None:
                log.warning(
                    "no stored binlog position; starting at the current one", relay=self.name
                )
                record_start_position(cur, self.name)
                cur.execute(
                    f"SELECT position FROM `{OFFSETS_TABLE}` WHERE relay = %s", (self.name,)
                )
                found = cur.fetchone()
        self.position = json.loads(found[0])

    def _column_names(self) -> list[str]:
        """Column names by position, for servers whose binlog carries no column metadata."""
        conn = connect_mysql(self.db)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
                    "AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                    (self.db.database, self.table),
                )
                return [str(r[0]) for r in cur.fetchall()]
        finally:
            conn.close()

    def _stream_options(self) -> dict[str, Any]:
        from pymysqlreplication.event import GtidEvent, MariadbGtidEvent, QueryEvent, XidEvent
        from pymysqlreplication.row_event import WriteRowsEvent

        options: dict[str, Any] = {
            "connection_settings": self.db.pymysql_kwargs(),
            "server_id": self.server_id,
            "blocking": True,
            "only_events": [WriteRowsEvent, XidEvent, MariadbGtidEvent, GtidEvent, QueryEvent],
            "only_schemas": [self.db.database],
            "only_tables": [self.table],
            "slave_heartbeat": 1.0,
            "pymysql_wrapper": _pymysql_connect,
        }
        if self.resume == "gtid" and self.position.get("gtid"):
            options.update(auto_position=self.position["gtid"], is_mariadb=True)
        else:
            options.update(
                resume_stream=True, log_file=self.position["file"], log_pos=self.position["pos"]
            )
        return options

    def _follow(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reader thread: binlog events -> the queue, as ('rows', ...) and ('commit', ...)."""
        from pymysqlreplication import BinLogStreamReader
        from pymysqlreplication.event import GtidEvent, MariadbGtidEvent, QueryEvent, XidEvent

        gtid = self.position.get("gtid", "")
        try:
            self._stream = BinLogStreamReader(**self._stream_options())
            for event in self._stream:
                if self._stopping.is_set():
                    break
                if isinstance(event, MariadbGtidEvent | GtidEvent):
                    gtid = event.gtid
                elif isinstance(event, XidEvent):
                    position = {"file": self._stream.log_file, "pos": self._stream.log_pos}
                    item = ("commit", {**position, "gtid": gtid}, event.timestamp)
                    self._put(loop, item)
                elif isinstance(event, QueryEvent):
                    unreadable = self._statement_row(event)
                    if unreadable is not None:
                        self._put(loop, ("unreadable", unreadable))
                else:
                    self._put(loop, ("rows", [r["values"] for r in event.rows]))
        except Exception as exc:
            if not self._stopping.is_set():
                self._put(loop, ("error", exc))

    def _statement_row(self, event: Any) -> OutboxRow | None:
        """An insert into the outbox logged as SQL: the binlog has no row values to relay, so
        it becomes a row to dead-letter (its SQL as payload) instead of being skipped."""
        query = str(event.query)
        if query[:6].upper() in ("BEGIN", "COMMIT"):
            return None
        found = _STATEMENT_INSERT.match(query)
        if found is None:
            return None
        first = found["first"] or found["first_bare"]
        second = found["second"] or found["second_bare"]
        schema, table = (first, second) if second else (_as_text(event.schema), first)
        if (str(schema).lower(), table.lower()) != (self.db.database.lower(), self.table.lower()):
            return None
        where = f"{self._stream.log_file}:{event.packet.log_pos}"
        return OutboxRow(
            id=f"{self.name}:{where}",
            aggregatetype="",
            aggregateid="",
            type="",
            payload=query,
            unreadable=(
                f"rows were written to {self.table} in statement format at binlog {where} "
                "(binlog_format STATEMENT or MIXED in the writing session): the binlog holds "
                "their SQL, not their values; insert them again with binlog_format=ROW"
            ),
        )

    def _put(self, loop: asyncio.AbstractEventLoop, item: Any) -> None:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                break
            except queue.Full:
                continue
        with contextlib.suppress(RuntimeError):  # the loop may be closed at shutdown
            loop.call_soon_threadsafe(self._wake.set)

    async def close(self) -> None:
        self._stopping.set()
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
            self._thread = None
        if self._ctl is not None:
            with contextlib.suppress(Exception):
                self._ctl.close()
            self._ctl = None

    # -- reading -------------------------------------------------------------------------------

    async def next_change(self, timeout: float) -> Change | None:
        deadline = time.monotonic() + timeout
        rows: list[OutboxRow] = []
        committed: tuple[dict[str, Any], int] | None = None
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if committed is not None:
                    return self._change(rows, *committed)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(remaining, 0.5))
                continue
            if item[0] == "error":
                raise self._read_error(item[1]) from item[1]
            if item[0] == "rows":
                self._txn.extend(self._row(values) for values in item[1])
                continue
            if item[0] == "unreadable":
                self._txn.append(item[1])
                continue
            rows.extend(self._txn)
            self._txn = []
            committed = (item[1], item[2])
            if len(rows) >= self.batch_rows:
                return self._change(rows, *committed)

    def _read_error(self, exc: BaseException) -> OutboxError:
        code = exc.args[0] if exc.args else None
        if code in _CONNECTION_LOST:
            return DatabaseUnavailableError(
                f"lost the binlog stream of {self.db.masked}: {exc.args[-1]}; the relay "
                "resumes from the stored position"
            )
        if code != _ER_MASTER_FATAL_READING_BINLOG:
            return OutboxError(f"reading the binlog of {self.db.masked} failed: {exc}")
        where = f"{self.position.get('file')}:{self.position.get('pos')}"
        if self.resume == "gtid" and self.position.get("gtid"):
            where = f"GTID {self.position['gtid']}"
        return PositionLostError(
            f"the binlog position {self.name} resumes from ({where}) is not on {self.db.masked} "
            f"any more ({exc.args[-1]}): binlogs were purged while the relay was behind or "
            "stopped, and the rows in them cannot be read; follow docs/outbox.md, 'A purged "
            "binlog' (reset the position, re-insert the rows created since)"
        )

    def _row(self, values: dict[str, Any]) -> OutboxRow:
        if "id" not in values and "UNKNOWN_COL0" in values:  # binlog_row_metadata=MINIMAL
            values = {
                name: values.get(f"UNKNOWN_COL{index}") for index, name in enumerate(self._columns)
            }
        created = values.get("created_at")
        if isinstance(created, datetime) and created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return OutboxRow(
            id=str(_as_text(values.get("id"))),
            aggregatetype=str(_as_text(values.get("aggregatetype")) or ""),
            aggregateid=str(_as_text(values.get("aggregateid")) or ""),
            type=str(_as_text(values.get("type")) or ""),
            payload=_as_text(values.get("payload")),
            headers=_as_text(values.get("headers")),
            created_at=created if isinstance(created, datetime) else None,
        )

    def _change(self, rows: list[OutboxRow], position: dict[str, Any], ts: int) -> Change:
        return Change(rows, position=position, committed_at=datetime.fromtimestamp(ts, UTC))

    # -- confirming ----------------------------------------------------------------------------

    async def confirm(self, change: Change) -> None:
        self.position = dict(change.position)
        now = time.monotonic()
        if not change.rows and now - self._last_store < self.idle_store_interval:
            return  # our own offset writes show up as empty commits: do not chase them
        self._last_store = now
        last = change.rows[-1].created_at if change.rows else None
        try:
            await asyncio.to_thread(self._store, len(change.rows), last)
        except Exception as exc:
            raise DatabaseUnavailableError(
                f"cannot store the binlog position of {self.name} in {self.db.masked}: {exc}; "
                "the relay resumes from the last stored position"
            ) from exc

    def _store(self, count: int, last: datetime | None) -> None:
        with self._ctl.cursor() as cur:
            cur.execute(
                f"INSERT INTO `{OFFSETS_TABLE}` (relay, position, relayed, last_created_at) "
                "VALUES (%s, %s, %s, %s) ON DUPLICATE KEY UPDATE position = VALUES(position), "
                "relayed = relayed + VALUES(relayed), "
                "last_created_at = COALESCE(VALUES(last_created_at), last_created_at), "
                "updated_at = CURRENT_TIMESTAMP(6)",
                (
                    self.name,
                    json.dumps(self.position),
                    count,
                    last.replace(tzinfo=None) if last else None,
                ),
            )

    async def heartbeat(self) -> None:
        return None


def mysql_status(url: str, table: str = "outbox", name: str | None = None) -> dict[str, Any]:
    """Stored position, lag in events and seconds, and binlog settings of the MySQL relay."""
    import pymysql
    from pymysql.constants import ER

    db = DatabaseURL.parse(url)
    check_identifier(table)
    relay = name or default_name(db, table)
    conn = connect_mysql(db)
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT position, relayed, last_created_at, updated_at FROM `{OFFSETS_TABLE}` "
                "WHERE relay = %s",
                (relay,),
            )
            found = cur.fetchone()
            last = found[2] if found else None
            cur.execute(
                "SELECT COUNT(*), TIMESTAMPDIFF(MICROSECOND, MIN(created_at), "
                f"CURRENT_TIMESTAMP(6)) FROM `{table}` WHERE %s IS NULL OR created_at > %s",
                (last, last),
            )
            pending, lag_us = cur.fetchone()
            cur.execute("SELECT IS_USED_LOCK(%s)", (f"choreo_outbox:{relay}",))
            running = cur.fetchone()[0] is not None
            server = _current_position(cur)
    except pymysql.err.ProgrammingError as exc:
        if exc.args[0] != ER.NO_SUCH_TABLE:
            raise
        raise OutboxMissingError.no_table(db.masked, table, exc.args[-1]) from exc
    finally:
        conn.close()
    return {
        "database": db.masked,
        "table": table,
        "relay": relay,
        "position": json.loads(found[0]) if found else None,
        "server_position": server,
        "relayed": int(found[1]) if found else 0,
        "updated_at": found[3].isoformat() if found else None,
        "running": running,
        "lag_events": int(pending),
        "lag_seconds": round((lag_us or 0) / 1e6, 3),
        "healthy": found is not None,
    }
