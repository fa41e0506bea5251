"""Batches on every backend: ``publish_many`` outcomes and order, and batch subscriptions that
keep every per-event policy (retries, dead letters, TTL, the inbox, acks after the handler)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from broker import (
    Bus,
    ConfigurationError,
    Event,
    MemoryInbox,
    PartialFailure,
    PayloadError,
    Policy,
    PublishError,
    Retry,
)
from broker.context import current_deliveries
from tests.helpers import Collector, eventually

FAST = Retry(max_attempts=3, initial_delay=0.01, max_delay=0.05)


class Batches:
    """A batch handler that records the lists it is given."""

    def __init__(self) -> None:
        self.calls: list[list[Event]] = []

    async def __call__(self, events: list[Event]) -> None:
        self.calls.append(list(events))

    @property
    def events(self) -> list[Event]:
        return [event for call in self.calls for event in call]

    @property
    def ids(self) -> list[str]:
        return [event.id for event in self.events]


async def test_publish_many_reports_every_event(make_bus: Callable[..., Bus], topic: str) -> None:
    """publish_many takes Events and mappings of publish options, stamps each as publish does,
    and reports one successful outcome per event, in order; a subscriber gets them all."""
    bus = await make_bus(source="svc-a").start()
    got = Batches()
    await bus.subscribe_batch(topic, got, group="g")
    given = Event(type="order.placed", source="svc-a", data={"n": 0}, subject="order/0")
    result = await bus.publish_many(
        topic,
        [
            given,
            {"type": "order.placed", "data": {"n": 1}, "key": "k1", "correlation_id": "c-1"},
            {"type": "order.placed", "data": {"n": 2}, "extensions": {"tenant": "acme"}},
        ],
    )
    assert (True, 3, []) == (result.ok, len(result), result.failed)
    assert given.id == result[0].event.id
    assert ("k1", "c-1") == (result[1].event.partitionkey, result[1].event.correlationid)
    await eventually(lambda: len(got.events) == 3, what="three events")
    assert sorted(e.id for e in result.published) == sorted(got.ids)
    received = {e.id: e for e in got.events}
    assert result.published == [received[e.id] for e in result.published]


async def test_publish_many_keeps_key_order(make_bus: Callable[..., Bus], topic: str) -> None:
    """Events of one key published in one list are handled in list order where the backend
    orders keys, and all of them arrive everywhere."""
    bus = await make_bus().start()
    got = Batches()
    await bus.subscribe_batch(topic, got, group="g", max_batch=7)
    items = [{"type": "t", "data": {"key": i % 3, "n": i}, "key": f"k{i % 3}"} for i in range(60)]
    assert (await bus.publish_many(topic, items)).ok
    await eventually(lambda: len(got.events) == 60, what="sixty events")
    assert 60 == len(set(got.ids))
    assert all(len(call) <= 7 for call in got.calls)
    if bus.capabilities.ordered_keys:
        for key in range(3):
            seen = [e.data["n"] for e in got.events if e.data["key"] == key]
            assert sorted(seen) == seen


async def test_publish_many_refuses_a_bad_item_before_sending(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """An item that is not an event (no type, an unknown option) raises naming its position,
    and none of the list is published."""
    bus = await make_bus().start()
    got = Batches()
    await bus.subscribe_batch(topic, got, group="g")
    with pytest.raises(ConfigurationError, match="item 1: publish needs"):
        await bus.publish_many(topic, [{"type": "ok"}, {"data": 1}])
    with pytest.raises(ConfigurationError, match="item 0: unknown publish option"):
        await bus.publish_many(topic, [{"type": "ok", "colour": "red"}])
    marker = await bus.publish(topic, type="marker")
    await eventually(lambda: marker.id in got.ids, what="the marker")
    assert [marker.id] == got.ids


class RefuseType:
    """A payload codec that refuses the events of one type, as a schema would."""

    def __init__(self, refused: str) -> None:
        self.refused = refused

    async def encode(self, topic: str, event: Event) -> Event:
        if event.type == self.refused:
            raise ValueError(f"{event.type} does not match the schema of {topic}")
        return event

    async def decode(self, topic: str, event: Event) -> Event:
        return event


async def test_publish_many_reports_the_event_that_failed(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """An event refused on its way (by the codec; where the backend encodes, data JSON cannot
    hold) fails alone, with its error; the others are published, and raise_for_failures says
    how many failed and why."""
    bus = await make_bus(codec=RefuseType("b")).start()
    got = Batches()
    await bus.subscribe_batch(topic, got, group="g")
    result = await bus.publish_many(topic, [{"type": "a"}, {"type": "b"}, {"type": "c"}])
    assert [True, False, True] == [outcome.ok for outcome in result]
    assert isinstance(result[1].error, PayloadError)
    with pytest.raises(PublishError, match="1 of 3 events were not published"):
        result.raise_for_failures()
    unencodable = await bus.publish_many(topic, [{"type": "d", "data": object()}, {"type": "e"}])
    encodes = not bus.url.startswith("memory:")  # memory keeps the objects it is given
    assert [not encodes, True] == [outcome.ok for outcome in unencodable]
    await eventually(lambda: len(got.events) == 3 + (not encodes), what="the good events")
    assert ["a", "c", *([] if encodes else ["d"]), "e"] == sorted(e.type for e in got.events)


async def test_publish_many_on_a_stopped_bus_fails_every_event(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """When the backend is closed every event of the list is reported failed, none dropped."""
    bus = await make_bus().start()
    await bus.create_topic(topic)
    await bus.stop()
    result = await bus.publish_many(topic, [{"type": "t"}, {"type": "t"}])
    assert [False, False] == [outcome.ok for outcome in result]
    assert [] == result.published
    with pytest.raises(PublishError, match="2 of 2 events were not published"):
        result.raise_for_failures()


async def test_batch_handler_sees_each_event_once_with_its_delivery(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """A batch handler gets every event once, in lists no longer than max_batch, and
    current_deliveries() gives each event's broker message in the same order."""
    bus = await make_bus().start()
    seen: list[tuple[str, str]] = []

    async def handler(events: list[Event]) -> None:
        deliveries = current_deliveries()
        assert len(events) <= 10
        assert [e.id for e in events] == [d.event.id for d in deliveries if d.event]
        seen.extend((e.id, d.topic) for e, d in zip(events, deliveries, strict=True))

    await bus.subscribe_batch(topic, handler, group="g", max_batch=10)
    result = await bus.publish_many(topic, [{"type": "t", "data": i} for i in range(45)])
    await eventually(lambda: len(seen) >= 45, what="45 events")
    await asyncio.sleep(0.1)
    assert sorted((e.id, topic) for e in result.published) == sorted(seen)


async def test_failing_event_is_retried_then_dead_lettered_alone(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """A handler that fails one event of its batch (PartialFailure) gets that event again,
    alone, until attempts run out; it lands in the DLQ while the others are handled once."""
    bus = await make_bus(policy=Policy(retry=FAST)).start()
    poison_calls: list[int] = []
    handled: list[str] = []

    async def handler(events: list[Event]) -> None:
        bad = [e for e in events if e.type == "poison"]
        poison_calls.extend(len(events) for _ in bad)
        handled.extend(e.id for e in events if e.type != "poison")
        if bad:
            raise PartialFailure({e.id: ValueError("cannot ship") for e in bad})

    await bus.subscribe_batch(topic, handler, group="shipping")
    result = await bus.publish_many(
        topic, [{"type": "good", "data": 0}, {"type": "poison"}, {"type": "good", "data": 2}]
    )
    dlq = bus.dead_letter_topic(topic)

    async def dead_lettered() -> bool:
        return len(await bus.dead_letters(dlq)) == 1

    await eventually(dead_lettered, what="the poison event in the DLQ")
    good = [e.id for e in result.published if e.type == "good"]
    # a broker may hand the last good event in a later batch than the poison's (RabbitMQ)
    await eventually(lambda: len(handled) >= len(good), what="the good events handled")
    [dead] = await bus.dead_letters(dlq)
    assert (result[1].event.id, "handler-error", 3) == (
        dead.id,
        dead.extensions["dlqreason"],
        dead.extensions["dlqattempts"],
    )
    assert "ValueError: cannot ship" == dead.extensions["dlqerror"]
    assert sorted(good) == sorted(handled)
    assert 3 == len(poison_calls)
    assert [1, 1] == poison_calls[1:]  # the retries hold the failed event only


async def test_failing_batch_is_retried_whole(make_bus: Callable[..., Bus], topic: str) -> None:
    """A handler that raises fails every event of its list: they come back (together, in
    order) after the backoff, and nothing is dead-lettered once it succeeds."""
    bus = await make_bus(policy=Policy(retry=FAST)).start()
    calls: list[list[str]] = []

    async def handler(events: list[Event]) -> None:
        calls.append([e.id for e in events])
        if len(calls) == 1:
            raise ConnectionError("database restarting")

    await bus.create_topic(topic)
    result = await bus.publish_many(topic, [{"type": "t", "data": i} for i in range(5)])
    await bus.subscribe_batch(topic, handler, group="g", from_beginning=bus.capabilities.replay)
    if not bus.capabilities.replay:  # no history to read: publish after subscribing
        result = await bus.publish_many(topic, [{"type": "t", "data": i} for i in range(5)])
    sent = [e.id for e in result.published]
    await eventually(lambda: sorted(sent) == sorted(i for c in calls[1:] for i in c))
    assert calls[0] == calls[1]
    assert Counter(sent) == Counter(i for c in calls[1:] for i in c)
    assert [] == await bus.dead_letters(bus.dead_letter_topic(topic))


async def test_batch_is_acked_only_after_the_handler(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """Events of a batch whose handler never returned are delivered again to the group's
    next subscription: nothing is acked before the handler finished."""
    bus = await make_bus().start()
    started = asyncio.Event()

    async def hangs(events: list[Event]) -> None:
        started.set()
        await asyncio.Event().wait()

    subscriber = await bus.subscribe_batch(topic, hangs, group="g", max_wait=0.2)
    result = await bus.publish_many(topic, [{"type": "t", "data": i} for i in range(3)])
    await asyncio.wait_for(started.wait(), 30)
    await subscriber.stop(grace=0.1)
    again = Batches()
    await bus.subscribe_batch(topic, again, group="g")
    sent = sorted(e.id for e in result.published)
    await eventually(lambda: set(sent) <= set(again.ids), timeout=60, what="redelivery")
    assert sent == sorted(set(again.ids))


async def test_batch_policies_apply_to_each_event(make_bus: Callable[..., Bus], topic: str) -> None:
    """In a batch subscription an expired event is dead-lettered, not handled, and the inbox
    drops a duplicate even within one batch."""
    bus = await make_bus(policy=Policy(inbox=MemoryInbox())).start()
    got = Batches()
    await bus.subscribe_batch(topic, got, group="g", max_wait=0.1)
    twice = Event(type="twice", source="s", data=1)
    expired = Event(type="old", source="s", extensions={"expiration": "2020-01-01T00:00:00Z"})
    result = await bus.publish_many(
        topic, [twice, {"type": "fresh", "ttl": 60}, expired, twice], ttl=None
    )
    marker = await bus.publish(topic, type="marker")
    await eventually(lambda: marker.id in got.ids, what="the marker")

    async def dead_lettered() -> bool:
        return len(await bus.dead_letters(bus.dead_letter_topic(topic))) == 1

    await eventually(dead_lettered, what="the expired event in the DLQ")
    [dead] = await bus.dead_letters(bus.dead_letter_topic(topic))
    assert (expired.id, "expired") == (dead.id, dead.extensions["dlqreason"])
    assert sorted([twice.id, result[1].event.id, marker.id]) == sorted(got.ids)


async def test_batch_subscription_refuses_bad_settings(make_bus: Callable[..., Bus]) -> None:
    """max_batch below 1 and a policy running lanes concurrently are refused in one line."""
    bus = await make_bus().start()
    with pytest.raises(ConfigurationError, match="max_batch >= 1"):
        await bus.subscribe_batch("t", Batches(), group="g", max_batch=0)
    with pytest.raises(ConfigurationError, match="concurrency=1"):
        await bus.subscribe_batch("t", Batches(), group="g", policy=Policy(concurrency=4))


async def test_a_bad_event_fails_alone_among_concurrent_publishes(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """Publishes flushed together (the embedded broker's group commit, a batch in flight) are
    isolated: an event whose data or key holds a lone surrogate fails alone and at once, every
    other publish returns and is delivered, and publish_many reports the same."""
    bus = await make_bus().start()
    got = Collector()
    await bus.subscribe(topic, got, group="g")
    bad = [{"data": {"a": "\ud800"}}, {"key": "k\udcff"}]
    calls = [bus.publish(topic, type="good", data={"n": n}) for n in range(20)]
    calls[5:5] = [bus.publish(topic, type="bad", **options) for options in bad]  # type: ignore[arg-type]
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
    encodes = not bus.url.startswith("memory:")  # memory keeps data objects (keys it hashes)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert (2 if encodes else 1) == len(failed)
    assert all(isinstance(r, UnicodeEncodeError) for r in failed)
    many = [{"type": "good", "data": {"n": 20}}, {"type": "bad", **bad[0]}, {"type": "good"}]
    many.insert(2, {"type": "bad", **bad[1]})
    result = await asyncio.wait_for(bus.publish_many(topic, many), 30)
    assert [True, not encodes, False, True] == [outcome.ok for outcome in result]
    await eventually(lambda: len(got.events) == 22 + 2 * (not encodes), what="the good events")
    assert (0 if encodes else 2) == sum(e.type == "bad" for e in got.events)


async def test_batch_over_topics_keeps_each_key_order_whatever_the_event_times(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """A batch subscription over two topics gets every event once, and each key's events of
    a topic in publish order where the backend orders keys, even when their event times run
    backwards (batches spanning partitions merge them by time, never reorder one)."""
    bus = await make_bus().start()
    got = Batches()

    async def slow(events: list[Event]) -> None:  # the next batch is taken meanwhile
        await asyncio.sleep(0.01)
        await got(events)

    topics = [f"{topic}-a", f"{topic}-b"]
    for name in topics:
        await bus.create_topic(name)
    replay = bus.capabilities.replay  # a backlog where it can: batches with much to merge
    options = {"group": "g", "max_batch": 7, "prefetch": 60}
    if not replay:
        await bus.subscribe_batch(topics, slow, **options)  # type: ignore[arg-type]
    start = datetime.now(UTC)
    for offset, name in enumerate(topics):
        events = [
            Event(
                type="t",
                source="test",
                time=start - timedelta(seconds=i + offset / 2),  # later publishes, earlier times
                data={"topic": name, "key": i % 3, "n": i},
                extensions={"partitionkey": f"k{i % 3}"},
            )
            for i in range(30)
        ]
        assert (await bus.publish_many(name, events)).ok
    if replay:
        await bus.subscribe_batch(topics, slow, from_beginning=True, **options)  # type: ignore[arg-type]
    await eventually(lambda: len(got.events) == 60, what="sixty events")
    assert 60 == len(set(got.ids))
    assert all(len(call) <= 7 for call in got.calls)
    if bus.capabilities.ordered_keys:
        for name in topics:
            for key in range(3):
                seen = [
                    e.data["n"]
                    for e in got.events
                    if e.data["topic"] == name and e.data["key"] == key
                ]
                assert sorted(seen) == seen


async def test_a_backlog_over_topics_comes_in_event_time_order(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """A batch subscription reading a backlog of two topics, one published entirely before
    the other and twice as dense in time, gets the events in event-time order across the
    topics where the backend merges its partitions (log-based backends): a topic read further
    in time than the other waits for it, batch after batch, and no event comes twice. The
    other backends (memory, RabbitMQ) hand out each topic as it comes: every event once, each
    key's events in order."""
    bus = await make_bus().start()
    merges = bus.capabilities.replay and not bus.url.startswith("memory:")
    got = Batches()
    topics = [f"{topic}-a", f"{topic}-b"]
    for name in topics:
        await bus.create_topic(name)
    if not bus.capabilities.replay:  # the group's queues hold what is published from now on
        await bus.subscribe_batch(topics, got, group="g", max_batch=20, prefetch=40)
    start = datetime.now(UTC) - timedelta(minutes=5)
    for step, name in enumerate(topics, start=1):  # a: an event a ms, b: one every 2 ms
        events = [
            Event(
                type="t",
                source="test",
                time=start + timedelta(milliseconds=step * i + 0.5 * (step - 1)),
                data={"topic": name, "n": i},
                extensions={"partitionkey": f"k{i % 5}"},
            )
            for i in range(200 // step)
        ]
        assert (await bus.publish_many(name, events)).ok
    if bus.capabilities.replay:
        await bus.subscribe_batch(
            topics, got, group="g", from_beginning=True, max_batch=20, prefetch=40
        )
    await eventually(lambda: len(got.events) == 300, what="three hundred events")
    times = [event.time for event in got.events]
    assert 300 == len(set(got.ids))
    if merges:
        assert sorted(times) == times  # type: ignore[type-var]
    for name in topics:
        for key in range(5):
            seen = [
                e.data["n"]
                for e in got.events
                if e.data["topic"] == name and e.data["n"] % 5 == key
            ]
            assert sorted(seen) == seen


async def test_stopping_gives_back_the_batch_taken_ahead(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """While a batch is handled the next one is taken; when the subscriber stops before
    handling it, its events go to the group's next subscriber: none is acked unhandled."""
    bus = await make_bus().start()
    first = Batches()
    hang = asyncio.Event()

    async def second_batch_hangs(events: list[Event]) -> None:
        if first.calls:
            hang.set()
            await asyncio.Event().wait()
        await first(events)

    await bus.create_topic(topic)
    subscriber = await bus.subscribe_batch(
        topic, second_batch_hangs, group="g", max_batch=2, max_wait=0.05
    )
    result = await bus.publish_many(topic, [{"type": "t", "data": i} for i in range(8)])
    await asyncio.wait_for(hang.wait(), 30)
    await subscriber.stop(grace=0.1)
    again = Batches()
    await bus.subscribe_batch(topic, again, group="g")
    sent = {e.id for e in result.published}
    await eventually(
        lambda: sent <= set(first.ids) | set(again.ids), timeout=60, what="every event handled"
    )
    assert sent == set(first.ids) | set(again.ids)
