"""The SQL store base (broker.sqlstore) under the registry and the saga monitor: URLs, dialects,
versioned migrations that are safe when several processes start at once, nested transactions,
masked URLs, and the layering (the base is a leaf; schemas reaches into broker only for it)."""

from __future__ import annotations

import ast
import json
import os
import sqlite3
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from broker.sqlstore import POSTGRESQL, SQLITE, Migration, SqlStore, sqlite_file, upsert, use_wal
from saga_monitor import Alert, SagaConfigError, SagaStoreError, SqlSagaStore
from saga_monitor.store_sql import MIGRATIONS as SAGA_MIGRATIONS
from schemas import SchemaStore, SchemaStoreError
from schemas.errors import InvalidInputError
from schemas.storage import MIGRATIONS as REGISTRY_MIGRATIONS
from tests.saga_monitor.helpers import until

ROOT = Path(__file__).resolve().parents[1]
#: Every saga store layout version, as the version table lists them once all have run.
SAGA_VERSIONS = [(m.version,) for m in SAGA_MIGRATIONS]
PG_URL = os.environ.get("CHOREO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
NOTES = (Migration(1, ("CREATE TABLE {p}notes (id {autoincrement}, text TEXT NOT NULL)",)),)
TAGGED = (*NOTES, Migration(2, ("ALTER TABLE {p}notes ADD COLUMN tag TEXT",)))


class NotesError(Exception):
    """The notes store failed (the part-specific error the base raises)."""


def notes_store(url: str, migrations: Sequence[Migration] = NOTES) -> SqlStore:
    """A store of a made-up part, "notes", with its own tables (prefix ``n_``)."""
    store = SqlStore(
        url, what="notes store", hint="sqlite:///notes.db", error=NotesError, usage_error=ValueError
    )
    store.open("n_", migrations)
    return store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a database nobody has opened: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/fresh.db"
        return
    schema = f"sqlstore_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}?schema={schema}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def raw(url: str, statements: Sequence[str]) -> list[Any]:
    """Run statements straight on the driver (no store); the rows of the last one."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            rows = [conn.execute(statement).fetchall() for statement in statements]
        conn.close()
        return rows[-1]
    schema = url.rsplit("schema=", 1)[1]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'SET search_path TO "{schema}"')
        cursors = [conn.execute(statement) for statement in statements]
        return cursors[-1].fetchall() if cursors[-1].description else []


def tables(url: str) -> list[str]:
    """The tables in the database (or PostgreSQL schema) at ``url``."""
    if url.startswith("sqlite"):
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence'"
    else:
        schema = url.rsplit("schema=", 1)[1]
        sql = f"SELECT tablename FROM pg_tables WHERE schemaname = '{schema}'"
    return sorted(row[0] for row in raw(url, [sql]))


def start_together(count: int, open_one: Callable[[], Any]) -> tuple[list[Any], list[str]]:
    """Open ``count`` stores from as many threads, released at the same instant."""
    barrier = threading.Barrier(count)
    opened: list[Any] = []
    failures: list[str] = []

    def run() -> None:
        barrier.wait()
        try:
            opened.append(open_one())
        except Exception as exc:  # collected: the test asserts there are none
            failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return opened, failures


# -- migrations ----------------------------------------------------------------------------------


def test_saga_stores_started_together_on_a_fresh_database_all_open(fresh_url: str) -> None:
    """Eight saga stores opening one fresh database at once: none fails, the tables exist once."""
    opened, failures = start_together(8, lambda: SqlSagaStore(fresh_url))
    for store in opened:
        store.close()
    assert [] == failures
    expected = [
        "saga_alerts",
        "saga_causes",
        "saga_instances",
        "saga_monitors",
        "saga_notes",
        "saga_orphans",
        "saga_schema_version",
    ]
    assert expected == tables(fresh_url)
    assert SAGA_VERSIONS == raw(fresh_url, ["SELECT version FROM saga_schema_version ORDER BY 1"])


def test_registry_stores_started_together_on_a_fresh_database_all_open(fresh_url: str) -> None:
    """Eight registry stores opening one fresh database at once: none fails, tables exist once."""
    opened, failures = start_together(8, lambda: SchemaStore(fresh_url))
    for store in opened:
        store.close()
    assert [] == failures
    prefix = "" if fresh_url.startswith("sqlite") else "registry_"
    names = ("config", "meta", "mode", "refs", "schema_version", "schemas", "versions")
    assert sorted(prefix + name for name in names) == tables(fresh_url)
    assert [(1,)] == raw(fresh_url, [f"SELECT version FROM {prefix}schema_version"])


def test_switching_a_new_file_to_wal_waits_for_the_connection_creating_it(tmp_path: Path) -> None:
    """SQLite refuses `PRAGMA journal_mode=WAL` at once ("database is locked", no busy handler)
    while another connection writes the new file: what made stores opening one fresh database
    together fail now and then. `use_wal` takes turns until the other commits, and gives up
    with SQLite's error after its wait."""
    path = tmp_path / "new.db"
    creator = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    creator.execute("BEGIN EXCLUSIVE")
    creator.execute("CREATE TABLE t (x)")
    late = sqlite3.connect(path, isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        use_wal(late, wait=0.2)
    committer = threading.Timer(0.3, lambda: creator.execute("COMMIT"))
    committer.start()
    use_wal(late)
    committer.join()
    assert ("wal",) == late.execute("PRAGMA journal_mode").fetchone()
    late.close()
    creator.close()


def test_a_registry_database_from_before_versions_is_adopted_with_its_data(fresh_url: str) -> None:
    """Registry tables made by the unversioned layout keep their rows; version 1 is recorded."""
    dialect = SQLITE if fresh_url.startswith("sqlite") else POSTGRESQL
    prefix = "" if dialect is SQLITE else "registry_"
    layout = [dialect.render(s, prefix) for s in REGISTRY_MIGRATIONS[0].statements]
    raw(fresh_url, [*layout, f"INSERT INTO {prefix}config (subject, value) VALUES ('', 'FULL')"])
    store = SchemaStore(fresh_url)
    with store.transaction(write=False) as tx:
        assert "FULL" == tx.setting("config", "")
    store.close()
    assert [(1,)] == raw(fresh_url, [f"SELECT version FROM {prefix}schema_version"])


def test_a_saga_database_from_before_versions_is_adopted_with_its_data(fresh_url: str) -> None:
    """Saga tables made by the unversioned layout keep their rows; version 1 is recorded and the
    later migrations run."""
    dialect = SQLITE if fresh_url.startswith("sqlite") else POSTGRESQL
    alert = Alert("saga.stuck", "orders", "o-1", {"state": "stuck"})
    raw(
        fresh_url,
        [
            *(dialect.render(s, "saga_") for s in SAGA_MIGRATIONS[0].statements),
            f"INSERT INTO saga_alerts (doc) VALUES ('{json.dumps(alert.to_dict())}')",
        ],
    )
    store = SqlSagaStore(fresh_url)
    assert [(1, alert)] == store.pending_alerts()
    store.close()
    assert SAGA_VERSIONS == raw(fresh_url, ["SELECT version FROM saga_schema_version ORDER BY 1"])


def test_migrations_apply_in_order_once_and_later_ones_on_reopening(fresh_url: str) -> None:
    """A store opened with a second migration applies only that one, keeping the rows."""
    first = notes_store(fresh_url)
    first.execute("INSERT INTO {p}notes (text) VALUES (?)", "kept")
    first.close()
    second = notes_store(fresh_url, TAGGED)
    second.execute("UPDATE {p}notes SET tag = ?", "old")
    assert [("kept", "old")] == second.query("SELECT text, tag FROM {p}notes")
    assert [(1,), (2,)] == second.query("SELECT version FROM {p}schema_version ORDER BY version")
    second.close()


def test_a_database_newer_than_the_code_is_refused(fresh_url: str) -> None:
    """Opening a layout version this code does not know says to upgrade, and changes nothing."""
    notes_store(fresh_url, TAGGED).close()
    with pytest.raises(NotesError, match=r"has layout version 2, newer than .* \(1\); upgrade"):
        notes_store(fresh_url)
    assert [(1,), (2,)] == raw(fresh_url, ["SELECT version FROM n_schema_version ORDER BY 1"])


# -- transactions and dialects -------------------------------------------------------------------


def write_then_fail(store: SqlStore, text: str, failing_sql: str | None = None) -> None:
    """Insert a note, then fail: with ``failing_sql`` in the database, else with a KeyError."""
    with store.transaction(write=True) as tx:
        tx.execute("INSERT INTO {p}notes (text) VALUES (?)", text)
        if failing_sql is not None:
            tx.execute(failing_sql)
        raise KeyError(text)


def test_a_failed_nested_transaction_undoes_only_its_own_writes(fresh_url: str) -> None:
    """Transactions nest: an error inside the inner one rolls back to where it began."""
    store = notes_store(fresh_url)
    with store.transaction(write=True) as tx:
        tx.execute("INSERT INTO {p}notes (text) VALUES (?)", "outer")
        with pytest.raises(KeyError):
            write_then_fail(store, "inner")
        assert [("outer",)] == tx.all("SELECT text FROM {p}notes")
    assert [("outer",)] == store.query("SELECT text FROM {p}notes")
    store.close()


def test_driver_errors_become_the_part_error_and_roll_back(fresh_url: str) -> None:
    """A failing statement raises the part's error naming the store; the transaction is undone."""
    store = notes_store(fresh_url)
    with pytest.raises(NotesError, match=r"^the notes store at .* failed: "):
        write_then_fail(store, "lost", "INSERT INTO {p}missing (text) VALUES ('x')")
    assert [] == store.query("SELECT text FROM {p}notes")
    store.close()


def test_upsert_and_autoincrement_read_the_same_on_both_dialects(fresh_url: str) -> None:
    """One upsert text inserts then updates; autoincrement ids count from 1."""
    kv = Migration(2, ("CREATE TABLE {p}kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)",))
    store = notes_store(fresh_url, (*NOTES, kv))
    put = upsert("{p}kv", ("k", "v"), key=("k",))
    store.execute(put, "a", "1")
    store.execute(put, "a", "2")
    for text in ("x", "y"):
        store.execute("INSERT INTO {p}notes (text) VALUES (?)", text)
    assert [("a", "2")] == store.query("SELECT k, v FROM {p}kv")
    assert [(1, "x"), (2, "y")] == store.query("SELECT id, text FROM {p}notes ORDER BY id")
    store.close()


def test_each_thread_gets_its_own_connection(tmp_path: Path) -> None:
    """Two threads inside transactions at once use two connections (writers still take turns)."""
    store = notes_store(f"sqlite:///{tmp_path}/threads.db")
    inside = threading.Barrier(2)
    seen: list[int] = []

    def read() -> None:
        with store.transaction() as tx:
            seen.append(id(tx.execute("SELECT 1").connection))
            inside.wait(timeout=10)

    threads = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 2 == len(set(seen))
    store.close()


def _write_pages(store: SqlStore, pages: int) -> None:
    """Commit about ``pages`` pages of notes in one transaction."""
    with store.transaction(write=True) as tx:
        tx.execute_many("INSERT INTO {p}notes (text) VALUES (?)", [("x" * 4000,)] * pages)


def _checkpointing_store(path: Path) -> SqlStore:
    store = SqlStore(
        f"sqlite:///{path}",
        what="notes store",
        hint="sqlite:///notes.db",
        error=NotesError,
        background_checkpoints=True,
    )
    store.open("n_", NOTES)
    return store


def test_with_background_checkpoints_a_commit_leaves_the_log_to_the_checkpointer(
    tmp_path: Path,
) -> None:
    """A store that checkpoints in the background commits past SQLite's 1,000 pages without
    copying the log into the database file itself (its checkpointer stopped here: nothing
    copies it)."""
    path = tmp_path / "log.db"
    store = _checkpointing_store(path)
    assert store.checkpointer is not None
    store.checkpointer.close()
    before = path.stat().st_size
    _write_pages(store, 1500)
    assert before == path.stat().st_size
    assert Path(f"{path}-wal").stat().st_size > 1500 * 4096
    store.close()


async def test_the_background_checkpointer_copies_the_log_into_the_database_file(
    tmp_path: Path,
) -> None:
    """After a commit, the store's checkpointer thread copies the log into the database file
    (what the committing connection leaves to it, up to 10,000 pages)."""
    path = tmp_path / "log.db"
    store = _checkpointing_store(path)
    _write_pages(store, 1500)
    await until(lambda: path.stat().st_size > 1500 * 4096, what="the log checkpointed")
    assert store.checkpointer is not None
    assert store.checkpointer.runs >= 1
    store.close()


def test_sqlite_without_a_path_is_a_temporary_file_removed_on_close() -> None:
    """``sqlite://`` alone opens a fresh file that close() removes."""
    store = notes_store("sqlite://")
    path = Path(store._target)
    assert path.exists()
    store.close()
    assert not path.parent.exists()


# -- URLs and messages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("open_one", "error"),
    [(SqlSagaStore, SagaConfigError), (SchemaStore, InvalidInputError)],
)
def test_an_unknown_scheme_names_the_urls_that_work_with_the_password_masked(
    open_one: Callable[[str], Any], error: type[Exception]
) -> None:
    """A URL no store serves says which URLs work, and never shows its password."""
    with pytest.raises(error) as caught:
        open_one("mysql://app:hunter2@db/x")
    assert "hunter2" not in str(caught.value)
    assert "unknown" in str(caught.value)
    assert "app:***@db" in str(caught.value)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("open_one", "error"), [(SqlSagaStore, SagaStoreError), (SchemaStore, SchemaStoreError)]
)
def test_an_unreachable_postgres_is_one_line_with_the_password_masked(
    open_one: Callable[[str], Any], error: type[Exception]
) -> None:
    """A server nobody runs: the part's error, one line, the URL masked, what to check."""
    with pytest.raises(error) as caught:
        open_one("postgresql://postgres:hunter2@127.0.0.1:1/test?schema=s")
    message = str(caught.value)
    assert "hunter2" not in message
    assert 1 == len(message.splitlines())
    assert "postgres:***@127.0.0.1:1" in message
    assert "check that PostgreSQL runs there" in message


def test_bad_names_in_the_url_are_usage_errors() -> None:
    """A schema or table prefix that is not a plain name is refused before connecting."""
    with pytest.raises(InvalidInputError, match="table prefix 'Bad-Prefix'"):
        SchemaStore("postgresql://u@127.0.0.1:1/db?table_prefix=Bad-Prefix")
    with pytest.raises(SagaConfigError, match="schema 'a;b' is not a plain name"):
        SqlSagaStore("postgresql://u@127.0.0.1:1/db?schema=a;b")


# -- layering ------------------------------------------------------------------------------------


def imported(path: Path) -> set[str]:
    """The modules a source file imports (absolute imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_store_base_is_a_leaf_of_broker() -> None:
    """broker.sqlstore imports the standard library, broker.urls and (lazily) psycopg only."""
    used = imported(ROOT / "broker" / "sqlstore.py")
    others = {n for n in used if n.split(".")[0] not in sys.stdlib_module_names}
    assert {"broker.urls", "psycopg"} == others


def test_schemas_reaches_into_broker_only_for_the_store_base_and_url_masking() -> None:
    """schemas sits beside broker: of broker it imports sqlstore and urls, nothing else."""
    used = {n for f in (ROOT / "schemas").rglob("*.py") for n in imported(f)}
    assert {"broker.sqlstore", "broker.urls"} == {n for n in used if n.split(".")[0] == "broker"}


def test_interrupt_ends_the_statement_another_thread_runs(fresh_url: str) -> None:
    """``interrupt(thread)`` cancels the statement another thread runs on its own connection: it
    fails with the part's error, its transaction undone; after ``release()`` that thread's next
    statement connects again."""
    store = notes_store(fresh_url)
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
        if store.dialect is SQLITE
        else "SELECT pg_sleep(600)"
    )
    idents: list[int] = []
    outcome: list[Any] = []

    def run() -> None:
        idents.append(threading.get_ident())
        try:
            with store.transaction(write=True) as tx:
                tx.execute("INSERT INTO {p}notes (text) VALUES (?)", "undone")
                tx.all(endless)
        except NotesError as exc:
            outcome.append(exc)
        store.release()
        outcome.append(store.query("SELECT count(*) FROM {p}notes")[0][0])

    worker = threading.Thread(target=run)
    worker.start()
    try:
        while worker.is_alive():  # again until it lands in the statement, not before it
            if idents:
                store.interrupt(idents[0])
            worker.join(0.05)
    finally:
        store.close()
    assert [NotesError, 0] == [type(outcome[0]), outcome[1]]


def test_sqlite_file_reads_the_path_as_the_store_opens_it(tmp_path: Path) -> None:
    """One rule for the file a sqlite: URL names (the store and `choreo saga`'s check)."""
    assert sqlite_file("sqlite:///rel/x.db?busy=1") == "rel/x.db"
    assert sqlite_file(f"sqlite:///{tmp_path}/x.db") == f"{tmp_path}/x.db"
    assert sqlite_file("SQLITE://") == ""
    assert sqlite_file("postgresql://h/db") is None
    notes_store(f"sqlite:///{tmp_path}/sub/x.db").close()
    assert (tmp_path / "sub" / "x.db").is_file()
