"""Where a group stands (``Subscriber.backlog``) and where a message sits (``Delivery.position``),
on every backend: what the saga monitor's watermark and its duplicate detection rely on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from broker import Backlog, Bus, Event, Subscriber
from broker.context import current_delivery
from saga_monitor.watermark import Watermark
from tests.helpers import eventually

EVENTS = 10


class Gate:
    """A handler that holds each delivery unacked until the gate opens, then records it."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.started = asyncio.Event()
        self.ids: list[str] = []

    async def __call__(self, event: Event) -> None:
        self.started.set()
        await self.open.wait()
        self.ids.append(event.id)


class Positions:
    """A handler that records each delivery's event id, position and redelivery count."""

    def __init__(self, hold_first: bool = False) -> None:
        self.seen: list[tuple[str, str | None, int]] = []
        self.hold = hold_first

    async def __call__(self, event: Event) -> None:
        delivery = current_delivery()
        assert delivery is not None
        self.seen.append((event.id, delivery.position, delivery.redelivered))
        if self.hold:
            await asyncio.Event().wait()  # never acks: the delivery stays with the broker

    def of(self, event_id: str) -> list[tuple[str | None, int]]:
        return [(position, count) for seen, position, count in self.seen if seen == event_id]


async def _report(subscriber: Subscriber) -> Backlog:
    report = await subscriber.backlog()
    assert report is not None, "every backend reports its backlog"
    return report


def _caught_up(subscriber: Subscriber, earlier: Backlog) -> Callable[[], object]:
    async def check() -> bool:
        return (await _report(subscriber)).caught_up_with(earlier)

    return check


async def _publish(bus: Bus, topic: str, count: int) -> list[str]:
    return [(await bus.publish(topic, type="t", data=n, key=f"k{n}")).id for n in range(count)]


async def test_backlog_is_group_wide(make_bus: Callable[..., Bus], topic: str) -> None:
    """Events the group has not handled show as not caught up to every member; once they are
    handled and acked, a report taken before is caught up; on a log every member of the
    group reports the same numbers."""
    gate = Gate()
    bus, other = await make_bus().start(), await make_bus().start()
    first = await bus.subscribe(topic, gate, group="g", prefetch=2)
    sent = await _publish(bus, topic, EVENTS)
    before = await _report(first)
    assert not before.caught_up_with(before)
    second = await other.subscribe(topic, gate, group="g", prefetch=2)
    also_before = await _report(second)
    assert not also_before.caught_up_with(also_before)

    async def same_numbers() -> bool:
        return await _report(first) == await _report(second)

    log = bus.capabilities.replay  # a queue counts reports per member instead (see Backlog)
    if log:
        await eventually(same_numbers, timeout=30, what="both members to report alike")
    gate.open.set()
    await eventually(lambda: set(sent) <= set(gate.ids), timeout=60, what="every event")
    await eventually(_caught_up(first, before), timeout=30, what="the first member")
    await eventually(_caught_up(second, also_before), timeout=30, what="the second member")
    if log:
        await eventually(same_numbers, timeout=30, what="both members to report alike")


async def test_watermark_waits_for_the_backlog(make_bus: Callable[..., Bus], topic: str) -> None:
    """The saga monitor's watermark does not pass a moment while events published before it
    are unread, and passes it once the group handled and acked them."""
    gate = Gate()
    bus = await make_bus().start()
    subscriber = await bus.subscribe(topic, gate, group="g")
    watermark = Watermark([subscriber], max_delay=0.0)
    idle = datetime.now(UTC)
    assert idle == await watermark.refresh(idle, idle)
    await _publish(bus, topic, EVENTS)
    await asyncio.wait_for(gate.started.wait(), 30)
    for _ in range(3):
        now = datetime.now(UTC)
        assert idle == await watermark.refresh(now, now)
    published = datetime.now(UTC)
    assert idle == await watermark.refresh(published, published)
    gate.open.set()

    async def passed() -> bool:
        now = datetime.now(UTC)
        mark = await watermark.refresh(now, now)
        return mark is not None and mark >= published

    await eventually(passed, timeout=30, what="the watermark to pass the backlog")
    assert EVENTS == len(set(gate.ids))


async def test_redelivery_keeps_the_position(make_bus: Callable[..., Bus], topic: str) -> None:
    """A message given back unacked (its consumer went away) comes again at the same position
    (on a queue, which has none, under the name choreograph gave the message), marked as
    redelivered where the broker counts or flags deliveries."""
    bus = await make_bus().start()
    first = Positions(hold_first=True)
    subscriber = await bus.subscribe(topic, first, group="g")
    sent = await bus.publish(topic, type="t", key="k")
    await eventually(lambda: bool(first.of(sent.id)), timeout=30, what="the first delivery")
    await subscriber.stop(grace=0.1)
    again = Positions()
    await bus.subscribe(topic, again, group="g")
    await eventually(lambda: bool(again.of(sent.id)), timeout=60, what="the redelivery")
    [(position, _)] = first.of(sent.id)
    [(redelivered_at, count)] = again.of(sent.id)
    assert position is not None
    assert position == redelivered_at
    if not bus.capabilities.replay:  # a queue: the broker flags the message as redelivered
        assert count >= 1
    if bus.capabilities.delivery_count:
        assert count >= 1


async def test_first_delivery_to_each_group_is_no_redelivery(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """Each group's first delivery of an event counts no earlier delivery, however many other
    groups had it before."""
    bus = await make_bus().start()
    first, second = Positions(), Positions()
    await bus.subscribe(topic, first, group="first")
    sent = await bus.publish(topic, type="t", key="k")
    await eventually(lambda: bool(first.of(sent.id)), timeout=30, what="the first group's")
    await bus.subscribe(topic, second, group="second")
    later = await bus.publish(topic, type="t", key="k")
    await eventually(lambda: bool(second.of(later.id)), timeout=30, what="the second group's")
    await eventually(lambda: bool(first.of(later.id)), timeout=30, what="the first group's")
    assert [0, 0, 0] == [count for _, _, count in first.seen + second.seen]


async def test_another_publish_is_another_position(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """The same event published twice is two messages at two positions (on RabbitMQ, whose
    queues have none, two names choreograph gave the messages; NATS JetStream drops the second
    as a duplicate of its Nats-Msg-Id instead); distinct messages never share one."""
    bus = await make_bus().start()
    got = Positions()
    await bus.subscribe(topic, got, group="g")
    event = Event(type="t", source="s", data=1)
    await bus.publish(topic, event, key="k")
    await bus.publish(topic, event, key="k")
    marker = await bus.publish(topic, type="marker", key="k")
    await eventually(lambda: bool(got.of(marker.id)), timeout=30, what="the marker")
    copies = 1 if bus.url.startswith("nats") else 2
    await eventually(lambda: len(got.of(event.id)) >= copies, timeout=30, what="the copies")
    positions = [position for _, position, _ in got.seen]
    assert copies == len(got.of(event.id))
    assert len(positions) == len(set(positions))
    assert None not in positions
