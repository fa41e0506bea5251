"""Outbox rows can carry a delivery time: the relay publishes them at once, with ``deliverat``,
and no subscriber sees them before that time (on every database)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from broker import Bus, Event
from broker.delay import due_at
from connectors import OutboxConfigError
from connectors.routing import OutboxRow, Router
from connectors.writers import OutboxRecord
from tests.connectors.conftest import OutboxDB
from tests.connectors.relaying import collecting, memory_broker, order_rows, running_relay

TOPIC = "outbox.event.order"


class Arrivals:
    """Collects events with the wall-clock time each reached the handler."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.at: dict[str, float] = {}

    async def __call__(self, event: Event) -> None:
        self.at[event.id] = time.time()
        self.events.append(event)


async def test_a_row_with_a_delivery_time_is_delivered_then(outbox: OutboxDB) -> None:
    """A row written with deliver_at reaches subscribers at that time; a row written after it
    without one is not held up."""
    broker = memory_broker()
    at = datetime.now(UTC) + timedelta(seconds=1)
    [later] = outbox.write(order_rows(1, deliver_at=at))
    [now] = outbox.write(order_rows(1, start=1))
    got = Arrivals()
    async with Bus(broker, source="checker") as bus, running_relay(outbox, broker) as run:
        await bus.subscribe(TOPIC, got, group="checker", from_beginning=True)
        await run.until(lambda: len(got.events) >= 2, what="both events")
    assert [now, later] == [e.id for e in got.events]
    assert at.timestamp() == due_at(got.events[1])
    assert got.at[later] >= at.timestamp()


async def test_delivery_time_is_kept_across_the_relay(outbox: OutboxDB) -> None:
    """The deliverat header of a row becomes the event's deliverat extension, in UTC."""
    broker = memory_broker()
    at = datetime(2020, 1, 1, 10, tzinfo=UTC) + timedelta(hours=1)
    [row] = outbox.write(order_rows(1, headers={"deliverat": "2020-01-01T12:00:00+01:00"}))
    async with collecting(broker, TOPIC) as got, running_relay(outbox, broker) as run:
        await run.until(lambda: len(got[TOPIC].events) >= 1, what="the event")
    [event] = got[TOPIC].events
    assert (row, "2020-01-01T11:00:00Z") == (event.id, event.extensions["deliverat"])
    assert at.timestamp() == due_at(event)


def test_a_naive_delivery_time_is_refused() -> None:
    """A writer given a naive datetime refuses it, naming the fix."""
    with pytest.raises(OutboxConfigError, match="no time zone"):
        OutboxRecord.build(
            aggregatetype="order", aggregateid=1, type="t", deliver_at=datetime(2026, 1, 1)
        )


@pytest.mark.parametrize("value", ["tomorrow", "2026-12-01T09:00:00", 42])
def test_a_row_with_a_bad_delivery_time_is_a_dead_letter(value: object) -> None:
    """A deliverat header that is not a time with a zone makes the row a dead letter."""
    row = OutboxRow(
        id="r1", aggregatetype="order", aggregateid="1", type="t", headers={"deliverat": value}
    )
    routed = Router().route_row(row)
    assert (True, "undecodable") == (routed.dead, routed.event.extensions["dlqreason"])
    assert "deliverat" in str(routed.event.extensions["dlqerror"])
