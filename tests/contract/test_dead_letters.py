"""Operating a dead-letter topic on every backend: a purge or a replay never loses a dead letter
by a mistake of its caller or by the broker dropping what it is given."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broker import Bus, ConfigurationError, Event, TopicNotFoundError, deadletter
from tests.helpers import Collector, eventually


def _dead(topic: str, n: int) -> Event:
    return deadletter.dead_letter(
        Event(type="job.created", source="tests", data={"n": n}),
        reason=deadletter.HANDLER_ERROR,
        error=RuntimeError("the printer is on fire"),
        topic=topic,
        group="printers",
        attempts=3,
    )


async def _put(bus: Bus, topic: str, count: int) -> list[str]:
    """``count`` dead letters of ``topic`` in its DLQ, listed; their ids."""
    events = [_dead(topic, n) for n in range(count)]
    for event in events:
        await bus.publish(f"{topic}.dlq", event)

    async def listed() -> bool:
        return count == len(await bus.dead_letters(f"{topic}.dlq"))

    await eventually(listed)
    return [event.id for event in events]


async def test_a_purge_naming_an_unknown_id_deletes_nothing(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """Purging ids of which one is not in the DLQ (a typo) raises, and every dead letter stays:
    refused as a selective delete where the broker cannot do one, as a missing id elsewhere."""
    bus = await make_bus().start()
    ids = await _put(bus, topic, 2)
    expected = TopicNotFoundError if bus.capabilities.selective_delete else ConfigurationError
    with pytest.raises(expected):
        await bus.purge(f"{topic}.dlq", [ids[0], "no-such-id"])
    assert ids == [e.id for e in await bus.dead_letters(f"{topic}.dlq")]


async def test_a_replay_to_a_topic_no_group_has_joined_loses_nothing(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """Replaying into a topic no group subscribes to yet either keeps the events for a group
    that joins later (brokers that retain events), or is refused before anything is replayed,
    with the dead letters still in the DLQ (a broker that keeps events only for its groups)."""
    bus = await make_bus().start()
    ids = await _put(bus, topic, 2)
    if not bus.capabilities.replay:
        with pytest.raises(TopicNotFoundError, match=f"no group subscribes to {topic}"):
            await bus.replay(f"{topic}.dlq")
        assert ids == [e.id for e in await bus.dead_letters(f"{topic}.dlq")]
        return
    assert ids == [e.id for e in await bus.replay(f"{topic}.dlq")]
    got = Collector()
    await bus.subscribe(topic, got, group="late", from_beginning=True)
    await eventually(lambda: len(got.events) == 2, timeout=30)
    assert sorted(ids) == sorted(got.ids)
    assert [] == await bus.dead_letters(f"{topic}.dlq")
