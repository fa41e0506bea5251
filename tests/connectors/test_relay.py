"""The outbox promise on every database: an event is published iff its transaction committed,
none is lost, per-aggregate order is kept, bad rows go to the DLQ, one relay per outbox."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from connectors import RelayLockedError
from connectors.runtime import build_source
from tests.connectors.conftest import OutboxDB
from tests.connectors.relaying import (
    collecting,
    memory_broker,
    order_rows,
    running_relay,
    seqs,
)

TOPIC = "outbox.event.order"


async def test_rolled_back_transaction_publishes_nothing(outbox: OutboxDB) -> None:
    """Rows of a rolled-back transaction never reach the broker; committed ones around it do."""
    broker = memory_broker()
    first = outbox.write(order_rows(1, start=0))
    outbox.write(order_rows(2, start=1), rollback=True)
    last = outbox.write(order_rows(1, start=3))
    async with collecting(broker, TOPIC) as got, running_relay(outbox, broker) as run:
        await run.until(lambda: len(got[TOPIC].events) >= 2, what="the committed events")
    assert first + last == got[TOPIC].ids


async def test_multi_row_transaction_publishes_every_row_in_order(outbox: OutboxDB) -> None:
    """All rows of one transaction are published, in insert order, with Debezium routing."""
    broker = memory_broker()
    ids = outbox.write(order_rows(30, headers={"correlationid": "c-7", "tenant": "acme"}))
    async with collecting(broker, TOPIC) as got, running_relay(outbox, broker) as run:
        await run.until(lambda: len(got[TOPIC].events) >= 30, what="30 events")
    events = got[TOPIC].events
    assert ids == [e.id for e in events]
    assert list(range(30)) == seqs(events)
    first = events[0]
    assert ("order.placed", "choreo-outbox/test", "o0") == (
        first.type,
        first.source,
        first.partitionkey,
    )
    assert ("c-7", "acme") == (first.correlationid, first.extensions["tenant"])


async def test_restart_resumes_after_the_confirmed_position(outbox: OutboxDB) -> None:
    """A relay stopped cleanly and started again publishes only what it had not published."""
    broker = memory_broker()
    before = outbox.write(order_rows(5))
    async with collecting(broker, TOPIC) as got:
        async with running_relay(outbox, broker) as run:
            await run.until(lambda: len(got[TOPIC].events) >= 5, what="the first 5 events")
        after = outbox.write(order_rows(5, start=5))
        async with running_relay(outbox, broker) as run:
            await run.until(lambda: len(got[TOPIC].events) >= 10, what="the next 5 events")
    assert before + after == got[TOPIC].ids


async def test_bad_rows_go_to_the_dlq_and_the_stream_goes_on(
    make_outbox: Callable[..., OutboxDB],
) -> None:
    """A non-JSON payload and an unroutable aggregatetype are dead-lettered with a reason."""
    outbox = make_outbox(payload="text")
    broker = memory_broker()
    good = order_rows(2)
    bad_json = {**good[0], "payload": "{not json"}
    bad_route = {**good[0], "aggregatetype": "no such/route"}
    ids = outbox.write([good[0], bad_json, bad_route, good[1]])
    async with collecting(broker, TOPIC, "outbox.dlq") as got, running_relay(outbox, broker) as run:
        await run.until(
            lambda: len(got[TOPIC].events) >= 2 and len(got["outbox.dlq"].events) >= 2,
            what="two events and two dead letters",
        )
    assert [ids[0], ids[3]] == got[TOPIC].ids
    dead = {e.id: e.extensions for e in got["outbox.dlq"].events}
    assert {ids[1]: "undecodable", ids[2]: "unroutable"} == {
        key: ext["dlqreason"] for key, ext in dead.items()
    }
    assert "not JSON" in str(dead[ids[1]]["dlqerror"])
    assert "{not json" == next(e.data for e in got["outbox.dlq"].events if e.id == ids[1])


async def test_a_second_relay_on_the_same_outbox_refuses_to_start(outbox: OutboxDB) -> None:
    """Only one relay reads an outbox (slot, binlog lock, cursor lock); the second is told so."""
    first = build_source(outbox.url, table=outbox.table, slot=outbox.slot)
    second = build_source(outbox.url, table=outbox.table, slot=outbox.slot)
    await first.open()
    try:
        with pytest.raises(RelayLockedError, match="already"):
            await second.open()
    finally:
        await first.close()
