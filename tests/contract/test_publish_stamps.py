"""What publish and publish_many write into each event, on every backend: lists of plain items
(``type``, ``data``, ``key``, ``subject``) take a faster path and must stamp exactly as a
single publish does."""

from __future__ import annotations

import re
from collections.abc import Callable

from broker import Bus, Event
from tests.helpers import Collector, eventually

TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01\Z")


async def test_publish_many_stamps_plain_items_as_publish_does(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """Plain items get their own id and a new trace each, the key as ``partitionkey``, the
    list's TTL as ``expiration``, and one time for the list; a subscriber gets them as sent."""
    bus = await make_bus(source="svc-a").start()
    got = Collector()
    await bus.subscribe(topic, got, group="g")
    items = [
        {"type": "order.placed", "data": {"n": n}, "key": f"k{n % 2}", "subject": f"o/{n}"}
        for n in range(4)
    ]
    result = await bus.publish_many(topic, items, ttl=60)
    sent = result.published
    assert 4 == len({event.id for event in sent})
    assert 4 == len({event.traceparent.split("-")[1] for event in sent if event.traceparent})
    assert all(TRACEPARENT.match(event.traceparent or "") for event in sent)
    assert 1 == len({(event.time, event.extensions["expiration"]) for event in sent})
    assert [("order.placed", "svc-a", {"n": n}, f"o/{n}", f"k{n % 2}") for n in range(4)] == [
        (e.type, e.source, e.data, e.subject, e.partitionkey) for e in sent
    ]
    single = await bus.publish(topic, type="order.placed", data={"n": 4}, key="k0", ttl=60)
    assert [sorted(single.extensions)] * 4 == [sorted(event.extensions) for event in sent]
    await eventually(lambda: len(got.events) == 5, what="five events")
    received = {event.id: event for event in got.events}
    assert sent == [received[event.id] for event in sent]


async def test_publish_many_inside_a_handler_inherits_its_event(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """Plain items published from a handler carry the handled event's id as ``causationid``,
    its ``correlationid`` and a child of its trace, as a single publish from there does."""
    bus = await make_bus(source="svc-a").start()
    effects = Collector()
    await bus.subscribe(f"{topic}-out", effects, group="g")

    async def react(event: Event) -> None:
        await bus.publish_many(f"{topic}-out", [{"type": "b", "data": 1}, {"type": "c"}])

    await bus.subscribe(topic, react, group="g")
    cause = await bus.publish(topic, type="a", correlation_id="c-1")
    await eventually(lambda: len(effects.events) == 2, what="two effects")
    assert cause.traceparent is not None
    trace = cause.traceparent.split("-")[1]
    assert [(cause.id, "c-1", trace)] * 2 == [
        (e.causationid, e.correlationid, (e.traceparent or "").split("-")[1])
        for e in effects.events
    ]
