"""Add an outbox event inside the caller's own transaction.

The helpers never commit: the row becomes visible (and is relayed) exactly when the caller's
transaction commits, and disappears with it on rollback. One function per calling style::

    add_event(conn, aggregatetype="order", aggregateid="42", type="order.placed",
              payload={"total": 10})            # sqlite3, psycopg2, psycopg 3, PyMySQL,
                                                # SQLAlchemy Connection or Session
    await add_event_async(conn, ...)            # psycopg 3 AsyncConnection,
                                                # SQLAlchemy AsyncConnection or AsyncSession

``deliver_at=`` (an aware datetime) or ``delay=`` (seconds or a timedelta, from now) hold the
event back: the row's headers carry ``deliverat`` and the relay publishes it with that delivery
time (see ``docs/outbox.md``).

``delete_after=True`` deletes the row again in the same transaction: the table stays empty while
the CDC relays (PostgreSQL, MySQL) still see the insert in the log. The SQLite relay polls the
table, so it refuses that mode.

Inside an active OpenTelemetry span, the row's ``headers`` get its ``traceparent`` (unless they
name one): the relay's publish then continues the trace of the transaction that wrote the row.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from broker.delay import DELIVER_AT
from broker.delay import deliver_at as delivery_time
from broker.errors import ConfigurationError
from broker.tracing import current_traceparent
from connectors.dburl import check_identifier
from connectors.errors import OutboxConfigError
from connectors.outbox_table import DEFAULT_TABLE

__all__ = ["OutboxRecord", "add_event", "add_event_async"]


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One outbox row as the writer inserts it (payload and headers already serialised)."""

    id: str
    aggregatetype: str
    aggregateid: str
    type: str
    payload: str | bytes | None
    headers: str | None

    @classmethod
    def build(
        cls,
        *,
        aggregatetype: str,
        aggregateid: str | int,
        type: str,
        payload: Any = None,
        headers: Mapping[str, Any] | None = None,
        id: str | uuid.UUID | None = None,
        deliver_at: datetime | None = None,
        delay: float | timedelta | None = None,
    ) -> OutboxRecord:
        if not aggregatetype or not type:
            raise OutboxConfigError("an outbox event needs a non-empty aggregatetype and type")
        traceparent = current_traceparent()
        if traceparent is not None and not (headers and "traceparent" in headers):
            headers = {**(headers or {}), "traceparent": traceparent}  # the writer's trace
        if deliver_at is not None or delay is not None:
            try:
                due = delivery_time(delay, deliver_at)
            except ConfigurationError as exc:
                raise OutboxConfigError(str(exc)) from exc
            headers = {**(headers or {}), DELIVER_AT: due}
        if payload is None or isinstance(payload, bytes | str):
            body: str | bytes | None = payload
        else:
            body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)
        return cls(
            id=str(id or uuid.uuid4()),
            aggregatetype=aggregatetype,
            aggregateid=str(aggregateid),
            type=type,
            payload=body,
            headers=json.dumps(dict(headers), separators=(",", ":")) if headers else None,
        )

    def params(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.aggregatetype,
            self.aggregateid,
            self.type,
            self.payload,
            self.headers,
        )


_COLUMNS = "id, aggregatetype, aggregateid, type, payload, headers"


def _statements(table: str, style: str, quote: str) -> tuple[str, str]:
    check_identifier(table)
    mark = {"qmark": "?", "format": "%s"}.get(style)
    if mark is not None:
        values = ", ".join([mark] * 6)
        delete_where = mark
    else:  # SQLAlchemy named parameters
        values = ":id, :aggregatetype, :aggregateid, :type, :payload, :headers"
        delete_where = ":id"
    name = f"{quote}{table}{quote}"
    return (
        f"INSERT INTO {name} ({_COLUMNS}) VALUES ({values})",
        f"DELETE FROM {name} WHERE id = {delete_where}",
    )


def _kind(conn: Any) -> str:
    module = type(conn).__module__
    for prefix, kind in (
        ("sqlite3", "sqlite3"),
        ("psycopg2", "psycopg2"),
        ("psycopg", "psycopg"),
        ("pymysql", "pymysql"),
        ("sqlalchemy", "sqlalchemy"),
    ):
        if module == prefix or module.startswith(prefix + "."):
            return kind
    raise OutboxConfigError(
        f"add_event does not know connections of type {type(conn).__module__}."
        f"{type(conn).__name__}; pass a sqlite3, psycopg2, psycopg, PyMySQL or SQLAlchemy "
        "connection (or session)"
    )


def add_event(
    conn: Any,
    *,
    aggregatetype: str,
    aggregateid: str | int,
    type: str,
    payload: Any = None,
    headers: Mapping[str, Any] | None = None,
    id: str | uuid.UUID | None = None,
    table: str = DEFAULT_TABLE,
    delete_after: bool = False,
    deliver_at: datetime | None = None,
    delay: float | timedelta | None = None,
) -> str:
    """Insert one outbox row in ``conn``'s current transaction; returns the event id."""
    record = OutboxRecord.build(
        aggregatetype=aggregatetype,
        aggregateid=aggregateid,
        type=type,
        payload=payload,
        headers=headers,
        id=id,
        deliver_at=deliver_at,
        delay=delay,
    )
    kind = _kind(conn)
    if kind == "sqlalchemy":
        _add_sqlalchemy(conn, record, table, delete_after)
        return record.id
    if kind == "sqlite3":
        if delete_after:
            raise OutboxConfigError(
                "delete_after=True needs a CDC relay (PostgreSQL or MySQL): the SQLite relay "
                "polls the table and would never see a deleted row"
            )
        insert, _ = _statements(table, "qmark", '"')
        conn.execute(insert, record.params())
        return record.id
    quote = "`" if kind == "pymysql" else '"'
    insert, delete = _statements(table, "format", quote)
    with conn.cursor() as cur:
        cur.execute(insert, record.params())
        if delete_after:
            cur.execute(delete, (record.id,))
    return record.id


def _sqlalchemy_statements(conn: Any, table: str, delete_after: bool) -> tuple[Any, Any]:
    """The INSERT and DELETE for a SQLAlchemy connection or session (sync or async)."""
    from sqlalchemy import text

    dialect = conn.get_bind().dialect.name if hasattr(conn, "get_bind") else conn.dialect.name
    if delete_after and dialect == "sqlite":
        raise OutboxConfigError("delete_after=True needs a CDC relay (PostgreSQL or MySQL)")
    insert, delete = _statements(table, "named", "`" if dialect in ("mysql", "mariadb") else '"')
    return text(insert), text(delete)


def _add_sqlalchemy(conn: Any, record: OutboxRecord, table: str, delete_after: bool) -> None:
    insert, delete = _sqlalchemy_statements(conn, table, delete_after)
    conn.execute(insert, dataclasses.asdict(record))
    if delete_after:
        conn.execute(delete, {"id": record.id})


async def add_event_async(
    conn: Any,
    *,
    aggregatetype: str,
    aggregateid: str | int,
    type: str,
    payload: Any = None,
    headers: Mapping[str, Any] | None = None,
    id: str | uuid.UUID | None = None,
    table: str = DEFAULT_TABLE,
    delete_after: bool = False,
    deliver_at: datetime | None = None,
    delay: float | timedelta | None = None,
) -> str:
    """:func:`add_event` for psycopg 3 ``AsyncConnection`` and SQLAlchemy async connections."""
    record = OutboxRecord.build(
        aggregatetype=aggregatetype,
        aggregateid=aggregateid,
        type=type,
        payload=payload,
        headers=headers,
        id=id,
        deliver_at=deliver_at,
        delay=delay,
    )
    kind = _kind(conn)
    if kind == "sqlalchemy":
        insert_sql, delete_sql = _sqlalchemy_statements(conn, table, delete_after)
        await conn.execute(insert_sql, dataclasses.asdict(record))
        if delete_after:
            await conn.execute(delete_sql, {"id": record.id})
        return record.id
    if kind != "psycopg":
        raise OutboxConfigError(
            f"add_event_async takes a psycopg AsyncConnection or a SQLAlchemy async connection "
            f"or session, not {conn.__class__.__name__}; use add_event for blocking connections"
        )
    insert, delete = _statements(table, "format", '"')
    async with conn.cursor() as cur:
        await cur.execute(insert, record.params())
        if delete_after:
            await cur.execute(delete, (record.id,))
    return record.id
