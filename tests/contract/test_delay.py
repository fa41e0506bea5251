"""Delayed delivery on every backend: never before its time, at most a stated lateness after
it, later events not held up, a TTL that counts from publish, and a subscriber restart before
the delivery time (see docs/delivery.md, "Delayed delivery")."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from broker import Bus, Event
from broker.delay import due_at
from tests.helpers import Collector, eventually

#: The lateness each backend promises past the delivery time (seconds), generous for a busy
#: shared test machine; docs/delivery.md gives what is typical.
LATENESS = {"memory": 1.0, "sqlite": 2.0, "kafka": 3.0, "amqp": 3.0, "nats": 3.0}


class Arrivals(Collector):
    """A collector that notes when (wall clock) each event reached the handler."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[str, float] = {}

    async def __call__(self, event: Event) -> None:
        self.at.setdefault(event.id, time.time())
        await super().__call__(event)


def _lateness(bus: Bus) -> float:
    return LATENESS[urlsplit(bus.url).scheme]


def _assert_on_time(bus: Bus, got: Arrivals, event: Event) -> None:
    due = due_at(event)
    assert due is not None
    arrived = got.at[event.id]
    assert arrived >= due, f"handled {due - arrived:.3f}s before its time"
    assert arrived - due <= _lateness(bus), f"handled {arrived - due:.3f}s late"


async def test_delayed_event_waits_for_its_time(make_bus: Callable[..., Bus], topic: str) -> None:
    """An event published with delay= reaches the handler not before its time and at most the
    backend's stated lateness after it."""
    bus = await make_bus().start()
    got = Arrivals()
    await bus.subscribe(topic, got, group="g")
    sent = await bus.publish(topic, type="later", data={"n": 1}, delay=1.0)
    await eventually(lambda: sent.id in got.ids, timeout=30)
    _assert_on_time(bus, got, sent)
    assert {"n": 1} == got.events[0].data


async def test_deliver_at_reaches_every_group(make_bus: Callable[..., Bus], topic: str) -> None:
    """An event published with deliver_at= reaches each group at that time, not before."""
    bus = await make_bus().start()
    first, second = Arrivals(), Arrivals()
    await bus.subscribe(topic, first, group="g1")
    await bus.subscribe(topic, second, group="g2")
    at = datetime.now(UTC) + timedelta(seconds=1)
    sent = await bus.publish(topic, type="at", deliver_at=at)
    await eventually(lambda: sent.id in first.ids and sent.id in second.ids, timeout=30)
    assert at.timestamp() == due_at(sent)
    _assert_on_time(bus, first, sent)
    _assert_on_time(bus, second, sent)


async def test_later_events_are_not_held_up(make_bus: Callable[..., Bus], topic: str) -> None:
    """Events published after a delayed one, of another key and of the same key, are handled
    before it: a delayed event is ordered by its delivery time."""
    bus = await make_bus().start()
    got = Arrivals()
    await bus.subscribe(topic, got, group="g")
    delayed = await bus.publish(topic, type="delayed", key="a", delay=2.0)
    same_key = await bus.publish(topic, type="now", key="a")
    other_key = await bus.publish(topic, type="now", key="b")
    await eventually(lambda: {same_key.id, other_key.id} <= set(got.ids), timeout=30)
    assert delayed.id not in got.ids
    await eventually(lambda: delayed.id in got.ids, timeout=30)
    assert delayed.id == got.ids[-1]
    _assert_on_time(bus, got, delayed)


async def test_more_delayed_events_than_the_prefetch_hold_nothing_up(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """Many more delayed events than the subscription's prefetch (and NATS's max_ack_pending)
    do not hold up an event published after them."""
    bus = await make_bus().start()
    got = Arrivals()
    await bus.subscribe(topic, got, group="g", prefetch=2)
    result = await bus.publish_many(topic, [{"type": "later"}] * 40, delay=30)
    result.raise_for_failures()
    now = await bus.publish(topic, type="now")
    await eventually(lambda: now.id in got.ids, timeout=20)
    assert [now.id] == got.ids


async def test_publish_many_delays_each_event(make_bus: Callable[..., Bus], topic: str) -> None:
    """publish_many takes delay= for the list and delay per item; each waits for its time."""
    bus = await make_bus().start()
    got = Arrivals()
    await bus.subscribe(topic, got, group="g")
    result = await bus.publish_many(
        topic, [{"type": "a"}, {"type": "b", "delay": 0}, {"type": "c", "delay": 1.5}], delay=1.0
    )
    result.raise_for_failures()
    a, b, c = (outcome.event for outcome in result)
    await eventually(lambda: {a.id, b.id, c.id} <= set(got.ids), timeout=30)
    assert b.id == got.ids[0]
    _assert_on_time(bus, got, a)
    _assert_on_time(bus, got, c)


async def test_ttl_counts_from_publish(make_bus: Callable[..., Bus], topic: str) -> None:
    """A delayed event whose TTL passes before its delivery time is expired, never handled."""
    bus = await make_bus().start()
    got = Arrivals()
    await bus.subscribe(topic, got, group="g")
    short = await bus.publish(topic, type="short", ttl=0.5, delay=1.5)
    long = await bus.publish(topic, type="long", ttl=60, delay=1.5)
    await eventually(lambda: long.id in got.ids, timeout=30)
    _assert_on_time(bus, got, long)
    if not bus.capabilities.native_ttl:  # a native-TTL broker may drop it before we see it

        async def dead_lettered() -> bool:
            return len(await bus.dead_letters(f"{topic}.dlq")) == 1

        await eventually(dead_lettered, timeout=30)
        [dead] = await bus.dead_letters(f"{topic}.dlq")
        assert (short.id, "expired") == (dead.id, dead.extensions["dlqreason"])
    assert [long.id] == got.ids


async def test_restart_before_the_time_still_delivers(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """A group whose consumer stops (its bus closed) before the delivery time gets the event
    from its next consumer, at its time."""
    publisher = await make_bus().start()
    first = await make_bus().start()
    early = Arrivals()
    await first.subscribe(topic, early, group="g")
    sent = await publisher.publish(topic, type="later", delay=2.0)
    await first.stop()
    second = await make_bus().start()
    got = Arrivals()
    await second.subscribe(topic, got, group="g")
    await eventually(lambda: sent.id in got.ids, timeout=60)
    assert [] == early.ids
    due = due_at(sent)
    assert due is not None
    assert got.at[sent.id] >= due


async def test_many_delayed_events_each_on_time(make_bus: Callable[..., Bus], topic: str) -> None:
    """Twenty events due at spread times over a few keys each arrive on time."""
    bus = await make_bus().start()
    got = Arrivals()
    await bus.subscribe(topic, got, group="g")
    sent = [
        await bus.publish(topic, type="t", key=f"k{n % 4}", delay=0.5 + n * 0.05) for n in range(20)
    ]
    await eventually(lambda: len(got.ids) >= len(sent), timeout=60)
    for event in sent:
        _assert_on_time(bus, got, event)
