"""The PostgreSQL store, for registries shared by several servers."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from schemas.errors import InvalidInputError, StoreError
from schemas.storage import SqlTransaction, Transaction, ddl

__all__ = ["PostgresStore", "mask_password"]

_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def mask_password(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore:
    """A registry in PostgreSQL: ``postgresql://user@host:5432/db?table_prefix=registry_``.

    Tables are named ``<table_prefix>schemas`` and so on (default prefix ``registry_``), so
    several registries can share a database. Writers serialise on an advisory transaction lock
    keyed by the prefix.
    """

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - psycopg is a declared extra
            raise StoreError(
                "PostgreSQL storage needs pip install 'choreograph[postgres]'"
            ) from exc
        self._psycopg = psycopg
        self.url = url
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.prefix = query.pop("table_prefix", "registry_")
        if not _PREFIX.match(self.prefix):
            raise InvalidInputError(
                f"table_prefix {self.prefix!r} must be lower-case letters, digits and underscores"
            )
        scheme = "postgresql"
        self._dsn = urlunsplit(parts._replace(scheme=scheme, query=urlencode(query)))
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        with self.transaction(write=True):  # under the lock: concurrent DDL races in PostgreSQL
            for statement in ddl(self.prefix, id_type="BIGINT"):
                self._connection().execute(statement)

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:  # reconnect after a server restart
            try:
                conn = self._psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
            except self._psycopg.Error as exc:
                raise StoreError(
                    f"cannot connect to PostgreSQL at {mask_password(self.url)}: "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}; "
                    "check that the server runs and the credentials are right"
                ) from exc
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Transaction]:
        """A transaction; a write one holds the prefix's advisory lock until it ends."""
        conn = self._connection()
        try:
            with conn.transaction():
                if write:
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.prefix,))
                yield SqlTransaction(conn, self.prefix, placeholder="%s")
        except self._psycopg.Error as exc:
            raise StoreError(f"PostgreSQL at {mask_password(self.url)} failed: {exc}") from exc

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
