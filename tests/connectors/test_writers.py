"""Writer helpers put the event in the caller's transaction: it exists iff that transaction
commits, for sqlite3, psycopg2, psycopg 3 (sync and async), PyMySQL and SQLAlchemy (sync, async)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors import OutboxConfigError, add_event, add_event_async
from devservers.databases import MYSQL_URL, POSTGRES_URL, connect_mysql, connect_postgres
from tests.connectors.conftest import OutboxDB

EVENT = {"aggregatetype": "order", "aggregateid": 7, "type": "order.placed"}


def stored(outbox: OutboxDB) -> list[tuple[Any, ...]]:
    """(id, aggregatetype, aggregateid, type, payload, headers) rows, read on a new connection."""
    query = f"SELECT id, aggregatetype, aggregateid, type, payload, headers FROM {outbox.table}"
    conn = outbox.connect()
    try:
        if outbox.backend == "sqlite":
            return list(conn.execute(query).fetchall())
        with conn.cursor() as cur:
            cur.execute(query)
            return list(cur.fetchall())
    finally:
        conn.close()


def payloads(outbox: OutboxDB) -> list[Any]:
    return [p if isinstance(p, dict) else json.loads(p) for p in (r[4] for r in stored(outbox))]


@pytest.fixture
def sqlite_outbox(tmp_path: Path) -> OutboxDB:
    return OutboxDB("sqlite", tmp_path)


def test_sqlite3_event_exists_only_if_the_transaction_commits(sqlite_outbox: OutboxDB) -> None:
    """sqlite3: a rolled-back insert leaves nothing, a committed one leaves the row."""
    conn = sqlite3.connect(sqlite_outbox.url.removeprefix("sqlite:///"))
    add_event(conn, table=sqlite_outbox.table, payload={"n": 1}, **EVENT)
    conn.rollback()
    event_id = add_event(
        conn, table=sqlite_outbox.table, payload={"n": 2}, headers={"k": "v"}, **EVENT
    )
    conn.commit()
    conn.close()
    assert [(event_id, "order", "7", "order.placed", '{"n":2}', '{"k":"v"}')] == stored(
        sqlite_outbox
    )


def test_sqlite3_refuses_delete_after_insert(sqlite_outbox: OutboxDB) -> None:
    """The SQLite relay polls, so a deleted row would never be seen: the writer says so."""
    conn = sqlite3.connect(sqlite_outbox.url.removeprefix("sqlite:///"))
    with pytest.raises(OutboxConfigError, match="needs a CDC relay"):
        add_event(conn, table=sqlite_outbox.table, delete_after=True, **EVENT)
    conn.close()


def test_unknown_connection_types_are_refused() -> None:
    """Passing something that is not a known connection fails with the supported list."""
    with pytest.raises(OutboxConfigError, match="PyMySQL or SQLAlchemy"):
        add_event(object(), **EVENT)


@pytest.mark.postgres
def test_psycopg2_event_follows_the_transaction(pg_outbox: OutboxDB) -> None:
    """psycopg2: rollback drops the event, commit keeps it; delete_after leaves no row."""
    conn = connect_postgres()
    add_event(conn, table=pg_outbox.table, payload={"n": 1}, **EVENT)
    conn.rollback()
    add_event(conn, table=pg_outbox.table, payload={"n": 2}, **EVENT)
    add_event(conn, table=pg_outbox.table, payload={"n": 3}, delete_after=True, **EVENT)
    conn.commit()
    conn.close()
    assert [{"n": 2}] == payloads(pg_outbox)


@pytest.mark.postgres
def test_psycopg3_sync_event_follows_the_transaction(pg_outbox: OutboxDB) -> None:
    """psycopg 3: the event is written in the connection's transaction (implicit or block)."""
    import psycopg

    with psycopg.connect(POSTGRES_URL) as conn:
        add_event(conn, table=pg_outbox.table, payload={"n": 1}, **EVENT)
        conn.rollback()
        with conn.transaction():
            add_event(conn, table=pg_outbox.table, payload={"n": 2}, **EVENT)
    assert [{"n": 2}] == payloads(pg_outbox)


@pytest.mark.postgres
async def test_psycopg3_async_event_follows_the_transaction(pg_outbox: OutboxDB) -> None:
    """psycopg 3 AsyncConnection: add_event_async writes in the caller's transaction."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
        await add_event_async(conn, table=pg_outbox.table, payload={"n": 1}, **EVENT)
        await conn.rollback()
        await add_event_async(conn, table=pg_outbox.table, payload={"n": 2}, **EVENT)
        await conn.commit()
    assert [{"n": 2}] == payloads(pg_outbox)


@pytest.fixture
def pg_engine_url() -> Iterator[str]:
    return POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.mark.postgres
def test_sqlalchemy_sync_session_event_follows_the_transaction(
    pg_outbox: OutboxDB, pg_engine_url: str
) -> None:
    """SQLAlchemy Session: the event commits or rolls back with the session."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine(pg_engine_url)
    with Session(engine) as session:
        add_event(session, table=pg_outbox.table, payload={"n": 1}, **EVENT)
        session.rollback()
        add_event(session, table=pg_outbox.table, payload={"n": 2}, **EVENT)
        session.commit()
    with engine.begin() as conn:
        add_event(conn, table=pg_outbox.table, payload={"n": 3}, **EVENT)
    engine.dispose()
    assert [{"n": 2}, {"n": 3}] == payloads(pg_outbox)


@pytest.mark.postgres
async def test_sqlalchemy_async_event_follows_the_transaction(
    pg_outbox: OutboxDB, pg_engine_url: str
) -> None:
    """SQLAlchemy AsyncSession and AsyncConnection over psycopg 3 async."""
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    engine = create_async_engine(pg_engine_url)
    async with AsyncSession(engine) as session:
        await add_event_async(session, table=pg_outbox.table, payload={"n": 1}, **EVENT)
        await session.rollback()
        await add_event_async(session, table=pg_outbox.table, payload={"n": 2}, **EVENT)
        await session.commit()
    async with engine.begin() as conn:
        await add_event_async(conn, table=pg_outbox.table, payload={"n": 3}, **EVENT)
    await engine.dispose()
    assert [{"n": 2}, {"n": 3}] == payloads(pg_outbox)


def test_sqlalchemy_sync_on_sqlite(sqlite_outbox: OutboxDB) -> None:
    """SQLAlchemy on SQLite quotes and binds the same way."""
    from sqlalchemy import create_engine

    engine = create_engine(sqlite_outbox.url)
    with engine.begin() as conn:
        add_event(conn, table=sqlite_outbox.table, payload={"n": 1}, **EVENT)
    engine.dispose()
    assert [{"n": 1}] == payloads(sqlite_outbox)


@pytest.mark.mysql
def test_pymysql_event_follows_the_transaction(mysql_outbox: OutboxDB) -> None:
    """PyMySQL: rollback drops the event, commit keeps it."""
    conn = connect_mysql()
    add_event(conn, table=mysql_outbox.table, payload={"n": 1}, **EVENT)
    conn.rollback()
    add_event(conn, table=mysql_outbox.table, payload={"n": 2}, **EVENT)
    conn.commit()
    conn.close()
    assert [{"n": 2}] == payloads(mysql_outbox)
    assert MYSQL_URL.startswith("mysql://")
