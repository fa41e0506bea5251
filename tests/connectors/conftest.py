"""Outbox fixtures: a fresh outbox table on each database (SQLite, PostgreSQL, MariaDB/MySQL).

The live databases come from ``devservers.databases`` (``CHOREO_TEST_POSTGRES_URL`` /
``CHOREO_TEST_MYSQL_URL``, defaults: the local servers). A missing server, or one not configured
for CDC, FAILS the test with one line saying what to run (``.ci/postgres-setup.sh``,
``.ci/mariadb-setup.sh``): CI makes every backend mandatory.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from connectors import add_event, init_outbox
from connectors.dburl import DatabaseURL
from connectors.outbox_table import OFFSETS_TABLE, publication_name
from devservers import ServerUnavailableError, databases
from devservers.databases import MYSQL_URL, POSTGRES_URL, connect_mysql, connect_postgres

REPO = Path(__file__).resolve().parents[2]

Row = dict[str, Any]


def check_postgres() -> None:
    """Fail the test (not skip) unless PostgreSQL is up with wal_level=logical."""
    try:
        databases.check_postgres()
    except ServerUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)


def check_mysql() -> None:
    """Fail the test (not skip) unless MariaDB/MySQL is up with a ROW binlog."""
    try:
        databases.check_mysql()
    except ServerUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)


class OutboxDB:
    """A fresh outbox table on one database, with helpers to write events and clean up."""

    def __init__(self, backend: str, tmp_path: Path, payload: str = "json") -> None:
        suffix = uuid.uuid4().hex[:10]
        self.backend = backend
        self.table = f"outbox_{suffix}"
        self.slot = f"choreo_test_{suffix}"
        self.name: str | None = None
        if backend == "sqlite":
            self.url = f"sqlite:///{tmp_path}/app-{suffix}.db"
        elif backend == "postgres":
            check_postgres()
            self.url = POSTGRES_URL
        else:
            check_mysql()
            self.url = MYSQL_URL
        init_outbox(self.url, self.table, slot=self.slot, payload=payload)  # type: ignore[arg-type]

    def connect(self) -> Any:
        if self.backend == "sqlite":
            return sqlite3.connect(DatabaseURL.parse(self.url).database)
        if self.backend == "postgres":
            return connect_postgres()
        return connect_mysql()

    def write(self, rows: Sequence[Row], *, rollback: bool = False, conn: Any = None) -> list[str]:
        """Insert ``rows`` (add_event keywords) in ONE transaction; commit or roll back."""
        own = conn is None
        conn = conn or self.connect()
        try:
            if self.backend == "sqlite":
                conn.execute("BEGIN")
            ids = [add_event(conn, table=self.table, **row) for row in rows]
            conn.rollback() if rollback else conn.commit()
        finally:
            if own:
                conn.close()
        return ids

    def write_many(self, rows: Sequence[Row], per_transaction: int) -> list[str]:
        """Insert ``rows`` in transactions of ``per_transaction`` rows on one connection."""
        conn = self.connect()
        try:
            ids: list[str] = []
            for start in range(0, len(rows), per_transaction):
                ids += self.write(rows[start : start + per_transaction], conn=conn)
        finally:
            conn.close()
        return ids

    def relay_locked(self) -> bool:
        """Whether a relay (of any process) currently holds this outbox's slot / lock."""
        if self.backend == "postgres":
            conn = connect_postgres()
            with conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
                )
                found = cur.fetchone()
            conn.close()
            return bool(found and found[0])
        if self.backend == "mysql":
            conn = connect_mysql()
            with conn.cursor() as cur:
                db = DatabaseURL.parse(self.url)
                cur.execute(
                    "SELECT IS_USED_LOCK(%s)", (f"choreo_outbox:mysql:{db.database}.{self.table}",)
                )
                found = cur.fetchone()
            conn.close()
            return found[0] is not None
        return False

    def cleanup(self) -> None:
        if self.backend == "postgres":
            self._cleanup_postgres()
        elif self.backend == "mysql":
            conn = connect_mysql()
            with conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS `{self.table}`")
                cur.execute(
                    f"DELETE FROM `{OFFSETS_TABLE}` WHERE relay LIKE %s", (f"%{self.table}",)
                )
            conn.commit()
            conn.close()

    def _cleanup_postgres(self) -> None:
        conn = connect_postgres()
        conn.autocommit = True
        deadline = time.monotonic() + 10
        with conn.cursor() as cur:
            while time.monotonic() < deadline:
                cur.execute(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
                )
                found = cur.fetchone()
                if found is None:
                    break
                if found[0] is not None:
                    cur.execute("SELECT pg_terminate_backend(%s)", (found[0],))
                    time.sleep(0.05)
                    continue
                cur.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
                break
            cur.execute(f'DROP PUBLICATION IF EXISTS "{publication_name(self.table)}"')
            cur.execute(f'DROP TABLE IF EXISTS "{self.table}"')
            cur.execute(
                f'DELETE FROM "{OFFSETS_TABLE}" WHERE relay = %s', (f"postgres:{self.slot}",)
            )
        conn.close()


BACKENDS = [
    pytest.param("sqlite"),
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database under test: sqlite, postgres or mysql."""
    name: str = request.param
    return name


@pytest.fixture
def make_outbox(backend: str, tmp_path: Path) -> Iterator[Callable[..., OutboxDB]]:
    """A factory of fresh outbox tables on the backend; dropped (slot included) afterwards."""
    made: list[OutboxDB] = []

    def factory(payload: str = "json") -> OutboxDB:
        outbox = OutboxDB(backend, tmp_path, payload)
        made.append(outbox)
        return outbox

    yield factory
    for outbox in made:
        outbox.cleanup()


@pytest.fixture
def outbox(make_outbox: Callable[..., OutboxDB]) -> OutboxDB:
    """A fresh outbox table (JSON payload) on the backend."""
    return make_outbox()


@pytest.fixture
def pg_outbox(tmp_path: Path) -> Iterator[OutboxDB]:
    """A fresh PostgreSQL outbox table, publication and slot."""
    made = OutboxDB("postgres", tmp_path)
    yield made
    made.cleanup()


@pytest.fixture
def mysql_outbox(tmp_path: Path) -> Iterator[OutboxDB]:
    """A fresh MariaDB/MySQL outbox table."""
    made = OutboxDB("mysql", tmp_path)
    yield made
    made.cleanup()
