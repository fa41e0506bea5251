"""The delivery semantics of DESIGN.md, pinned on every backend."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from broker import Bus, ConfigurationError, Event
from tests.helpers import Collector, eventually


async def test_round_trip_keeps_every_attribute(make_bus: Callable[..., Bus], topic: str) -> None:
    """An event arrives with its id, source, type, time, subject, data and extensions intact."""
    bus = await make_bus(source="svc-a").start()
    got = Collector()
    await bus.subscribe(topic, got, group="g")
    sent = Event(
        type="order.placed",
        source="svc-a",
        data={"order": 7, "items": ["a", "b"], "note": "ünïcode"},
        subject="order/7",
        time=datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC),
        dataschema="https://example.test/schemas/order",
        extensions={"correlationid": "c-7", "partitionkey": "7", "tenant": "acme"},
    )
    published = await bus.publish(topic, sent)
    await eventually(lambda: len(got.events) == 1, what="the event")
    received = got.events[0]
    assert published == received
    assert (sent.id, sent.subject, sent.data) == (received.id, received.subject, received.data)
    assert received.extensions["tenant"] == "acme"
    assert received.correlationid == "c-7"


async def test_binary_data_round_trips(make_bus: Callable[..., Bus], topic: str) -> None:
    """Non-JSON data keeps its bytes and content type."""
    bus = await make_bus().start()
    got = Collector()
    await bus.subscribe(topic, got, group="g")
    payload = bytes(range(256))
    await bus.publish(
        topic,
        Event(type="blob", source="s", data=payload, datacontenttype="application/octet-stream"),
    )
    await eventually(lambda: len(got.events) == 1)
    assert payload == got.events[0].data
    assert got.events[0].datacontenttype == "application/octet-stream"


async def test_two_groups_each_get_everything(make_bus: Callable[..., Bus], topic: str) -> None:
    """Every group receives every event (fan-out between services)."""
    bus = await make_bus().start()
    billing, shipping = Collector(), Collector()
    await bus.subscribe(topic, billing, group="billing")
    await bus.subscribe(topic, shipping, group="shipping")
    sent = [(await bus.publish(topic, type="t", data=i)).id for i in range(20)]
    await eventually(lambda: len(billing.events) == 20 and len(shipping.events) == 20)
    assert sorted(sent) == sorted(billing.ids) == sorted(shipping.ids)


async def test_a_handler_cannot_change_another_groups_event(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """What one group's handler changes in its event (data, extensions, attributes) another
    group's handler does not see, nor a later delivery of it."""
    bus = await make_bus().start()
    changed = asyncio.Event()
    seen: list[tuple[object, object, str]] = []

    async def vandal(event: Event) -> None:
        event.data["items"].append("x")
        event.data["note"] = "changed"
        event.extensions["tenant"] = "other"
        event.type = "changed"
        changed.set()

    async def reader(event: Event) -> None:
        await changed.wait()
        seen.append((event.data, event.extensions.get("tenant"), event.type))

    await bus.subscribe(topic, vandal, group="vandal")
    await bus.subscribe(topic, reader, group="reader")
    data = {"items": ["a"], "note": "original"}
    await bus.publish(topic, type="t", data=data, extensions={"tenant": "acme"})
    await eventually(lambda: len(seen) == 1, what="the reader's delivery")
    assert [({"items": ["a"], "note": "original"}, "acme", "t")] == seen


async def test_many_concurrent_subscribers(make_bus: Callable[..., Bus], topic: str) -> None:
    """Eight groups subscribed at once each receive all events published concurrently."""
    bus = await make_bus().start()
    collectors = [Collector() for _ in range(8)]
    for index, collector in enumerate(collectors):
        await bus.subscribe(topic, collector, group=f"g{index}")
    events = await asyncio.gather(*(bus.publish(topic, type="t", data=i) for i in range(50)))
    expected = sorted(e.id for e in events)
    await eventually(lambda: all(len(c.events) >= 50 for c in collectors), timeout=30)
    assert all(expected == sorted(c.ids) for c in collectors)


async def test_one_group_shares_the_load(make_bus: Callable[..., Bus], topic: str) -> None:
    """Two subscriptions in one group split the events: each gets some, none gets one twice."""
    bus_a, bus_b = await make_bus().start(), await make_bus().start()
    first, second = Collector(), Collector()
    await bus_a.subscribe(topic, first, group="workers")
    await bus_b.subscribe(topic, second, group="workers")
    sent: list[str] = []

    async def both_busy() -> bool:
        for i in range(20):
            sent.append((await bus_a.publish(topic, type="t", data=i, key=f"k{len(sent)}")).id)
        await asyncio.sleep(0.2)
        return bool(first.events) and bool(second.events)

    await eventually(both_busy, timeout=60, what="both members to receive events")
    await eventually(lambda: len(first.events) + len(second.events) >= len(sent), timeout=30)
    received = first.ids + second.ids
    assert sorted(sent) == sorted(received)
    assert [] == [i for i, n in Counter(received).items() if n > 1]


async def test_topics_are_isolated(make_bus: Callable[..., Bus], topic: str) -> None:
    """A subscriber of one topic never sees events of another."""
    bus = await make_bus().start()
    mine, other = Collector(), Collector()
    await bus.subscribe(topic, mine, group="g")
    await bus.subscribe(f"{topic}-other", other, group="g")
    await bus.publish(f"{topic}-other", type="elsewhere")
    await bus.publish(topic, type="here")
    await eventually(lambda: len(mine.events) == 1 and len(other.events) == 1)
    assert ["here"] == [e.type for e in mine.events]
    assert ["elsewhere"] == [e.type for e in other.events]


async def test_one_subscription_reads_several_topics(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """A subscription may name several topics and receives events of each."""
    bus = await make_bus().start()
    got = Collector()
    await bus.subscribe([f"{topic}-a", f"{topic}-b"], got, group="g")
    await bus.publish(f"{topic}-a", type="a")
    await bus.publish(f"{topic}-b", type="b")
    await eventually(lambda: len(got.events) == 2)
    assert ["a", "b"] == sorted(e.type for e in got.events)


async def test_same_key_keeps_publish_order(make_bus: Callable[..., Bus], topic: str) -> None:
    """Events with one partition key are handled in publish order, where the backend promises."""
    bus = await make_bus().start()
    got = Collector()
    await bus.subscribe(topic, got, group="g")
    for i in range(60):
        await bus.publish(topic, type="t", data={"key": i % 3, "n": i}, key=f"key-{i % 3}")
    await eventually(lambda: len(got.events) == 60)
    if not bus.capabilities.ordered_keys:
        assert 60 == len({e.id for e in got.events})  # complete, but order is not promised
        return
    for key in range(3):
        seen = [e.data["n"] for e in got.events if e.data["key"] == key]
        assert sorted(seen) == seen


async def test_nothing_lost_when_subscribers_close_and_reopen(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """Events published while a group has no open subscription arrive when it comes back."""
    bus = await make_bus().start()
    before = Collector()
    subscriber = await bus.subscribe(topic, before, group="g")
    first = [(await bus.publish(topic, type="t", data=i)).id for i in range(10)]
    await eventually(lambda: len(before.events) == 10)
    await subscriber.stop()
    second = [(await bus.publish(topic, type="t", data=i)).id for i in range(10, 25)]
    after = Collector()
    await bus.subscribe(topic, after, group="g")
    await eventually(lambda: set(second) <= set(after.ids), timeout=30)
    assert sorted(first) == sorted(before.ids)
    assert set() == set(first) & set(after.ids)


async def test_unacked_delivery_comes_back_after_close(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """An event whose handler never finished is delivered again to the group's next consumer."""
    bus = await make_bus().start()
    started = asyncio.Event()

    async def hangs(event: Event) -> None:
        started.set()
        await asyncio.Event().wait()

    subscriber = await bus.subscribe(topic, hangs, group="g")
    sent = await bus.publish(topic, type="t", data="once")
    await asyncio.wait_for(started.wait(), 30)
    await subscriber.stop(grace=0.1)
    again = Collector()
    await bus.subscribe(topic, again, group="g")
    await eventually(lambda: sent.id in again.ids, timeout=60)
    assert [sent.id] == again.ids


async def test_publisher_close_flushes_everything(make_bus: Callable[..., Bus], topic: str) -> None:
    """Events published concurrently right before close are all durably there afterwards."""
    reader = await make_bus().start()
    got = Collector()
    await reader.subscribe(topic, got, group="g")
    writer = await make_bus().start()
    tasks = [asyncio.create_task(writer.publish(topic, type="t", data=i)) for i in range(200)]
    await asyncio.gather(*tasks)
    await writer.stop()
    expected = sorted(t.result().id for t in tasks)
    await eventually(lambda: len(got.events) >= 200, timeout=30)
    assert expected == sorted(got.ids)


async def test_subscribe_from_beginning_reads_history(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """A new group with from_beginning reads what was published before it existed."""
    bus = await make_bus().start()
    if not bus.capabilities.replay:
        with pytest.raises(ConfigurationError, match="cannot replay"):
            await bus.subscribe(topic, Collector(), group="late", from_beginning=True)
        return
    keeper = Collector()
    await bus.subscribe(topic, keeper, group="keeper")
    sent = [(await bus.publish(topic, type="t", data=i)).id for i in range(5)]
    late = Collector()
    await bus.subscribe(topic, late, group="late", from_beginning=True)
    await eventually(lambda: len(late.events) == 5)
    assert sorted(sent) == sorted(late.ids)
