"""Faults an operator meets, against the real databases: a replication slot dropped while the
relay was down, a role without REPLICATION, rows written in statement format, a binlog purged
past the stored position. None may skip a committed row silently; each is one clear line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from itertools import pairwise
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from structlog.testing import capture_logs

from broker.observability import configure_logging
from connectors import DatabaseUnavailableError, PositionLostError, init_outbox
from connectors.dburl import DatabaseURL
from connectors.relay_mysql import MySQLSource
from connectors.relay_postgres import PostgresSource
from connectors.runtime import build_relay
from devservers.databases import connect_mysql, connect_postgres
from devservers.nats import NatsServer
from tests.connectors.conftest import REPO, OutboxDB
from tests.connectors.relaying import (
    collecting,
    eventually,
    memory_broker,
    order_rows,
    running_relay,
)

TOPIC = "outbox.event.order"


def choreo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "choreo", *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip


def pg_admin(sql: str, *params: object) -> None:
    """Run one statement on PostgreSQL as the test's superuser, in autocommit."""
    conn = connect_postgres()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql, params)
    conn.close()


def drop_slot(slot: str) -> None:
    pg_admin("SELECT pg_drop_replication_slot(%s)", slot)


@pytest.mark.postgres
async def test_a_slot_dropped_while_the_relay_was_down_is_refused_not_recreated(
    pg_outbox: OutboxDB,
) -> None:
    """A new slot would silently skip the rows committed after the drop: the relay refuses
    with one line; after `init` recreates the slot, the documented re-insert delivers them."""
    broker = memory_broker()
    first = pg_outbox.write(order_rows(3))
    async with collecting(broker, TOPIC) as got:
        async with running_relay(pg_outbox, broker) as run:
            await run.until(lambda: len(got[TOPIC].events) >= 3, what="the first events")
        await eventually(lambda: not pg_outbox.relay_locked(), what="the slot to be released")
        drop_slot(pg_outbox.slot)
        gap = pg_outbox.write(order_rows(2, start=3))

        relay = choreo(
            "outbox", "relay", "--db", pg_outbox.url, "--table", pg_outbox.table,
            "--slot", pg_outbox.slot, "--broker", broker,
        )  # fmt: skip
        lines = relay.stderr.strip().splitlines()
        assert (1, 1) == (relay.returncode, len(lines)), relay.stderr
        assert f"replication slot {pg_outbox.slot} on " in lines[0]
        assert "is gone, but this relay had confirmed" in lines[0]
        assert f"choreo outbox init --table {pg_outbox.table} --slot {pg_outbox.slot}" in lines[0]
        source = PostgresSource(pg_outbox.url, table=pg_outbox.table, slot=pg_outbox.slot)
        with pytest.raises(PositionLostError):
            await source.open()

        init_outbox(pg_outbox.url, pg_outbox.table, slot=pg_outbox.slot)
        conn = connect_postgres()
        with conn, conn.cursor() as cur:  # the recipe in docs/outbox.md, 'A lost slot'
            cur.execute(
                f'WITH gone AS (DELETE FROM "{pg_outbox.table}" WHERE created_at > %s '
                f'RETURNING *) INSERT INTO "{pg_outbox.table}" SELECT * FROM gone',
                (got[TOPIC].events[-1].time,),
            )
        conn.close()
        async with running_relay(pg_outbox, broker) as run:
            await run.until(lambda: len(got[TOPIC].events) >= 5, what="the re-inserted rows")
    assert first + gap == got[TOPIC].ids


@pytest.mark.postgres
def test_a_role_without_replication_gets_one_line_saying_alter_role(pg_outbox: OutboxDB) -> None:
    """Creating the slot as a role without REPLICATION names the ALTER ROLE to run."""
    conn = connect_postgres()
    conn.autocommit = True
    role = f"norepl_{pg_outbox.slot[-10:]}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN")
        cur.execute(f'GRANT ALL ON "{pg_outbox.table}", choreo_outbox_offsets TO {role}')
    try:
        db = DatabaseURL.parse(pg_outbox.url)
        url = f"postgresql://{role}@{db.host}:{db.port or 5432}/{db.database}"
        relay = choreo(
            "outbox", "relay", "--db", url, "--table", pg_outbox.table,
            "--slot", f"{pg_outbox.slot}_2", "--broker", memory_broker(),
        )  # fmt: skip
    finally:
        with conn.cursor() as cur:
            cur.execute(f'REVOKE ALL ON "{pg_outbox.table}", choreo_outbox_offsets FROM {role}')
            cur.execute(f"DROP ROLE {role}")
        conn.close()
    lines = relay.stderr.strip().splitlines()
    assert (1, 1) == (relay.returncode, len(lines)), relay.stderr
    assert f"user {role} may not create replication slot" in lines[0]
    assert f"run ALTER ROLE {role} REPLICATION" in lines[0]


@pytest.mark.mysql
async def test_rows_written_in_statement_format_are_dead_letters_not_skipped(
    mysql_outbox: OutboxDB,
) -> None:
    """A session with binlog_format=STATEMENT logs SQL, not row values: each such insert is
    dead-lettered with its SQL (one warning line each) and the stream goes on."""
    broker = memory_broker()
    before = mysql_outbox.write(order_rows(1))
    conn = connect_mysql()
    with conn.cursor() as cur:
        cur.execute("SET SESSION binlog_format = 'STATEMENT'")
    lost = mysql_outbox.write(order_rows(2, start=1), conn=conn)
    conn.close()
    after = mysql_outbox.write(order_rows(1, start=3))
    async with (
        collecting(broker, TOPIC, "outbox.dlq") as got,
        running_relay(mysql_outbox, broker) as run,
    ):
        await run.until(
            lambda: len(got[TOPIC].events) >= 2 and len(got["outbox.dlq"].events) >= 2,
            what="the rows and the dead letters",
        )
    assert before + after == got[TOPIC].ids
    dead = got["outbox.dlq"].events
    assert ["undecodable"] * 2 == [e.extensions["dlqreason"] for e in dead]
    assert all("in statement format at binlog" in str(e.extensions["dlqerror"]) for e in dead)
    sqls = sorted(str(e.data) for e in dead)
    assert all(sql.startswith("INSERT INTO") for sql in sqls), sqls
    assert sorted(lost) == sorted(i for i in lost for sql in sqls if f"'{i}'" in sql), sqls
    assert 2 == run.relay.stats.dead_lettered


@pytest.mark.mysql
def test_a_binlog_purged_past_the_stored_position_is_one_line_not_a_skip(
    mysql_outbox: OutboxDB,
) -> None:
    """A stored position in a binlog the server no longer has stops the relay with one line
    pointing at the recovery steps, instead of a driver error or starting elsewhere."""
    init_outbox(mysql_outbox.url, mysql_outbox.table)  # records the start position
    relay_name = f"mysql:{DatabaseURL.parse(mysql_outbox.url).database}.{mysql_outbox.table}"
    conn = connect_mysql()
    with conn.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        first = cur.fetchone()[0]
        purged = f"{first.rsplit('.', 1)[0]}.000000"
        cur.execute(
            "UPDATE choreo_outbox_offsets SET position = %s WHERE relay = %s",
            (json.dumps({"file": purged, "pos": 4, "gtid": ""}), relay_name),
        )
        assert 1 == cur.rowcount
    conn.commit()
    conn.close()
    relay = choreo(
        "outbox", "relay", "--db", mysql_outbox.url, "--table", mysql_outbox.table,
        "--broker", memory_broker(),
    )  # fmt: skip
    lines = relay.stderr.strip().splitlines()
    assert (1, 1) == (relay.returncode, len(lines)), relay.stderr
    assert f"resumes from ({purged}:4) is not on" in lines[0]
    assert "'A purged binlog'" in lines[0]


@pytest.mark.postgres
async def test_connections_dropped_under_the_relay_are_one_error_not_a_driver_traceback(
    pg_outbox: OutboxDB,
) -> None:
    """When the server drops the relay's connections (a restart, pg_terminate_backend), the
    next confirmation or health check raises DatabaseUnavailableError, which the CLI prints as
    one line, not a psycopg2 error."""
    source = PostgresSource(
        pg_outbox.url, table=pg_outbox.table, slot=pg_outbox.slot, health_interval=0
    )
    await source.open()
    try:
        pg_admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN ("
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s) OR pid = %s",
            pg_outbox.slot,
            source._sql.get_backend_pid(),
        )
        await eventually(lambda: not pg_outbox.relay_locked(), what="the slot to be released")
        with pytest.raises(DatabaseUnavailableError, match="lost the replication stream"):
            await source.heartbeat()
    finally:
        await source.close()


def terminate_relay_connections(outbox: OutboxDB) -> None:
    """What a database restart does to a running relay: its server connections are closed."""
    if outbox.backend == "postgres":
        pg_admin(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            outbox.slot,
        )
        return
    conn = connect_mysql()
    with conn.cursor() as cur:
        db = DatabaseURL.parse(outbox.url)
        cur.execute(
            "SELECT IS_USED_LOCK(%s)", (f"choreo_outbox:mysql:{db.database}.{outbox.table}",)
        )
        holder = cur.fetchone()[0]
        cur.execute(f"KILL {int(holder)}")  # the next confirmation finds it gone
    conn.close()


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
)
async def test_a_connection_lost_while_relaying_is_reconnected_without_loss(
    outbox: OutboxDB,
) -> None:
    """The relay says so once, reconnects with backoff and resumes from its confirmed
    position: every row committed before, during and after is delivered."""
    broker = memory_broker()
    before = outbox.write(order_rows(3))
    async with collecting(broker, TOPIC) as got, running_relay(outbox, broker) as run:
        await run.until(lambda: len(got[TOPIC].events) >= 3, what="the first events")
        terminate_relay_connections(outbox)
        during = outbox.write(order_rows(3, start=3))
        await run.until(lambda: run.relay.stats.reconnects >= 1, what="a reconnection")
        after = outbox.write(order_rows(3, start=6))
        wanted = set(before + during + after)
        await run.until(lambda: wanted <= set(got[TOPIC].ids), what="every event")
    assert wanted == set(got[TOPIC].ids)


def quick_to_notice(url: str) -> str:
    """``url`` with publish and connect timeouts of 2 s: the relay notices an outage within
    seconds."""
    parts = urlsplit(url)
    quick = {"publish_timeout": "2", "connect_timeout": "2"}
    query = urlencode({**dict(parse_qsl(parts.query)), **quick})
    return urlunsplit(parts._replace(query=query))


async def test_a_nats_broker_down_while_rows_commit_holds_them_then_delivers(
    outbox: OutboxDB, restartable_nats: NatsServer
) -> None:
    """With nats-server killed, committed rows wait in the database while the relay retries
    (saying why); once it is back every row is delivered, in order per aggregate."""
    url = restartable_nats.url
    before = outbox.write(order_rows(3))
    async with running_relay(outbox, quick_to_notice(url)) as run:
        await run.until(lambda: run.relay.stats.relayed >= 3, what="the first events")
        await asyncio.to_thread(restartable_nats.kill)
        during = outbox.write(order_rows(6, start=3, aggregates=2))
        await run.until(lambda: run.relay.stats.publish_errors >= 1, what="a failed publish")
        await asyncio.to_thread(restartable_nats.start)
        await run.until(lambda: run.relay.stats.relayed >= 9, what="every event", timeout=60)
    async with collecting(url, TOPIC) as got:
        await eventually(lambda: len(got[TOPIC].events) >= 9, what="every event on the stream")
    assert sorted(before + during) == sorted(got[TOPIC].ids)
    for key in ("o0", "o1"):
        seqs = [e.data["seq"] for e in got[TOPIC].events if e.partitionkey == key]
        assert seqs == sorted(seqs)


BROKER_AWAY = "broker unavailable; outbox rows wait in the database, nothing is lost"
BROKER_STILL_AWAY = "broker still unavailable; outbox rows wait in the database"
BROKER_BACK = "broker available again; relaying the waiting rows"


@contextlib.contextmanager
def relay_logs() -> Iterator[list[dict[str, Any]]]:
    """Every log entry (info and up) of the relays built inside the block."""
    configure_logging("INFO")  # before the relay binds its logger, so that it is captured
    try:
        with capture_logs() as logs:
            yield logs
    finally:
        configure_logging()


def said(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


def warned(logs: list[dict[str, Any]], relay: str) -> list[dict[str, Any]]:
    return [e for e in logs if (e["log_level"], e.get("relay")) == ("warning", relay)]


@pytest.mark.parametrize("backend", ["sqlite"])  # the broker side is the same for every source
async def test_a_broker_outage_is_one_warning_reminders_and_one_line_back_not_one_per_retry(
    outbox: OutboxDB, restartable_nats: NatsServer
) -> None:
    """Many failed publishes while nats-server is down say one warning naming the broker and
    the error, then at most one reminder per interval, then one line with how long it was away;
    every row is delivered."""
    remind_every = 1.0
    before = outbox.write(order_rows(3))
    with relay_logs() as logs:
        async with running_relay(
            outbox, quick_to_notice(restartable_nats.url), still_down_every=remind_every
        ) as run:
            await run.until(lambda: run.relay.stats.relayed >= 3, what="the first events")
            await asyncio.to_thread(restartable_nats.kill)
            during = outbox.write(order_rows(6, start=3, aggregates=2))
            await run.until(
                lambda: run.relay.stats.publish_errors >= 4 and bool(said(logs, BROKER_STILL_AWAY)),
                what="several failed publishes and a reminder",
                timeout=60,
            )
            await asyncio.to_thread(restartable_nats.start)
            await run.until(lambda: run.relay.stats.relayed >= 9, what="every event", timeout=60)
        broker, name = run.relay.bus.url, run.relay.source.name
    async with collecting(restartable_nats.url, TOPIC) as got:
        await eventually(lambda: len(got[TOPIC].events) >= 9, what="every event on the stream")
    assert sorted(before + during) == sorted(got[TOPIC].ids)

    [away] = said(logs, BROKER_AWAY)
    assert ("warning", broker) == (away["log_level"], away["broker"])
    assert away["error"]
    [back] = said(logs, BROKER_BACK)
    reminders = [entry["away_for"] for entry in said(logs, BROKER_STILL_AWAY)]
    assert all(later - earlier >= remind_every for earlier, later in pairwise([0, *reminders]))
    assert back["away_for"] >= reminders[-1]
    warnings = warned(logs, name)
    assert 1 + len(reminders) == len(warnings), warnings


@pytest.mark.parametrize("backend", ["sqlite"])  # the broker side is the same for every source
async def test_a_broker_away_at_start_is_one_warning_and_one_line_back(
    outbox: OutboxDB, restartable_nats: NatsServer
) -> None:
    """A relay started while nats-server is down says so once however many connection attempts
    fail (no reminder within the default minute), then once when it connects; every row is
    delivered."""
    await asyncio.to_thread(restartable_nats.kill)
    rows = outbox.write(order_rows(3))
    with relay_logs() as logs:
        async with running_relay(outbox, quick_to_notice(restartable_nats.url)) as run:
            await run.until(
                lambda: run.relay.stats.publish_errors >= 3, what="several failed connections"
            )
            await asyncio.to_thread(restartable_nats.start)
            await run.until(lambda: run.relay.stats.relayed >= 3, what="every event", timeout=60)
        broker, name = run.relay.bus.url, run.relay.source.name
    async with collecting(restartable_nats.url, TOPIC) as got:
        await eventually(lambda: len(got[TOPIC].events) >= 3, what="every event on the stream")
    assert rows == got[TOPIC].ids
    [away] = said(logs, BROKER_AWAY)
    assert broker == away["broker"]
    assert 1 == len(said(logs, BROKER_BACK))
    assert [away] == warned(logs, name)


def test_resume_by_gtid_reaches_the_mysql_source() -> None:
    """`choreo outbox relay --resume gtid` (build_relay's resume=) was silently dropped."""
    relay = build_relay("mysql://root@127.0.0.1:3306/test", "memory://resume", resume="gtid")
    assert isinstance(relay.source, MySQLSource)
    assert "gtid" == relay.source.resume
