"""PostgreSQL and MariaDB/MySQL for tests and benchmarks: the local servers, or the ones named by
``CHOREO_TEST_POSTGRES_URL`` / ``CHOREO_TEST_MYSQL_URL``, checked for what the outbox relays need.

These servers are not spawned: ``.ci/services.sh`` starts and configures them
(``.ci/postgres-setup.sh`` sets ``wal_level = logical``, ``.ci/mariadb-setup.sh`` the ROW binlog).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from devservers.common import ServerUnavailableError

__all__ = [
    "MYSQL_URL",
    "POSTGRES_URL",
    "check_mysql",
    "check_postgres",
    "connect_mysql",
    "connect_postgres",
]

POSTGRES_URL = os.environ.get(
    "CHOREO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("CHOREO_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


def connect_postgres(url: str = POSTGRES_URL) -> Any:
    """A psycopg2 connection to ``url`` (libpq reads the URL itself)."""
    import psycopg2

    return psycopg2.connect(url)


def connect_mysql(url: str = MYSQL_URL) -> Any:
    """A PyMySQL connection (not in autocommit mode) to ``mysql://user:pass@host:port/db``."""
    import pymysql

    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=parts.path.lstrip("/") or None,
        autocommit=False,
    )


def _settings(connect: Callable[[str], Any], url: str, name: str, query: str) -> tuple[Any, ...]:
    """The row ``query`` returns on the server at ``url``; unreachable raises."""
    try:
        conn = connect(url)
    except Exception as exc:
        raise ServerUnavailableError(
            f"{name} at {url} is unreachable ({exc!s:.80}); start it"
        ) from exc
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return tuple(cur.fetchone())
    finally:
        conn.close()


def check_postgres(url: str = POSTGRES_URL) -> None:
    """Raise :class:`ServerUnavailableError` unless PostgreSQL is up with wal_level=logical."""
    (level,) = _settings(connect_postgres, url, "PostgreSQL", "SHOW wal_level")
    if level != "logical":
        raise ServerUnavailableError(
            f"PostgreSQL at {url} has wal_level={level}; run .ci/postgres-setup.sh"
        )


def check_mysql(url: str = MYSQL_URL) -> None:
    """Raise :class:`ServerUnavailableError` unless MariaDB/MySQL is up with a ROW binlog."""
    log_bin, fmt = _settings(connect_mysql, url, "MySQL", "SELECT @@log_bin, @@binlog_format")
    if str(log_bin) not in ("1", "ON") or fmt != "ROW":
        raise ServerUnavailableError(
            f"MySQL at {url} has log_bin={log_bin} binlog_format={fmt}; run .ci/mariadb-setup.sh"
        )
