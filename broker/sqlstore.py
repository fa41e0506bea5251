"""One SQL store base for the parts that keep their state in a database (the schema registry and
the saga monitor): a connection from a URL, the dialect differences, versioned migrations and
transactions. Each part keeps its own tables and queries; this module knows none of them.

URLs:

* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the standard library's
  sqlite3, WAL mode); ``sqlite://`` alone is a fresh temporary file, removed on close.
* ``postgresql://user:pass@host:5432/db?schema=name`` (psycopg 3, ``pip install
  'choreograph[postgres]'``): the tables live in ``schema`` (created when missing). Other query
  options go to libpq (``sslmode=require``, ``connect_timeout=5``, ...).

SQL is written once: ``?`` placeholders, ``{p}`` before every table name (the part's table
prefix), and in migrations ``{bigint}``, ``{real}`` and ``{autoincrement}`` for the column types
that differ. :class:`Dialect` turns it into each database's text.

Migrations are numbered from 1; ``<prefix>schema_version`` records those applied. They run when a
store opens, in one transaction holding the database's migration lock (``BEGIN IMMEDIATE`` on
SQLite, ``pg_advisory_xact_lock`` on PostgreSQL), so processes that start together on a fresh
database apply each one exactly once. A part's migration 1 is its layout from before versions
were kept, written with ``IF NOT EXISTS``, so such databases are adopted as they are.

Each thread has its own connection. A write transaction may be *exclusive*: writers of the same
prefix then take turns (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL).
Transactions nest (savepoints). Driver errors become the part's own error class, in one line
that names the URL with its password masked.

A SQLite store may copy its write-ahead log back into the database file on a thread of its own
(``background_checkpoints=True``, the saga store's choice): SQLite's own checkpoint runs inside
the ``COMMIT`` that takes the log past 1,000 pages, where it writes those pages again and
waits for the disk (``fsync``), and the writer waits with it. See :class:`_Checkpointer`.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from broker.urls import mask_url

__all__ = [
    "POSTGRESQL",
    "SQLITE",
    "Dialect",
    "Migration",
    "SqlStore",
    "Tx",
    "sqlite_file",
    "upsert",
    "use_wal",
]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
_PREFIX = re.compile(r"([a-z_][a-z0-9_]{0,40})?\Z")
_MIGRATION_LOCK = "choreograph schema migrations"
#: With background checkpoints: how many pages the log may hold before a committing
#: connection checkpoints it itself after all (SQLite's default is 1,000), should the
#: checkpointer fall behind; and how often (seconds) the checkpointer runs at most.
CHECKPOINT_BACKSTOP = 10_000
CHECKPOINT_EVERY = 0.2


@dataclasses.dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the SQL of one database and another."""

    name: str
    placeholder: str
    types: Mapping[str, str]
    #: Appended to a ``SELECT`` whose rows the transaction locks until it ends.
    for_update: str

    def render(self, sql: str, prefix: str) -> str:
        """``sql`` in this dialect: table prefix, column types and placeholders filled in."""
        sql = sql.replace("{p}", prefix)
        for name, text in self.types.items():
            sql = sql.replace(f"{{{name}}}", text)
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)


SQLITE = Dialect(
    "sqlite",
    "?",
    {"bigint": "INTEGER", "real": "REAL", "autoincrement": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "",
)
POSTGRESQL = Dialect(
    "postgresql",
    "%s",
    {"bigint": "BIGINT", "real": "DOUBLE PRECISION", "autoincrement": "BIGSERIAL PRIMARY KEY"},
    " FOR UPDATE",
)


def sqlite_file(url: str) -> str | None:
    """The file a ``sqlite:`` URL names (``sqlite:///rel/path.db``, ``sqlite:////abs.db``;
    "" for ``sqlite://``, a temporary one), or None for a URL of another scheme."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        return None
    return (parts.netloc + parts.path).removeprefix("/")


def sqlite_tables(path: str) -> set[str] | None:
    """The names of the tables in the SQLite file at ``path``, read without writing to it
    (no schema created, no journal left), or None when it cannot be read as a database."""
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    except (sqlite3.Error, ValueError):
        return None
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return {str(row[0]) for row in rows}


def upsert(table: str, columns: Sequence[str], *, key: Sequence[str]) -> str:
    """Insert a row, or update the columns outside ``key`` of the row already there.

    SQLite (3.24 and later) and PostgreSQL spell it the same way.
    """
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    """One step of a part's layout: applied once, in version order, in one transaction."""

    version: int
    statements: tuple[str, ...]


class Tx:
    """The statements of one transaction: portable SQL in, rows out."""

    __slots__ = ("_conn", "_store")

    def __init__(self, store: SqlStore, conn: Any) -> None:
        self._store, self._conn = store, conn

    def execute(self, sql: str, *params: Any) -> Any:
        """Run one statement; returns the driver's cursor."""
        return self._conn.execute(self._store.render(sql), params)

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per row of parameters (one prepared statement)."""
        conn = self._conn
        if isinstance(conn, sqlite3.Connection):
            conn.executemany(self._store.render(sql), rows)
            return
        with conn.cursor() as cursor:
            cursor.executemany(self._store.render(sql), rows)

    def one(self, sql: str, *params: Any) -> Any:
        """The first row of a query, or None."""
        return self.execute(sql, *params).fetchone()

    def all(self, sql: str, *params: Any) -> list[Any]:
        """Every row of a query."""
        return list(self.execute(sql, *params).fetchall())

    def run(self, sql: str, *params: Any) -> int:
        """Run one statement; returns how many rows it changed."""
        return int(self.execute(sql, *params).rowcount)

    def stream(self, sql: str, *params: Any, size: int = 1000) -> Generator[list[Any]]:
        """The rows of one query, ``size`` at a time, read as they are taken (a server-side
        cursor on PostgreSQL): a caller that stops early leaves the rest unread."""
        conn = self._conn
        if isinstance(conn, sqlite3.Connection):
            cursor = conn.execute(self._store.render(sql), params)
        else:
            cursor = conn.cursor(name="choreo_stream")
            cursor.execute(self._store.render(sql), params)
        try:
            while rows := cursor.fetchmany(size):
                yield list(rows)
        finally:
            cursor.close()


class SqlStore:
    """A database opened from a URL (see the module docstring).

    ``what`` names the store in messages ("saga store"), ``hint`` lists the URLs that work,
    ``error`` is raised when the database fails and ``usage_error`` (default ``error``) for a
    URL that cannot work.
    ``options`` are query options the part reads itself (in :attr:`options`); ``schema`` is the
    PostgreSQL schema used when the URL names none. Call :meth:`open` before anything else.
    """

    def __init__(
        self,
        url: str,
        *,
        what: str,
        hint: str,
        error: type[Exception],
        usage_error: type[Exception] | None = None,
        options: Sequence[str] = (),
        schema: str | None = None,
        background_checkpoints: bool = False,
        page_size: int | None = None,
    ) -> None:
        self.url = mask_url(url)
        #: The page size a new SQLite file is made with (SQLite's default, 4,096, if None); a
        #: file that has tables keeps its own (in WAL mode it cannot change).
        self.page_size = page_size
        self.what, self.error, self.usage_error = what, error, usage_error or error
        self.prefix = ""
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        #: Each thread's connection, by thread id (what :meth:`interrupt` reaches).
        self._threads: dict[int, Any] = {}
        self._rendered: dict[str, str] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._driver_errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.options = {name: query.pop(name) for name in options if name in query}
        scheme = parts.scheme.lower()
        if scheme == "sqlite":
            self.dialect, self.schema = SQLITE, None
            self._target = self._sqlite_path(sqlite_file(url) or "")
        elif scheme in ("postgresql", "postgres"):
            self.dialect, self.schema = POSTGRESQL, query.pop("schema", schema)
            self._driver_errors = _postgres_errors()
            if self.schema is not None and not _NAME.match(self.schema):
                raise self.usage_error(
                    f"{what} {self.url}: schema {self.schema!r} is not a plain name"
                )
            query.setdefault("connect_timeout", "10")
            self._target = urlunsplit(
                ("postgresql", parts.netloc, parts.path, urlencode(query), "")
            )
        else:
            raise self.usage_error(f"unknown {what} URL {self.url!r}; use {hint}")
        #: Copies the log into the database file after write transactions (SQLite, when asked).
        self.checkpointer = (
            _Checkpointer(self._target)
            if background_checkpoints and self.dialect is SQLITE
            else None
        )

    def _sqlite_path(self, path: str) -> str:
        if not path:
            self._tmp = tempfile.TemporaryDirectory(prefix="choreo-")
            path = str(Path(self._tmp.name) / "store.db")
        return path

    # -- opening -------------------------------------------------------------------------

    def open(self, prefix: str, migrations: Sequence[Migration]) -> None:
        """Connect, then apply the migrations not applied yet (under the migration lock)."""
        if not _PREFIX.match(prefix):
            raise self.usage_error(
                f"table prefix {prefix!r} must be lower-case letters, digits and underscores"
            )
        self.prefix = prefix
        if self.dialect is SQLITE:
            try:
                Path(self._target).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._cannot_open(exc) from exc
        with self.transaction(write=True) as tx:
            if self.dialect is POSTGRESQL:
                tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", _MIGRATION_LOCK)
                self._create_schema(tx)
            self._migrate(tx, migrations)

    def _create_schema(self, tx: Tx) -> None:
        if self.schema is None:
            return
        if tx.one("SELECT 1 FROM pg_namespace WHERE nspname = ?", self.schema) is None:
            tx.execute(f'CREATE SCHEMA "{self.schema}"')

    def _migrate(self, tx: Tx, migrations: Sequence[Migration]) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS {p}schema_version "
            "(version INTEGER PRIMARY KEY, applied {real} NOT NULL)"
        )
        applied = int(tx.one("SELECT COALESCE(MAX(version), 0) FROM {p}schema_version")[0])
        known = max((m.version for m in migrations), default=0)
        if applied > known:
            raise self.error(
                f"the {self.what} at {self.url} has layout version {applied}, newer than this "
                f"choreograph knows ({known}); upgrade choreograph"
            )
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version > applied:
                for statement in migration.statements:
                    tx.execute(statement)
                tx.execute(
                    "INSERT INTO {p}schema_version (version, applied) VALUES (?, ?)",
                    migration.version,
                    time.time(),
                )

    # -- connections ---------------------------------------------------------------------

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not (self.dialect is POSTGRESQL and (conn.closed or conn.broken)):
            return conn
        if conn is not None:  # the server restarted or the link broke: connect again
            with self._lock:
                self._connections.remove(conn)
        conn = self._connect_sqlite() if self.dialect is SQLITE else self._connect_postgres()
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
            self._threads[threading.get_ident()] = conn
        return conn

    def interrupt(self, thread: int) -> None:
        """Cancel the statement ``thread`` runs on its connection, if any (callable from any
        thread): it then fails with this store's error and its transaction is undone.
        PostgreSQL gets a cancel request (what ends a wait for a lock held elsewhere); SQLite's
        interrupt ends a running statement, but not a wait for another process's write lock
        (its busy timeout, 30 s, bounds that)."""
        with self._lock:
            conn = self._threads.get(thread)
        if conn is None:
            return
        if self.dialect is POSTGRESQL:
            if not conn.closed:
                with suppress(*self._driver_errors):
                    conn.cancel_safe(timeout=5.0)
            return
        with suppress(sqlite3.ProgrammingError):  # closed meanwhile
            conn.interrupt()

    def release(self) -> None:
        """Close the calling thread's connection (a thread that is done with the store); the
        thread's next statement connects again."""
        conn: Any = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
            if self._threads.get(threading.get_ident()) is conn:
                del self._threads[threading.get_ident()]
        conn.close()

    def _connect_sqlite(self) -> Any:
        try:
            conn = _SqliteConnection(
                self._target, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            if self.page_size is not None:  # before the first table: a new file only
                conn.execute(f"PRAGMA page_size={int(self.page_size)}")
            use_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            if self.checkpointer is not None:
                conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_BACKSTOP}")
        except sqlite3.Error as exc:
            raise self._cannot_open(exc) from exc
        return conn

    def _connect_postgres(self) -> Any:
        try:
            import psycopg
        except ImportError as exc:
            raise self.error(
                f"a postgresql:// {self.what} needs psycopg; install it with: "
                "pip install 'choreograph[postgres]'"
            ) from exc
        try:
            conn = psycopg.connect(self._target, autocommit=True)
            if self.schema is not None:
                conn.execute(f'SET search_path TO "{self.schema}"')
        except psycopg.Error as exc:
            raise self.error(
                f"cannot connect to the {self.what} at {self.url}: {_first_line(exc)}; "
                "check that PostgreSQL runs there and the credentials are right"
            ) from exc
        return conn

    def _cannot_open(self, exc: Exception) -> Exception:
        return self.error(
            f"cannot open the {self.what} at {self.url}: {_first_line(exc)}; "
            "check that the path is writable"
        )

    # -- transactions --------------------------------------------------------------------

    def render(self, sql: str) -> str:
        """``sql`` in this store's dialect, with its table prefix."""
        text = self._rendered.get(sql)
        if text is None:
            text = self._rendered[sql] = self.dialect.render(sql, self.prefix)
        return text

    @contextmanager
    def transaction(self, *, write: bool = False, exclusive: bool = False) -> Iterator[Tx]:
        """One transaction on this thread's connection: committed at the end, undone on error.

        ``write`` says it will write (SQLite then takes its write lock at the start);
        ``exclusive`` also makes writers of this prefix take turns on PostgreSQL.
        """
        conn = self._connection()
        postgres = self.dialect is POSTGRESQL
        try:
            with conn.transaction() if postgres else conn.begin(write or exclusive):
                tx = Tx(self, conn)
                if exclusive and postgres:
                    tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", self.prefix)
                yield tx
        except self._driver_errors as exc:
            raise self.error(f"the {self.what} at {self.url} failed: {_first_line(exc)}") from exc
        if self.checkpointer is not None and (write or exclusive) and not conn.in_transaction:
            self.checkpointer.wake()  # committed (not a nested one): the log has grown

    def query(self, sql: str, *params: Any) -> list[Any]:
        """The rows of one query, in a transaction of its own."""
        with self.transaction() as tx:
            return tx.all(sql, *params)

    def execute(self, sql: str, *params: Any) -> int:
        """Run one write statement in a transaction of its own; returns the rows changed."""
        with self.transaction(write=True) as tx:
            return tx.run(sql, *params)

    def drop_schema(self) -> None:
        """Drop the PostgreSQL schema named in the URL, with everything in it (tests, resets)."""
        if self.dialect is not POSTGRESQL or self.schema in (None, "public"):
            raise self.usage_error(f"{self.url} names no schema of its own to drop")
        with self.transaction(write=True) as tx:
            tx.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def close(self) -> None:
        """Close every thread's connection (and remove a temporary database)."""
        if self.checkpointer is not None:
            self.checkpointer.close()
        with self._lock:
            connections, self._connections = self._connections, []
            self._threads = {}
        for conn in connections:
            conn.close()
        self._local = threading.local()
        if self._tmp is not None:
            self._tmp.cleanup()


class _Checkpointer:
    """Copies a SQLite database's write-ahead log back into its file on a thread of its own.

    Woken after each write transaction's commit, it runs a passive checkpoint on its own
    connection (at most every :data:`CHECKPOINT_EVERY` seconds; the commits meanwhile are
    copied by the next one): it copies what the log holds while the writer goes on (a writer
    and a checkpoint do not wait for each other in WAL mode), and waits for the disk in place
    of the writer. Once it copied the whole log, the next commit writes the log from its
    start again, so the log stays about as large as what is committed between two runs. The
    store's connections checkpoint themselves only past :data:`CHECKPOINT_BACKSTOP` pages
    (should this thread fall behind). A checkpoint that fails (the database busy, a disk
    error) is left to the next one, or to that backstop. The thread starts at the first
    commit and ends with :meth:`close` (the store's: a store used after it is closed goes on
    with the backstop alone).
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._wanted = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: How many checkpoints ran (the ones that failed included).
        self.runs = 0

    def wake(self) -> None:
        """A write transaction committed: checkpoint soon."""
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closing.is_set():
                    self._thread = threading.Thread(
                        target=self._run, name=f"choreo-checkpoint {self._path}", daemon=True
                    )
                    self._thread.start()
        self._wanted.set()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, timeout=30.0, isolation_level=None)
        except sqlite3.Error:  # the store's own connections say what is wrong; the backstop
            return
        try:
            while self._wanted.wait() and not self._closing.is_set():
                self._wanted.clear()
                with suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self.runs += 1
                if self._closing.wait(CHECKPOINT_EVERY):  # commits meanwhile: the next run's
                    return
        finally:
            conn.close()

    def close(self) -> None:
        """End the thread (after the checkpoint it is running, if any)."""
        with self._lock:
            self._closing.set()
            thread, self._thread = self._thread, None
        self._wanted.set()
        if thread is not None:
            thread.join()


class _SqliteConnection(sqlite3.Connection):
    """A sqlite3 connection with explicit transactions that nest, like psycopg's."""

    @contextmanager
    def begin(self, write: bool) -> Iterator[None]:
        nested = self.in_transaction
        self.execute("SAVEPOINT tx" if nested else "BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield
        except BaseException:
            if self.in_transaction and nested:
                self.execute("ROLLBACK TO tx")
                self.execute("RELEASE tx")
            elif self.in_transaction:  # (SQLite ends a transaction itself on some errors)
                self.execute("ROLLBACK")
            raise
        try:
            self.execute("RELEASE tx" if nested else "COMMIT")
        except sqlite3.Error:
            if self.in_transaction and not nested:
                self.execute("ROLLBACK")
            raise


def _postgres_errors() -> tuple[type[Exception], ...]:
    try:
        import psycopg
    except ImportError:
        return ()
    return (psycopg.Error,)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def use_wal(conn: sqlite3.Connection, wait: float = 30.0) -> None:
    """Switch ``conn``'s database to write-ahead logging. SQLite answers "database is locked"
    at once, without its busy handler, when another connection is creating or switching the
    same new file; several stores opening one fresh database at once take turns here."""
    deadline = time.monotonic() + wait
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
