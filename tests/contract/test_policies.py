"""Retries, dead letters, TTL, the inbox, the circuit breaker and trace propagation, on every
backend: the policies live in the core, so they must behave the same everywhere."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from broker import Bus, CircuitBreaker, Event, MemoryInbox, Policy, Retry, current_event
from tests.helpers import Collector, eventually

FAST = Retry(max_attempts=3, initial_delay=0.01, max_delay=0.05)


async def test_failed_handler_gets_the_event_again(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """A handler that raises once is called again with the same event, which then succeeds."""
    bus = await make_bus(policy=Policy(retry=FAST)).start()
    calls: list[str] = []

    async def flaky(event: Event) -> None:
        calls.append(event.id)
        if len(calls) == 1:
            raise ConnectionError("downstream hiccup")

    await bus.subscribe(topic, flaky, group="g")
    sent = await bus.publish(topic, type="t")
    await eventually(lambda: len(calls) == 2)
    await asyncio.sleep(0.1)
    assert [sent.id, sent.id] == calls
    assert [] == await bus.dead_letters(f"{topic}.dlq")


async def test_exhausted_retries_go_to_the_dlq(make_bus: Callable[..., Bus], topic: str) -> None:
    """After max_attempts failures the untouched event lands in <topic>.dlq with its reasons."""
    bus = await make_bus(policy=Policy(retry=FAST)).start()
    calls: list[str] = []

    async def broken(event: Event) -> None:
        calls.append(event.id)
        raise ValueError("card declined")

    await bus.subscribe(topic, broken, group="payments")
    sent = await bus.publish(topic, type="payment.requested", data={"amount": 5})
    await eventually(lambda: len(calls) == 3)
    dlq = f"{topic}.dlq"

    async def dead_lettered() -> bool:
        return len(await bus.dead_letters(dlq)) == 1

    await eventually(dead_lettered)
    [dead] = await bus.dead_letters(dlq)
    assert (sent.id, sent.type, sent.data) == (dead.id, dead.type, dead.data)
    assert {
        "dlqreason": "handler-error",
        "dlqerror": "ValueError: card declined",
        "dlqattempts": 3,
        "dlqtopic": topic,
        "dlqgroup": "payments",
    } == {
        k: dead.extensions[k]
        for k in ("dlqreason", "dlqerror", "dlqattempts", "dlqtopic", "dlqgroup")
    }
    assert "dlqtime" in dead.extensions
    await asyncio.sleep(0.1)
    assert 3 == len(calls)


async def test_expired_event_goes_to_dlq_not_handler(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """An event whose TTL passed before handling is dead-lettered with reason expired."""
    bus = await make_bus().start()
    got = Collector()
    expired = Event(type="t", source="s", extensions={"expiration": "2020-01-01T00:00:00Z"})
    await bus.subscribe(topic, got, group="g")
    await bus.publish(topic, expired)
    fresh = await bus.publish(topic, type="t", ttl=60)
    await eventually(lambda: len(got.events) == 1)

    async def dead_lettered() -> bool:
        return len(await bus.dead_letters(f"{topic}.dlq")) == 1

    await eventually(dead_lettered)
    [dead] = await bus.dead_letters(f"{topic}.dlq")
    assert [fresh.id] == got.ids
    assert (expired.id, "expired") == (dead.id, dead.extensions["dlqreason"])


async def test_expired_event_can_be_dropped(make_bus: Callable[..., Bus], topic: str) -> None:
    """With on_expired='drop' an expired event is neither handled nor dead-lettered."""
    bus = await make_bus(policy=Policy(on_expired="drop")).start()
    got = Collector()
    await bus.subscribe(topic, got, group="g")
    await bus.publish(
        topic, Event(type="old", source="s", extensions={"expiration": "2020-01-01T00:00:00Z"})
    )
    await bus.publish(topic, type="new")
    await eventually(lambda: len(got.events) == 1)
    await asyncio.sleep(0.1)
    assert ["new"] == [e.type for e in got.events]
    assert [] == await bus.dead_letters(f"{topic}.dlq")


async def test_ttl_passes_while_the_group_is_away(make_bus: Callable[..., Bus], topic: str) -> None:
    """An event published with a TTL that passes before the group consumes it is never handled."""
    bus = await make_bus().start()
    got = Collector()
    subscriber = await bus.subscribe(topic, got, group="g")
    await subscriber.stop()
    short = await bus.publish(topic, type="short", ttl=0.05)
    long = await bus.publish(topic, type="long", ttl=600)
    await asyncio.sleep(0.3)  # let the short TTL pass: time itself is the condition here
    await bus.subscribe(topic, got, group="g")
    await eventually(lambda: long.id in got.ids, timeout=30)
    assert [long.id] == got.ids
    if not bus.capabilities.native_ttl:  # a native-TTL broker may drop it before we see it

        async def dead_lettered() -> bool:
            return len(await bus.dead_letters(f"{topic}.dlq")) == 1

        await eventually(dead_lettered)
        [dead] = await bus.dead_letters(f"{topic}.dlq")
        assert (short.id, "expired") == (dead.id, dead.extensions["dlqreason"])


async def test_inbox_skips_duplicates(make_bus: Callable[..., Bus], topic: str) -> None:
    """With an inbox, an event published twice (same source and id) is handled once."""
    bus = await make_bus(policy=Policy(inbox=MemoryInbox())).start()
    got = Collector()
    await bus.subscribe(topic, got, group="g")
    event = Event(type="t", source="s", data=1)
    await bus.publish(topic, event, key="k")
    await bus.publish(topic, event, key="k")
    marker = await bus.publish(topic, type="marker", key="k")
    await eventually(lambda: marker.id in got.ids)
    assert [event.id, marker.id] == got.ids


async def test_breaker_stops_flooding_the_dlq(make_bus: Callable[..., Bus], topic: str) -> None:
    """After `threshold` dead letters in a row, consumption pauses instead of flooding the DLQ."""
    policy = Policy(retry=Retry(max_attempts=1), breaker=CircuitBreaker(threshold=2, cooldown=60))
    bus = await make_bus(policy=policy).start()
    calls: list[str] = []

    async def down(event: Event) -> None:
        calls.append(event.id)
        raise ConnectionError("downstream is down")

    await bus.subscribe(topic, down, group="g")
    for i in range(6):
        await bus.publish(topic, type="t", data=i, key="one-key")
    await eventually(lambda: len(calls) == 3)
    await asyncio.sleep(0.3)
    assert 2 == len(await bus.dead_letters(f"{topic}.dlq"))
    assert 3 == len(calls)


async def test_breaker_half_opens_and_recovers(make_bus: Callable[..., Bus], topic: str) -> None:
    """After the cool-down one event is tried; when it succeeds consumption resumes."""
    policy = Policy(retry=Retry(max_attempts=1), breaker=CircuitBreaker(threshold=1, cooldown=0.3))
    bus = await make_bus(policy=policy).start()
    healthy = asyncio.Event()
    handled: list[int] = []

    async def recovering(event: Event) -> None:
        if not healthy.is_set():
            raise ConnectionError("down")
        handled.append(event.data)

    await bus.subscribe(topic, recovering, group="g")
    for i in range(4):
        await bus.publish(topic, type="t", data=i, key="k")

    async def first_dead() -> bool:
        return len(await bus.dead_letters(f"{topic}.dlq")) == 1

    await eventually(first_dead)
    healthy.set()
    await eventually(lambda: len(handled) == 3, timeout=30)
    assert [1, 2, 3] == handled
    assert 1 == len(await bus.dead_letters(f"{topic}.dlq"))


async def test_handler_events_inherit_causation_and_trace(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """An event published inside a handler carries the handled event's correlation, its id as
    causation and a child span of its traceparent."""
    bus = await make_bus().start()
    got = Collector()

    async def react(event: Event) -> None:
        assert current_event() is not None
        await bus.publish(f"{topic}-out", type="reaction")

    await bus.subscribe(topic, react, group="g")
    await bus.subscribe(f"{topic}-out", got, group="g")
    cause = await bus.publish(topic, type="cause", correlation_id="order-9")
    await eventually(lambda: len(got.events) == 1)
    effect = got.events[0]
    assert (cause.id, "order-9") == (effect.causationid, effect.correlationid)
    assert cause.traceparent is not None
    assert effect.traceparent is not None
    assert cause.traceparent.split("-")[1] == effect.traceparent.split("-")[1]
    assert cause.traceparent.split("-")[2] != effect.traceparent.split("-")[2]


async def test_dlq_replay_and_purge(make_bus: Callable[..., Bus], topic: str) -> None:
    """Dead letters replay to their original topic without dlq extensions, and purge empties."""
    bus = await make_bus(policy=Policy(retry=Retry(max_attempts=1))).start()
    fixed = asyncio.Event()
    handled = Collector()

    async def sometimes(event: Event) -> None:
        if not fixed.is_set():
            raise RuntimeError("bug")
        await handled(event)

    await bus.subscribe(topic, sometimes, group="g")
    sent = [await bus.publish(topic, type="t", data=i) for i in range(3)]
    dlq = f"{topic}.dlq"

    async def all_dead() -> bool:
        return len(await bus.dead_letters(dlq)) == 3

    await eventually(all_dead)
    fixed.set()
    replayed = await bus.replay(dlq)
    await eventually(lambda: len(handled.events) == 3)
    assert sorted(e.id for e in sent) == sorted(handled.ids)
    assert all(not any(k.startswith("dlq") for k in e.extensions) for e in replayed)
    assert [] == await bus.dead_letters(dlq)
    await bus.publish(dlq, Event(type="junk", source="s"))
    assert 1 == await bus.purge(dlq)
    assert [] == await bus.dead_letters(dlq)


async def test_concurrent_lanes_never_run_one_key_twice(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """With concurrency=4 handlers overlap, but two events of one key never run at once, and
    where the backend orders keys each key keeps its publish order."""
    bus = await make_bus(policy=Policy(concurrency=4)).start()
    running: dict[str, int] = {}
    overlap = {"max": 0, "same_key": 0}
    seen: dict[str, list[int]] = {}

    async def slow(event: Event) -> None:
        key = str(event.partitionkey)
        running[key] = running.get(key, 0) + 1
        overlap["same_key"] = max(overlap["same_key"], running[key])
        overlap["max"] = max(overlap["max"], sum(running.values()))
        await asyncio.sleep(0.01)
        seen.setdefault(key, []).append(event.data)
        running[key] -= 1

    await bus.subscribe(topic, slow, group="g")
    for n in range(40):
        await bus.publish(topic, type="t", data=n, key=f"k{n % 4}")
    await eventually(lambda: sum(len(v) for v in seen.values()) == 40, timeout=60)
    assert 1 == overlap["same_key"]
    assert overlap["max"] > 1
    if bus.capabilities.ordered_keys:
        assert all(sorted(values) == values for values in seen.values())


async def test_handler_past_its_timeout_is_a_failed_attempt(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """A handler that runs past handler_timeout is cancelled and the attempt counts as failed:
    retried, then dead-lettered with a HandlerTimeoutError; the next event is handled."""
    retry = Retry(max_attempts=2, initial_delay=0.01, max_delay=0.05)
    bus = await make_bus(policy=Policy(retry=retry, handler_timeout=0.2)).start()
    calls: list[str] = []
    cancelled: list[str] = []
    handled = Collector()

    async def hangs_on_slow(event: Event) -> None:
        if event.type != "slow":
            await handled(event)
            return
        calls.append(event.id)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(event.id)
            raise

    await bus.subscribe(topic, hangs_on_slow, group="g")
    slow = await bus.publish(topic, type="slow", key="k")
    fast = await bus.publish(topic, type="fast", key="k")
    dlq = f"{topic}.dlq"

    async def dead_lettered() -> bool:
        return len(await bus.dead_letters(dlq)) == 1

    await eventually(dead_lettered)
    [dead] = await bus.dead_letters(dlq)
    assert (slow.id, "handler-error", 2) == (
        dead.id,
        dead.extensions["dlqreason"],
        dead.extensions["dlqattempts"],
    )
    assert (
        "HandlerTimeoutError: the handler did not finish within handler_timeout=0.2s"
        == dead.extensions["dlqerror"]
    )
    assert [slow.id, slow.id] == calls == cancelled
    await eventually(lambda: fast.id in handled.ids)


async def test_a_failure_while_stopping_is_not_the_handlers(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """A handler that fails because its subscription is stopping (a shutdown) is neither
    retried nor dead-lettered, even with one attempt: the event is delivered again to the
    group's next consumer."""
    bus = await make_bus(policy=Policy(retry=Retry(max_attempts=1))).start()
    started, release = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    async def interrupted(event: Event) -> None:
        calls.append(event.id)
        started.set()
        await release.wait()
        raise RuntimeError("killed by the shutdown")

    subscriber = await bus.subscribe(topic, interrupted, group="g")
    sent = await bus.publish(topic, type="t")
    await asyncio.wait_for(started.wait(), 30)
    stopping = asyncio.create_task(subscriber.stop(grace=30))
    await asyncio.sleep(0)  # stop() marks the subscription stopping before it first waits
    release.set()
    await asyncio.wait_for(stopping, 60)
    assert [sent.id] == calls
    assert [] == await bus.dead_letters(f"{topic}.dlq")
    again = Collector()
    await bus.subscribe(topic, again, group="g")
    await eventually(lambda: sent.id in again.ids, timeout=60)
    assert [sent.id] == again.ids
