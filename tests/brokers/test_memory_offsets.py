"""The in-process broker's bookkeeping, through its adapter: acks in any order commit only what
is acked without a gap, a nacked or abandoned delivery comes again counted as a redelivery at
its position, and a member that left can no longer move its group."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from broker import Bus, Event
from broker.adapters.memory import MemoryAdapter
from broker.adapters.memory.consumer import MemorySubscription

TOPIC, GROUP = "work", "g"


@pytest.fixture
async def adapter() -> AsyncIterator[MemoryAdapter]:
    """A memory broker of one partition, so that every event shares one log."""
    made = MemoryAdapter(f"memory://offsets-{uuid.uuid4().hex}?partitions=1")
    await made.connect()
    yield made
    await made.close()


async def _publish(adapter: MemoryAdapter, count: int) -> list[str]:
    events = [Event(type="t", source="s", data=n) for n in range(count)]
    for event in events:
        await adapter.publish(TOPIC, event)
    return [event.id for event in events]


async def _member(adapter: MemoryAdapter, prefetch: int = 10) -> MemorySubscription:
    sub = await adapter.subscribe([TOPIC], GROUP, from_beginning=True, prefetch=prefetch)
    assert isinstance(sub, MemorySubscription)
    return sub


async def _acked(sub: MemorySubscription) -> int:
    return (await sub.backlog()).acked[f"{TOPIC}/0"]


async def test_acks_out_of_order_commit_only_the_gapless_prefix(adapter: MemoryAdapter) -> None:
    """Acking the second and third delivery commits nothing until the first is acked too."""
    await _publish(adapter, 3)
    sub = await _member(adapter)
    first, second, third = await sub.take(3, 0.0)
    await third.ack()
    await second.ack()
    assert 0 == await _acked(sub)
    await first.ack()
    assert 3 == await _acked(sub)


async def test_a_nacked_delivery_comes_again_first(adapter: MemoryAdapter) -> None:
    """A nacked delivery is handed out again before newer events, at its position, counted."""
    ids = await _publish(adapter, 2)
    sub = await _member(adapter, prefetch=1)
    [first] = await sub.take(5, 0.0)
    await first.nack()
    [again] = await sub.take(5, 0.0)
    assert again.event is not None
    assert (ids[0], first.position, 1) == (again.event.id, again.position, again.redelivered)


async def test_prefetch_bounds_what_is_in_flight(adapter: MemoryAdapter) -> None:
    """No more than ``prefetch`` deliveries are out unacked; an ack lets the next one out."""
    await _publish(adapter, 5)
    sub = await _member(adapter, prefetch=2)
    taken = await sub.take(5, 0.0)
    assert 2 == len(taken)
    await taken[0].ack()
    assert 1 == len(await sub.take(5, 0.0))


async def test_a_member_that_left_cannot_move_its_group(adapter: MemoryAdapter) -> None:
    """Deliveries a member held when it closed go to the next member as redeliveries; the
    closed member's late acks commit nothing."""
    ids = await _publish(adapter, 2)
    gone = await _member(adapter)
    held = await gone.take(2, 0.0)
    await gone.close()
    nxt = await _member(adapter)
    await held[0].ack()
    assert 0 == await _acked(nxt)
    again = await nxt.take(2, 0.0)
    got = [(d.event.id if d.event else None, d.redelivered) for d in again]
    assert [(i, 1) for i in ids] == got
    for delivery in again:
        await delivery.ack()
    assert 2 == await _acked(nxt)


async def test_an_event_purged_before_delivery_is_skipped_and_committed(
    adapter: MemoryAdapter,
) -> None:
    """A purged event is never handed out, and the group's position moves past it."""
    ids = await _publish(adapter, 3)
    await adapter.purge(TOPIC, [ids[1]])
    sub = await _member(adapter)
    taken = await sub.take(3, 0.0)
    assert [ids[0], ids[2]] == [d.event.id if d.event else None for d in taken]
    for delivery in taken:
        await delivery.ack()
    assert 3 == await _acked(sub)


class _Recording(MemoryAdapter):
    """A memory broker whose publish also records what it was given."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.seen: list[str] = []

    async def publish(self, topic: str, event: Event, *, ttl: float | None = None) -> None:
        self.seen.append(event.id)
        await super().publish(topic, event, ttl=ttl)


async def test_a_publish_of_its_own_is_never_bypassed() -> None:
    """The bus calls a memory broker's publish_now directly, but an adapter that overrides
    publish gets every publish through it."""
    adapter = _Recording(f"memory://own-publish-{uuid.uuid4().hex}")
    async with Bus(adapter) as bus:
        sent = [(await bus.publish(TOPIC, type="t", data=n)).id for n in range(9)]
    assert sent == adapter.seen
