"""The in-process broker's publish never waits, but it yields to the event loop when a
subscriber lags far behind: a publish loop that awaits nothing else hands over to the handlers
every few hundred events instead of piling its whole run up first, and a subscriber that does
not read holds no publisher up."""

from __future__ import annotations

import asyncio
import uuid

from broker import Bus, Event
from broker.adapters.memory import MemoryAdapter
from broker.adapters.memory.wire import LAGGING

TOPIC, GROUP = "work", "g"
#: A publish looks for a lagging member one sequence number in 64: the lag may pass
#: LAGGING by that much before the publisher yields.
BOUND = LAGGING + 64
COUNT = 10 * BOUND


def _url() -> str:
    return f"memory://yields-{uuid.uuid4().hex}?partitions=1"


async def test_a_publish_loop_lets_the_handler_keep_up() -> None:
    """Handlers run while a publish loop that never awaits anything else goes on, never more
    than a bounded number of events behind it."""
    published, lags, done = 0, [], asyncio.Event()

    async def handler(event: Event) -> None:
        lags.append(published - len(lags))
        if len(lags) == COUNT:
            done.set()

    async with Bus(_url()) as bus:
        await bus.subscribe(TOPIC, handler, group=GROUP, prefetch=1000)
        for n in range(COUNT):
            await bus.publish(TOPIC, type="t", data=n)
            published += 1
        handled_in_loop = len(lags)
        await done.wait()
    assert handled_in_loop >= COUNT - BOUND
    assert max(lags) <= BOUND


async def test_a_publish_many_loop_lets_the_batch_handler_run() -> None:
    """Lists published in a loop that awaits nothing else reach a batch handler between the
    calls once it lags, not only after the loop."""
    handled, done = 0, asyncio.Event()

    async def handler(events: list[Event]) -> None:
        nonlocal handled
        handled += len(events)
        if handled == COUNT:
            done.set()

    async with Bus(_url()) as bus:
        await bus.subscribe_batch(TOPIC, handler, group=GROUP, max_wait=0)
        for first in range(0, COUNT, 100):
            items = [{"type": "t", "data": n} for n in range(first, first + 100)]
            (await bus.publish_many(TOPIC, items)).raise_for_failures()
        handled_in_loop = handled
        await done.wait()
    # a batch subscription reads its next batch in a task of its own: one list handled for
    # two published once it lags
    assert handled_in_loop >= (COUNT - BOUND) // 2


async def test_a_member_that_does_not_read_holds_no_publisher_up() -> None:
    """Publishes past the lag bound to a member that never takes anything all return, and
    the member then finds every event in order."""
    adapter = MemoryAdapter(_url())
    await adapter.connect()
    sub = await adapter.subscribe([TOPIC], GROUP, prefetch=COUNT)
    events = [Event(type="t", source="s", data=n) for n in range(COUNT)]
    for event in events:
        await adapter.publish(TOPIC, event)
    taken = await sub.take(COUNT, 0.0)
    await adapter.close()
    assert [e.id for e in events] == [d.event.id if d.event else None for d in taken]
