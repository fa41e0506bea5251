"""A row whose route gives no valid topic name is dead-lettered as ``unroutable`` by the real
relay, also when the name is valid but for a trailing newline."""

from __future__ import annotations

from tests.connectors.conftest import OutboxDB
from tests.connectors.relaying import collecting, memory_broker, order_rows, running_relay

TOPIC = "outbox.event.order"


async def test_an_aggregatetype_ending_in_a_newline_is_unroutable(outbox: OutboxDB) -> None:
    """aggregatetype "orders\\n" goes to the DLQ as unroutable, not to a topic ending in "\\n";
    the rows around it are relayed."""
    broker = memory_broker()
    good = order_rows(2)
    ids = outbox.write([good[0], {**good[0], "aggregatetype": "orders\n"}, good[1]])
    async with collecting(broker, TOPIC, "outbox.dlq") as got, running_relay(outbox, broker) as run:
        await run.until(
            lambda: len(got[TOPIC].events) >= 2 and len(got["outbox.dlq"].events) >= 1,
            what="two events and one dead letter",
        )
        topics = {t.name for t in await run.relay.bus.topics()}
    assert [ids[0], ids[2]] == got[TOPIC].ids
    [dead] = got["outbox.dlq"].events
    assert (ids[1], "unroutable") == (dead.id, dead.extensions["dlqreason"])
    assert [] == [name for name in topics if name.endswith("\n")]
