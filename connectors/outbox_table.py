"""The outbox table, per dialect, and what change data capture needs around it.

The columns are Debezium's outbox columns (``id``, ``aggregatetype``, ``aggregateid``, ``type``,
``payload``) plus ``headers`` and ``created_at``. SQLite adds ``seq``, an AUTOINCREMENT cursor
(SQLite commits one writer at a time, so ``seq`` grows in commit order and polling on it is exact).
Every dialect also gets ``choreo_outbox_offsets``: the relay's confirmed position (the cursor for
SQLite and the binlog position for MySQL; progress for ``status`` on PostgreSQL, whose position
of record is the replication slot).

:func:`init_outbox` creates all of it, plus a publication and a logical replication slot on
PostgreSQL, after checking the server settings and saying exactly what to change.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from connectors.db import (
    check_mysql_settings,
    check_postgres_settings,
    connect_mysql,
    connect_postgres,
    connect_sqlite,
)
from connectors.dburl import DatabaseURL, check_identifier
from connectors.errors import CDCSettingsError, OutboxConfigError

__all__ = [
    "DEFAULT_SLOT",
    "DEFAULT_TABLE",
    "OFFSETS_TABLE",
    "InitReport",
    "PayloadType",
    "ensure_slot",
    "init_outbox",
    "publication_name",
]

DEFAULT_TABLE = "outbox"
DEFAULT_SLOT = "choreo_outbox"
OFFSETS_TABLE = "choreo_outbox_offsets"

PayloadType = Literal["json", "text", "bytes"]

_PAYLOAD_TYPES: dict[str, dict[str, str]] = {
    "postgresql": {"json": "jsonb", "text": "text", "bytes": "bytea"},
    "mysql": {"json": "JSON", "text": "LONGTEXT", "bytes": "LONGBLOB"},
    "sqlite": {"json": "TEXT", "text": "TEXT", "bytes": "BLOB"},
}


def publication_name(table: str) -> str:
    """The PostgreSQL publication the relay reads for ``table``."""
    return f"choreo_outbox_{table}"[:63]


def _ddl(dialect: str, table: str, payload: PayloadType) -> list[str]:
    kind = _PAYLOAD_TYPES[dialect][payload]
    if dialect == "postgresql":
        return [
            f'CREATE TABLE IF NOT EXISTS "{table}" (id uuid PRIMARY KEY, '
            "aggregatetype varchar(255) NOT NULL, aggregateid varchar(255) NOT NULL, "
            f"type varchar(255) NOT NULL, payload {kind}, headers jsonb, "
            "created_at timestamptz NOT NULL DEFAULT now())",
            f'CREATE TABLE IF NOT EXISTS "{OFFSETS_TABLE}" (relay varchar(255) PRIMARY KEY, '
            "position text NOT NULL, relayed bigint NOT NULL DEFAULT 0, "
            "last_created_at timestamptz, updated_at timestamptz NOT NULL DEFAULT now())",
        ]
    if dialect == "mysql":
        return [
            f"CREATE TABLE IF NOT EXISTS `{table}` (id CHAR(36) NOT NULL PRIMARY KEY, "
            "aggregatetype VARCHAR(255) NOT NULL, aggregateid VARCHAR(255) NOT NULL, "
            f"type VARCHAR(255) NOT NULL, payload {kind} NULL, headers LONGTEXT NULL, "
            "created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB",
            f"CREATE TABLE IF NOT EXISTS `{OFFSETS_TABLE}` (relay VARCHAR(255) PRIMARY KEY, "
            "position TEXT NOT NULL, relayed BIGINT NOT NULL DEFAULT 0, "
            "last_created_at TIMESTAMP(6) NULL, "
            "updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB",
        ]
    return [
        f'CREATE TABLE IF NOT EXISTS "{table}" (seq INTEGER PRIMARY KEY AUTOINCREMENT, '
        "id TEXT NOT NULL UNIQUE, aggregatetype TEXT NOT NULL, aggregateid TEXT NOT NULL, "
        f"type TEXT NOT NULL, payload {kind}, headers TEXT, created_at TEXT NOT NULL "
        "DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
        f'CREATE TABLE IF NOT EXISTS "{OFFSETS_TABLE}" (relay TEXT PRIMARY KEY, '
        "position TEXT NOT NULL, relayed INTEGER NOT NULL DEFAULT 0, last_created_at TEXT, "
        "updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
    ]


@dataclasses.dataclass(slots=True)
class InitReport:
    """What :func:`init_outbox` created or found, for the CLI to print."""

    database: str
    table: str
    created: list[str] = dataclasses.field(default_factory=list)


def init_outbox(
    url: str,
    table: str = DEFAULT_TABLE,
    *,
    slot: str | None = DEFAULT_SLOT,
    payload: PayloadType = "json",
) -> InitReport:
    """Create the outbox table, the offsets table and what CDC needs; idempotent."""
    check_identifier(table)
    if slot:  # before anything is created
        check_identifier(slot, "slot")
    if payload not in _PAYLOAD_TYPES["sqlite"]:
        raise OutboxConfigError(f"payload type {payload!r} is not one of json, text, bytes")
    db = DatabaseURL.parse(url)
    report = InitReport(db.masked, table)
    if db.dialect == "postgresql":
        _init_postgres(db, table, slot, payload, report)
    elif db.dialect == "mysql":
        _init_mysql(db, table, payload, report)
    else:
        conn = connect_sqlite(db)
        try:
            for statement in _ddl("sqlite", table, payload):
                conn.execute(statement)
        finally:
            conn.close()
        report.created += [f"table {table}", f"table {OFFSETS_TABLE}"]
    return report


def _init_postgres(
    db: DatabaseURL, table: str, slot: str | None, payload: PayloadType, report: InitReport
) -> None:
    conn = connect_postgres(db)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            check_postgres_settings(cur, db)
            for statement in _ddl("postgresql", table, payload):
                cur.execute(statement)
            report.created += [f"table {table}", f"table {OFFSETS_TABLE}"]
            publication = publication_name(table)
            cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,))
            if cur.fetchone() is None:
                cur.execute(
                    f'CREATE PUBLICATION "{publication}" FOR TABLE "{table}" '
                    "WITH (publish = 'insert')"
                )
            report.created.append(f"publication {publication}")
            if slot:
                ensure_slot(cur, check_identifier(slot, "slot"), db)
                report.created.append(f"replication slot {slot}")
    finally:
        conn.close()


def ensure_slot(cursor: Any, slot: str, db: DatabaseURL) -> bool:
    """Create the pgoutput logical slot ``slot`` if missing; whether it was created."""
    import psycopg2.errors

    cursor.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    if cursor.fetchone() is not None:
        return False
    try:
        cursor.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise CDCSettingsError(
            f"user {db.user or '(default)'} may not create replication slot {slot} on "
            f"{db.masked} ({str(exc).strip()}): run ALTER ROLE {db.user or '<user>'} REPLICATION "
            "as a superuser, or create the outbox as one (choreo outbox init)"
        ) from exc
    return True


def _init_mysql(db: DatabaseURL, table: str, payload: PayloadType, report: InitReport) -> None:
    conn = connect_mysql(db)
    try:
        with conn.cursor() as cur:
            check_mysql_settings(cur, db)
            for statement in _ddl("mysql", table, payload):
                cur.execute(statement)
            from connectors.relay_mysql import default_name, record_start_position

            record_start_position(cur, default_name(db, table))
        report.created += [f"table {table}", f"table {OFFSETS_TABLE}"]
    finally:
        conn.close()
