"""The SQLite store (the default): one file, usable from several processes."""

from __future__ import annotations

import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from schemas.errors import StoreError
from schemas.storage import SqlTransaction, Transaction, ddl

__all__ = ["SqliteStore"]


class SqliteStore:
    """A registry in a SQLite file: ``sqlite:///relative/path.db`` or ``sqlite:////abs/path``.

    ``sqlite://`` alone uses a fresh temporary file. Each thread has its own connection; writers
    serialise on ``BEGIN IMMEDIATE`` (with a generous busy timeout) across processes too.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        path = url.split("://", 1)[1] if "://" in url else ""
        path = path[1:] if path.startswith("/") else path
        if not path:
            self._tmp = tempfile.TemporaryDirectory(prefix="choreo-registry-")
            path = str(Path(self._tmp.name) / "registry.db")
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.transaction(write=True):
                for statement in ddl(""):
                    self._connection().execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the registry database {self.path}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Transaction]:
        """A transaction; a write one holds SQLite's reserved lock until it ends."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as exc:
            raise StoreError(f"registry database {self.path} is unavailable: {exc}") from exc
        try:
            yield SqlTransaction(conn, "")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise StoreError(f"registry database {self.path} failed: {exc}") from exc
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.cleanup()
