"""Delayed delivery's arguments and pieces: what publish accepts and refuses, how the delivery
time is written, the hold queue's order and RabbitMQ's wait-queue grid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from broker import Bus, ConfigurationError
from broker.adapters.kit import HoldQueue
from broker.adapters.rabbitmq.delay import MAX_WAIT_MS, wait_ms, wait_queue
from broker.delay import deliver_at, due_at, wait_seconds
from broker.envelope import Event, parse_time


async def test_publish_refuses_a_naive_time() -> None:
    """deliver_at= without a time zone is refused with the fix in the message."""
    async with Bus("memory://delay-naive") as bus:
        with pytest.raises(ConfigurationError, match="no time zone"):
            await bus.publish("t", type="x", deliver_at=datetime(2026, 12, 1, 9))


async def test_publish_refuses_delay_and_deliver_at_together() -> None:
    """Giving both delay= and deliver_at= is refused."""
    async with Bus("memory://delay-both") as bus:
        with pytest.raises(ConfigurationError, match="not both"):
            await bus.publish("t", type="x", delay=1, deliver_at=datetime.now(UTC))


@pytest.mark.parametrize("delay", [-1, float("nan"), True, "30s"])
async def test_publish_refuses_a_bad_delay(delay: object) -> None:
    """A negative, non-finite or non-numeric delay is refused."""
    async with Bus("memory://delay-bad") as bus:
        with pytest.raises(ConfigurationError, match="delay"):
            await bus.publish("t", type="x", delay=delay)  # type: ignore[arg-type]


async def test_publish_many_names_the_item_with_a_bad_delay() -> None:
    """An item of publish_many with both delay and deliver_at is refused by its position."""
    async with Bus("memory://delay-many") as bus:
        with pytest.raises(ConfigurationError, match="item 1: give delay= or deliver_at="):
            await bus.publish_many(
                "t", [{"type": "a"}, {"type": "b", "delay": 1, "deliver_at": datetime.now(UTC)}]
            )


def test_deliver_at_is_utc_rfc3339() -> None:
    """An aware time in any zone is written in UTC with a Z; a delay counts from now."""
    paris = timezone(timedelta(hours=1))
    assert "2026-12-01T09:00:00Z" == deliver_at(None, datetime(2026, 12, 1, 10, tzinfo=paris))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert "2026-01-01T00:00:30Z" == deliver_at(timedelta(seconds=30), None, now)
    assert "2026-01-01T00:00:01.500000Z" == deliver_at(1.5, None, now)
    assert deliver_at(None, None) is None


def test_release_is_the_earlier_of_delivery_and_expiry() -> None:
    """An event is released at its delivery time, or at its expiry when that comes first."""
    event = Event(
        type="t",
        source="s",
        extensions={"deliverat": "2026-01-01T00:01:00Z", "expiration": "2026-01-01T00:00:10Z"},
    )
    assert parse_time("2026-01-01T00:00:10Z").timestamp() == due_at(event)
    assert due_at(Event(type="t", source="s")) is None
    assert 0.0 == wait_seconds(Event(type="t", source="s"))


def test_hold_queue_releases_by_time_then_arrival() -> None:
    """Held items come out when due, earliest first, equal times in arrival order."""
    held: HoldQueue[str] = HoldQueue()
    held.push(2.0, "b1")
    held.push(1.0, "a")
    held.push(2.0, "b2")
    held.push(3.0, "c")
    assert [] == held.pop_due(0.5)
    assert ["a", "b1", "b2"] == held.pop_due(2.0)
    assert 3.0 == held.next_due()
    assert 1 == held.discard(lambda item: item == "c")
    assert held.next_due() is None


@pytest.mark.parametrize("seconds", [0.001, 0.9, 1.0, 1.234, 59.9, 3600.5, 86_400 * 7.3])
def test_rabbitmq_wait_is_never_early_and_close(seconds: float) -> None:
    """The wait-queue TTL is at least the time left and at most 1/128 of it (or 50 ms) more."""
    ms = wait_ms(seconds, "t")
    assert ms >= seconds * 1000
    assert ms - seconds * 1000 <= max(50.0, seconds * 1000 / 128)
    assert f"choreo.delay.{ms}.orders" == wait_queue("orders", ms)


def test_rabbitmq_refuses_a_wait_past_its_limit() -> None:
    """A delivery time further away than RabbitMQ's longest TTL is refused, naming the topic."""
    with pytest.raises(ConfigurationError, match="orders"):
        wait_ms(MAX_WAIT_MS / 1000 + 86_400, "orders")
