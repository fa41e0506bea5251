"""A whole-DLQ replay on Kafka deletes what it read, never a dead letter appended since.

Kafka cannot delete single records, so a replay of a whole DLQ ends with a purge of the
records it browsed (``purge(ids, among=...)``). A replayed event that fails again at once is
dead-lettered into the same topic while the replay runs; that record must survive the purge.
The adapter's steps are called in the order a replay takes them, with the append forced in
between, so the race is reproduced every time (``Bus.replay`` itself is covered by
tests/contract/test_dead_letters.py)."""

from __future__ import annotations

import uuid

from structlog.testing import capture_logs

from broker import Bus, Event
from broker.envelope import new_event


async def _read_after(bus: Bus, events: int) -> tuple[str, list[Event]]:
    """A new DLQ holding ``events`` dead letters, browsed whole as a replay reads it."""
    dlq = f"orders-{uuid.uuid4().hex[:8]}.dlq"
    for n in range(events):
        await bus.publish(dlq, new_event("order.placed", "dlq-test", {"n": n}))
    read = await bus.adapter.browse(dlq, limit=1_000_000)
    assert len(read) == events
    return dlq, read


async def test_a_dead_letter_appended_after_the_replay_read_survives_its_purge(
    kafka_url: str,
) -> None:
    async with Bus(kafka_url, source="dlq-test") as bus:
        dlq, read = await _read_after(bus, 2)
        late = new_event("order.placed", "dlq-test", {"n": "failed again"})
        await bus.publish(dlq, late)
        with capture_logs() as logs:
            await bus.adapter.purge(dlq, [e.id for e in read], among=len(read))
        left = {e.id for e in await bus.dead_letters(dlq)}
        assert late.id in left
        if left != {late.id}:  # a server without DeleteRecords (Tansu): nothing was deleted
            assert left == {late.id, *(e.id for e in read)}
            assert any("the whole DLQ was kept" in entry["event"] for entry in logs)


async def test_a_replay_with_nothing_appended_empties_the_dlq(kafka_url: str) -> None:
    async with Bus(kafka_url, source="dlq-test") as bus:
        dlq, read = await _read_after(bus, 3)
        await bus.adapter.purge(dlq, [e.id for e in read], among=len(read))
        assert await bus.dead_letters(dlq) == []


async def test_a_purge_for_a_replay_that_did_not_read_the_topic_keeps_it(kafka_url: str) -> None:
    """``among`` without a whole read before it: the adapter cannot tell what was replayed, so
    it deletes nothing and says so."""
    dlq = f"orders-{uuid.uuid4().hex[:8]}.dlq"
    async with Bus(kafka_url, source="dlq-test") as bus:
        kept = new_event("order.placed", "dlq-test", {"n": 0})
        await bus.publish(dlq, kept)
        with capture_logs() as logs:
            assert await bus.adapter.purge(dlq, [kept.id], among=1) == 0
        assert [e.id for e in await bus.dead_letters(dlq)] == [kept.id]
        assert any("could not tell which records" in entry["event"] for entry in logs)
