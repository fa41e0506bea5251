"""The embedded broker's subscriptions while a backlog is read: the next events are fetched as
soon as an ack (of a batch, or a single one) makes room in the prefetch window (not at the next
poll), and a batch window leaves room for a full next batch beside the rows held for a lagging
topic."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker import Bus, Event, Policy
from tests.helpers import eventually


def _events(topic: str, count: int, every_ms: int, start: datetime) -> list[Event]:
    return [
        Event(
            type="t",
            source="test",
            time=start + timedelta(milliseconds=every_ms * i),
            data={"topic": topic, "n": i},
        )
        for i in range(count)
    ]


async def test_an_ack_wakes_a_batch_waiting_for_room(tmp_path: Path) -> None:
    """A batch that came short because the window is full (the batch being handled holds it)
    waits up to ``max_wait`` for more; the handled batch's ack opens the window, and the
    waiting batch is filled from the broker then, not after the poll interval (a minute
    here, as long as ``max_wait``: either would outlast the test)."""
    url = f"sqlite:///{tmp_path}/broker.db?partitions=1&poll_interval=60"
    start = datetime.now(UTC) - timedelta(minutes=1)
    sizes: list[int] = []

    async def handle(events: list[Event]) -> None:
        await asyncio.sleep(0.02)  # the next batch is taken meanwhile, and comes short
        sizes.append(len(events))

    async with Bus(url, source="test") as bus:
        assert (await bus.publish_many("work", _events("work", 100, 1, start))).ok
        await bus.subscribe_batch(
            "work", handle, group="g", from_beginning=True, max_batch=10, max_wait=60, prefetch=6
        )
        await eventually(lambda: sum(sizes) == 100, timeout=20, what="the backlog, in batches")
    assert sizes == [10] * 10


async def test_a_backlog_over_uneven_topics_comes_in_full_batches(tmp_path: Path) -> None:
    """Two topics over the same stretch of time, one with twice the events of the other: the
    rows fetched from the sparse topic wait for the dense one (merged by event time), and the
    window (the default prefetch) still holds a full next batch beside the one handled, so
    every batch but the last is full while the backlog lasts."""
    url = f"sqlite:///{tmp_path}/broker.db?partitions=1"
    start = datetime.now(UTC) - timedelta(minutes=1)
    batches: list[list[Event]] = []

    async def handle(events: list[Event]) -> None:
        await asyncio.sleep(0.02)  # the next batch is taken meanwhile
        batches.append(events)

    async with Bus(url, source="test") as bus:
        assert (await bus.publish_many("dense", _events("dense", 300, 1, start))).ok
        assert (await bus.publish_many("sparse", _events("sparse", 150, 2, start))).ok
        await bus.subscribe_batch(
            ["dense", "sparse"], handle, group="g", from_beginning=True, max_batch=30
        )
        await eventually(lambda: sum(map(len, batches)) == 450, timeout=20, what="the backlog")
    times = [event.time for batch in batches for event in batch]
    assert times == sorted(times)  # type: ignore[type-var]
    assert [len(batch) for batch in batches[:-1]] == [30] * (len(batches) - 1)


async def test_a_single_ack_wakes_a_subscription_waiting_for_room(tmp_path: Path) -> None:
    """A subscription whose handlers hold its whole prefetch window waits for room; each
    single ack that opens the window has the next events fetched then, not after the poll
    interval (a minute here: the backlog would take minutes)."""
    url = f"sqlite:///{tmp_path}/broker.db?partitions=1&poll_interval=60"
    start = datetime.now(UTC) - timedelta(minutes=1)
    handled: list[int] = []

    async def handle(event: Event) -> None:
        await asyncio.sleep(0)  # the next take runs meanwhile, and finds the window full
        handled.append(event.data["n"])

    async with Bus(url, source="test") as bus:
        assert (await bus.publish_many("work", _events("work", 20, 1, start))).ok
        await bus.subscribe(
            "work",
            handle,
            group="g",
            from_beginning=True,
            prefetch=2,
            policy=Policy(concurrency=4),
        )
        await eventually(lambda: len(handled) == 20, timeout=20, what="the backlog, one by one")
    assert list(range(20)) == sorted(handled)


async def test_a_row_that_is_not_a_cloudevent_reaches_the_handler_whole(tmp_path: Path) -> None:
    """A row another writer put in the log that is not a CloudEvent is handed out, in a batch
    beside the events, with its text intact (wrapped: ``on_undecodable="wrap"``)."""
    path = tmp_path / "broker.db"
    url = f"sqlite:///{path}?partitions=1"
    got: list[Event] = []

    async def handle(events: list[Event]) -> None:
        got.extend(events)

    async with Bus(url, source="test") as bus:
        await bus.publish("work", Event(type="t", source="test", data={"n": 1}))
        with sqlite3.connect(path) as db:
            db.execute(
                "INSERT INTO log (topic, part, event_id, body, created) VALUES (?, 0, ?, ?, 0)",
                ("work", "foreign-1", "not a cloud event"),
            )
        policy = Policy(on_undecodable="wrap")
        await bus.subscribe_batch("work", handle, group="g", from_beginning=True, policy=policy)
        await eventually(lambda: len(got) == 2, timeout=20, what="both rows")
    assert [("t", {"n": 1}), ("choreograph.legacy", b"not a cloud event")] == [
        (event.type, event.data) for event in got
    ]
