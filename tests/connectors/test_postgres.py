"""PostgreSQL specifics: the pgoutput decoder on real server bytes (text and binary tuples),
heartbeats that keep an idle slot from retaining WAL, the retained-WAL metric, init checks."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import pytest

from connectors import init_outbox
from connectors.pgoutput import (
    Begin,
    Commit,
    Insert,
    PgOutputError,
    Relation,
    Skipped,
    decode_message,
    format_lsn,
    parse_lsn,
    to_python,
)
from connectors.relay_postgres import RETAINED_WAL, PostgresSource
from connectors.runtime import outbox_status
from devservers.databases import connect_postgres
from tests.connectors.conftest import OutboxDB
from tests.connectors.relaying import order_rows

pytestmark = pytest.mark.postgres


def peek(outbox: OutboxDB, *, binary: bool) -> list[Any]:
    """The slot's pending changes as raw pgoutput bytes, decoded, without consuming them."""
    options = ["proto_version", "1", "publication_names", f"choreo_outbox_{outbox.table}"]
    if binary:
        options += ["binary", "true"]
    conn = connect_postgres()
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, "
            + ", ".join(["%s"] * len(options))
            + ")",
            (outbox.slot, *options),
        )
        raw = [bytes(row[0]) for row in cur.fetchall()]
    conn.close()
    return [decode_message(message) for message in raw]


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_decoder_reads_begin_relation_insert_commit_from_the_server(
    pg_outbox: OutboxDB, binary: bool
) -> None:
    """Real pgoutput bytes decode into Begin, Relation, Inserts and Commit with typed values."""
    event_id = str(uuid.uuid4())
    pg_outbox.write(
        [
            {
                "id": event_id,
                "aggregatetype": "order",
                "aggregateid": "42",
                "type": "order.placed",
                "payload": {"total": 10},
                "headers": {"correlationid": "c-1"},
            },
            *order_rows(1, start=1),
        ]
    )
    messages = peek(pg_outbox, binary=binary)
    kinds = [type(m).__name__ for m in messages]
    assert ["Begin", "Relation", "Insert", "Insert", "Commit"] == kinds
    begin, relation, insert, commit = messages[0], messages[1], messages[2], messages[-1]
    assert isinstance(begin, Begin)
    assert isinstance(commit, Commit)
    assert isinstance(relation, Relation)
    assert isinstance(insert, Insert)
    assert (pg_outbox.table, "public") == (relation.name, relation.namespace)
    assert begin.final_lsn == commit.commit_lsn < commit.end_lsn
    columns = [c.name for c in relation.columns]
    assert ["id", "aggregatetype", "aggregateid", "type", "payload", "headers", "created_at"] == (
        columns
    )
    assert {"b" if binary else "t"} == {kind for kind, _ in insert.values}
    values = {
        c.name: to_python(kind, raw, c.type_oid)
        for c, (kind, raw) in zip(relation.columns, insert.values, strict=True)
    }
    assert (event_id, "order", "42") == (
        values["id"],
        values["aggregatetype"],
        values["aggregateid"],
    )
    assert {"total": 10} == json.loads(values["payload"])
    assert {"correlationid": "c-1"} == json.loads(values["headers"])
    assert isinstance(values["created_at"], datetime)
    assert values["created_at"].tzinfo is not None


def test_decoder_skips_update_delete_and_reads_delete_after_insert(pg_outbox: OutboxDB) -> None:
    """Delete-after-insert still shows the Insert; Update/Delete/Truncate are recognised."""
    conn = connect_postgres()
    with conn:
        with conn.cursor() as cur:
            cur.execute(
                f'ALTER PUBLICATION "choreo_outbox_{pg_outbox.table}" SET (publish = '
                "'insert, update, delete, truncate')"
            )
        pg_outbox.write(order_rows(1, delete_after=True), conn=conn)
        with conn.cursor() as cur:
            cur.execute(f'TRUNCATE "{pg_outbox.table}"')
    conn.close()
    kinds = [
        m.kind if isinstance(m, Skipped) else type(m).__name__
        for m in peek(pg_outbox, binary=False)
    ]
    assert ["Begin", "Relation", "Insert", "delete", "Commit"] == kinds[:5]
    assert "truncate" in kinds[5:]


def test_decoder_rejects_unknown_and_truncated_messages() -> None:
    """Bytes that are not pgoutput raise PgOutputError instead of being misread."""
    with pytest.raises(PgOutputError, match="unknown pgoutput message type"):
        decode_message(b"Z")
    with pytest.raises(PgOutputError, match="truncated"):
        decode_message(b"B\x00\x00")
    assert 0x16B374D848 == parse_lsn("16/B374D848")
    assert "16/B374D848" == format_lsn(0x16B374D848)


async def test_idle_heartbeat_advances_the_slot_past_unrelated_wal(pg_outbox: OutboxDB) -> None:
    """While idle, the relay confirms the server's WAL end so the slot stops retaining WAL."""
    source = PostgresSource(pg_outbox.url, table=pg_outbox.table, slot=pg_outbox.slot)
    await source.open()
    try:
        conn = connect_postgres()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE noise (x int)")
            cur.execute("INSERT INTO noise SELECT generate_series(1, 1000)")
            cur.execute("SELECT pg_current_wal_lsn()::text")
            target = parse_lsn(cur.fetchone()[0])
            confirmed = 0
            for _ in range(200):
                assert await source.next_change(0.05) is None
                await source.heartbeat()
                cur.execute(
                    "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                    "WHERE slot_name = %s",
                    (pg_outbox.slot,),
                )
                confirmed = parse_lsn(cur.fetchone()[0])
                if confirmed >= target:
                    break
        conn.close()
    finally:
        await source.close()
    assert confirmed >= target


async def test_retained_wal_is_measured_and_warned_about(pg_outbox: OutboxDB) -> None:
    """The relay exports the slot's retained WAL and flags it past the threshold."""
    pg_outbox.write(order_rows(50))
    source = PostgresSource(
        pg_outbox.url,
        table=pg_outbox.table,
        slot=pg_outbox.slot,
        wal_warning_bytes=0,
        health_interval=0,
    )
    await source.open()
    try:
        await source.heartbeat()
    finally:
        await source.close()
    assert source.retained_wal is not None
    assert source.retained_wal > 0
    assert source.retained_wal == RETAINED_WAL.labels(pg_outbox.slot)._value.get()


def test_status_reports_slot_health_and_lag(pg_outbox: OutboxDB) -> None:
    """`status` shows the slot, its position and the events not yet relayed."""
    pg_outbox.write(order_rows(3))
    info = outbox_status(pg_outbox.url, table=pg_outbox.table, slot=pg_outbox.slot)
    assert (True, False, 3) == (info["slot_exists"], info["slot_active"], info["lag_events"])
    assert info["lag_seconds"] >= 0
    assert info["retained_wal_bytes"] > 0


def test_init_is_idempotent(pg_outbox: OutboxDB) -> None:
    """Running init again keeps the table, publication and slot."""
    report = init_outbox(pg_outbox.url, pg_outbox.table, slot=pg_outbox.slot)
    assert f"replication slot {pg_outbox.slot}" in report.created
