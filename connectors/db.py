"""Connections to the application's database, and the server settings change data capture needs.

Each ``connect_*`` translates the driver's connection errors into
:class:`~connectors.errors.DatabaseUnavailableError` naming the database (password masked); each
``check_*_settings`` raises :class:`~connectors.errors.CDCSettingsError` saying what to change.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from broker.sqlstore import use_wal
from connectors.dburl import DatabaseURL
from connectors.errors import CDCSettingsError, DatabaseUnavailableError

__all__ = [
    "check_mysql_settings",
    "check_postgres_settings",
    "connect_mysql",
    "connect_postgres",
    "connect_sqlite",
]


def connect_postgres(db: DatabaseURL, **extra: Any) -> Any:
    """A psycopg2 connection (``extra`` e.g. ``connection_factory``), errors translated."""
    import psycopg2

    try:
        return psycopg2.connect(**db.psycopg_kwargs(), **extra)
    except psycopg2.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailableError(
            f"cannot connect to PostgreSQL at {db.masked}: {first}; check the host, port, "
            "user and that the server is running"
        ) from exc


def connect_mysql(db: DatabaseURL, *, database: bool = True) -> Any:
    """A PyMySQL connection in autocommit mode, errors translated."""
    import pymysql

    try:
        return pymysql.connect(
            **db.pymysql_kwargs(),
            database=db.database if database else None,
            autocommit=True,
            charset="utf8mb4",
        )
    except pymysql.err.MySQLError as exc:
        raise DatabaseUnavailableError(
            f"cannot connect to MySQL/MariaDB at {db.masked}: {exc.args[-1] if exc.args else exc}"
            "; check the host, port, user and that the server is running"
        ) from exc


def connect_sqlite(db: DatabaseURL) -> sqlite3.Connection:
    """A sqlite3 connection in autocommit mode with a busy timeout and WAL journal."""
    try:
        conn = sqlite3.connect(db.database, timeout=30.0, isolation_level=None)
        use_wal(conn)
    except sqlite3.Error as exc:
        raise DatabaseUnavailableError(f"cannot open SQLite database {db.url}: {exc}") from exc
    return conn


# -- settings checks ----------------------------------------------------------------------------


def check_postgres_settings(cursor: Any, db: DatabaseURL) -> None:
    """Raise :class:`CDCSettingsError` unless logical replication is possible."""
    cursor.execute("SHOW wal_level")
    level = cursor.fetchone()[0]
    if level != "logical":
        raise CDCSettingsError(
            f"PostgreSQL at {db.masked} has wal_level={level}, the outbox relay needs logical: "
            "run ALTER SYSTEM SET wal_level = logical and restart PostgreSQL"
        )
    cursor.execute("SHOW max_replication_slots")
    if int(cursor.fetchone()[0]) < 1:
        raise CDCSettingsError(
            f"PostgreSQL at {db.masked} has max_replication_slots=0: run ALTER SYSTEM SET "
            "max_replication_slots = 10 and restart PostgreSQL"
        )


_MYSQL_REQUIRED = (
    ("log_bin", "ON", "log_bin = mysql-bin"),
    ("binlog_format", "ROW", "binlog_format = ROW"),
    ("binlog_row_image", "FULL", "binlog_row_image = FULL"),
)


def check_mysql_settings(cursor: Any, db: DatabaseURL) -> None:
    """Raise :class:`CDCSettingsError` naming the my.cnf lines when the binlog is unusable."""
    cursor.execute("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@server_id")
    log_bin, binlog_format, row_image, server_id = cursor.fetchone()
    actual = {
        "log_bin": "ON" if str(log_bin) in ("1", "ON") else "OFF",
        "binlog_format": str(binlog_format).upper(),
        "binlog_row_image": str(row_image).upper(),
    }
    wrong = [(name, line) for name, want, line in _MYSQL_REQUIRED if actual[name] != want]
    if int(server_id) == 0:
        wrong.append(("server_id", "server_id = 1"))
    if wrong:
        found = ", ".join(f"{name}={actual.get(name, server_id)}" for name, _ in wrong)
        lines = "; ".join(line for _, line in wrong)
        raise CDCSettingsError(
            f"MySQL/MariaDB at {db.masked} cannot feed the outbox relay ({found}): put "
            f"[mysqld] {lines} in my.cnf and restart the server"
        )
