"""NATS JetStream fault tests against a real nats-server: restarts (graceful and SIGKILL), a
consumer process killed with -9, a handler that always fails, per-message TTL, and dead
letters that the server's de-duplication must not swallow."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from broker import Bus, Event, Policy, Retry
from broker.adapters.nats import safe_name
from tests.helpers import Collector, eventually
from tests.servers.nats import NatsServer

pytestmark = pytest.mark.nats

ROOT = Path(__file__).resolve().parents[2]
FAST = Retry(max_attempts=1)


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses."""
    return f"faults-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A started bus on the session's server."""
    async with Bus(nats_url, source="faults") as started:
        yield started


async def _publish_while(bus: Bus, topic: str, fault: asyncio.Task[None], count: int) -> list[str]:
    """Publish ``count`` events in 8 concurrent streams while ``fault`` runs; their ids."""
    sent: list[str] = []

    async def stream(offset: int) -> None:
        for i in range(offset, count, 8):
            sent.append((await bus.publish(topic, type="t", data=i)).id)
            await asyncio.sleep(0.005)

    await asyncio.gather(*(stream(k) for k in range(8)), fault)
    return sent


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
async def test_server_restart_loses_nothing(
    restartable_nats: NatsServer, topic: str, hard: bool
) -> None:
    """When nats-server stops (gracefully, or killed with fsync-always storage) and starts again
    mid-stream, publishers and consumers reconnect by themselves and every event arrives."""
    got = Collector()
    async with Bus(restartable_nats.url, source="faults") as bus:
        await bus.subscribe(topic, got, group="g")

        async def fault() -> None:
            await eventually(lambda: len(got.events) >= 50, what="the stream to be flowing")
            await asyncio.to_thread(restartable_nats.restart, hard=hard)

        sent = await _publish_while(bus, topic, asyncio.create_task(fault()), 400)
        await eventually(lambda: set(sent) <= set(got.ids), timeout=60, what="every event")
    assert set(sent) == set(got.ids)


async def test_stop_while_the_server_is_down_is_prompt(
    restartable_nats: NatsServer, topic: str
) -> None:
    """Stopping a bus whose server just died returns within seconds (nothing to drain)."""
    bus = await Bus(restartable_nats.url).start()
    await bus.subscribe(topic, Collector(), group="g")
    await bus.publish(topic, type="t")
    await asyncio.to_thread(restartable_nats.kill)
    started = time.monotonic()
    await bus.stop()
    assert time.monotonic() - started < 3


async def test_deleted_stream_is_recreated_and_the_group_resumes(
    bus: Bus, topic: str, nats_url: str
) -> None:
    """When an operator deletes a topic's stream, the next publish re-creates it and the
    group's subscription restores its consumer and receives the new events."""
    got = Collector()
    await bus.subscribe(topic, got, group="g")
    first = await bus.publish(topic, type="t")
    await eventually(lambda: len(got.events) == 1)
    nc = await nats.connect(nats_url.split("?", 1)[0])
    try:
        await nc.jetstream().delete_stream(safe_name(topic))
    finally:
        await nc.close()
    second = await bus.publish(topic, type="t")
    await eventually(lambda: len(got.events) == 2, timeout=30, what="the restored consumer")
    assert [first.id, second.id] == got.ids


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from broker import Bus

    async def main(url, topic, out):
        async def handle(event):
            with open(out, "a") as f:
                f.write(event.id + "\\n")
            await asyncio.sleep(0.02)

        async with Bus(url) as bus:
            await bus.subscribe(topic, handle, group="workers", prefetch=50)
            print("ready", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_consumer_killed_with_sigkill_loses_nothing(
    bus: Bus, topic: str, nats_url: str, tmp_path: Path
) -> None:
    """A consumer process killed with -9 mid-batch loses nothing: its unacked events go to the
    group's next consumer once ack_wait passes."""
    out = tmp_path / "handled.txt"
    out.touch()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        nats_url,
        topic,
        str(out),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        assert b"ready\n" == await asyncio.wait_for(child.stdout.readline(), 30)
        sent = [(await bus.publish(topic, type="t", data=i)).id for i in range(200)]
        await eventually(lambda: len(out.read_text().split()) >= 20, what="the child to work")
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 10)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    handled_by_child = set(out.read_text().split())
    assert 0 < len(handled_by_child) < len(sent)
    after = Collector()
    await bus.subscribe(topic, after, group="workers")
    await eventually(lambda: set(sent) <= handled_by_child | set(after.ids), timeout=60)
    assert set(sent) == handled_by_child | set(after.ids)


async def test_always_failing_handler_ends_in_dlq_after_exact_attempts(
    nats_url: str, topic: str
) -> None:
    """A handler that always fails is called exactly max_attempts times, then the event is in
    <topic>.dlq with dlqattempts equal to that."""
    policy = Policy(retry=Retry(max_attempts=4, initial_delay=0.01, max_delay=0.02))
    calls: list[str] = []

    async def broken(event: Event) -> None:
        calls.append(event.id)
        raise RuntimeError("always")

    async with Bus(nats_url, policy=policy) as bus:
        await bus.subscribe(topic, broken, group="g")
        sent = await bus.publish(topic, type="t")

        async def dead_lettered() -> bool:
            return len(await bus.dead_letters(f"{topic}.dlq")) == 1

        await eventually(dead_lettered)
        [dead] = await bus.dead_letters(f"{topic}.dlq")
        marker = await bus.publish(topic, type="marker")  # proves the first one is settled
        await eventually(lambda: marker.id in calls)
    assert [sent.id] * 4 == [c for c in calls if c == sent.id]
    assert (sent.id, 4, "handler-error") == (
        dead.id,
        dead.extensions["dlqattempts"],
        dead.extensions["dlqreason"],
    )


async def test_two_groups_dead_letter_the_same_event(bus: Bus, topic: str) -> None:
    """The same event dead-lettered by two groups into one DLQ is kept twice: the server's
    de-duplication (Nats-Msg-Id) must not swallow the second dead letter."""
    policy = Policy(retry=FAST)

    async def broken(event: Event) -> None:
        raise RuntimeError("no")

    await bus.subscribe(topic, broken, group="billing", policy=policy)
    await bus.subscribe(topic, broken, group="shipping", policy=policy)
    sent = await bus.publish(topic, type="t")

    async def both() -> bool:
        return len(await bus.dead_letters(f"{topic}.dlq")) == 2

    await eventually(both)
    dead = await bus.dead_letters(f"{topic}.dlq")
    assert [sent.id, sent.id] == [d.id for d in dead]
    assert ["billing", "shipping"] == sorted(str(d.extensions["dlqgroup"]) for d in dead)


async def test_replayed_event_fails_again_and_is_dead_lettered_again(bus: Bus, topic: str) -> None:
    """Replaying a dead letter within the de-duplication window delivers it again, and when it
    fails again it is dead-lettered again (neither is dropped as a duplicate)."""
    calls: list[str] = []

    async def broken(event: Event) -> None:
        calls.append(event.id)
        raise RuntimeError("still broken")

    policy = Policy(retry=FAST)
    subscriber = await bus.subscribe(topic, broken, group="g", policy=policy)
    sent = await bus.publish(topic, type="t")
    dlq = f"{topic}.dlq"

    async def one_dead_letter() -> bool:
        return 1 == len(await bus.dead_letters(dlq))

    await eventually(one_dead_letter)
    await subscriber.stop()
    await bus.replay(dlq)
    assert [] == await bus.dead_letters(dlq)
    await bus.subscribe(topic, broken, group="g", policy=policy)
    await eventually(lambda: len(calls) == 2, what="the replayed event")
    await eventually(one_dead_letter, what="the second dead letter")
    assert [sent.id, sent.id] == calls


async def test_purge_by_id_deletes_only_those(bus: Bus, topic: str) -> None:
    """Purging chosen ids from a DLQ deletes exactly those entries (selective_delete)."""
    dlq = f"{topic}.dlq"
    kept, gone = Event(type="kept", source="s"), Event(type="gone", source="s")
    await bus.publish(dlq, kept)
    await bus.publish(dlq, gone)
    assert bus.capabilities.selective_delete
    assert 1 == await bus.purge(dlq, [gone.id])
    assert [kept.id] == [e.id for e in await bus.dead_letters(dlq)]


async def test_native_ttl_removes_expired_events_from_the_stream(
    bus: Bus, topic: str, nats_url: str
) -> None:
    """On a server with per-message TTL (2.11+) an event published with a TTL leaves the stream
    by itself once it passed; on older servers the capability says so and the event stays for
    the consumer's expiry check."""
    await bus.publish(topic, type="short", ttl=1)
    await bus.publish(topic, type="long", ttl=600)
    nc = await nats.connect(nats_url.split("?", 1)[0])
    try:
        js = nc.jetstream()

        async def remaining() -> int:
            return int((await js.stream_info(safe_name(topic))).state.messages)

        async def only_long_left() -> bool:
            return 1 == await remaining()

        if bus.capabilities.native_ttl:
            await eventually(only_long_left, timeout=10, what="the server to expire it")
        expected = 1 if bus.capabilities.native_ttl else 2
        assert expected == await remaining()
    finally:
        await nc.close()


async def test_native_ttl_can_be_turned_off(nats_url: str, topic: str) -> None:
    """With native_ttl=false the server keeps an expired event, so the consumer dead-letters it
    with reason expired even on a server with per-message TTL."""
    async with Bus(f"{nats_url}&native_ttl=false") as bus:
        assert not bus.capabilities.native_ttl
        subscriber = await bus.subscribe(topic, Collector(), group="g")
        await subscriber.stop()
        short = await bus.publish(topic, type="short", ttl=1)
        await asyncio.sleep(1.2)  # let the TTL pass: time itself is the condition here
        await bus.subscribe(topic, Collector(), group="g")

        async def dead_lettered() -> bool:
            return 1 == len(await bus.dead_letters(f"{topic}.dlq"))

        await eventually(dead_lettered)
        [dead] = await bus.dead_letters(f"{topic}.dlq")
    assert (short.id, "expired") == (dead.id, dead.extensions["dlqreason"])


async def test_closing_a_subscription_is_bounded_when_nats_py_swallows_the_cancel() -> None:
    """nats-py catches a CancelledError that lands in its `_flush_pending` and carries on (a
    subscription's drain then waits for its queue): `asyncio.wait_for` would wait for such
    work however long it goes on. The pump's close waits for it 5 s at most and leaves it."""
    from broker.adapters.nats.consumer import _at_most

    async def swallowing() -> None:  # what nats-py's drain does when cancelled mid-flush
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        await asyncio.sleep(30)

    began = time.monotonic()
    await _at_most(0.2, swallowing())
    assert time.monotonic() - began < 5

    async def failing(error: Exception) -> None:
        raise error

    await _at_most(1, failing(nats.errors.TimeoutError()))  # a NATS error: closing goes on
    with pytest.raises(ValueError, match="a bug"):
        await _at_most(1, failing(ValueError("a bug")))


async def test_the_delay_mover_stops_when_nats_py_swallows_its_cancel(
    restartable_nats: NatsServer, topic: str
) -> None:
    """Closing a bus ends its delayed-events mover even when the cancellation lands where
    nats-py swallows it (its `_flush_pending`, e.g. in a nak or a publish), and the event it
    was moving is not lost: the next bus delivers it. (CI once hung 300 s in such a close.)"""
    entered = asyncio.Event()

    async def swallowing(topic: str, body: bytes, headers: object) -> None:
        entered.set()  # what nats-py's flush does when cancelled: carry on as if nothing was
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        raise RuntimeError("the move is not done")

    bus = await Bus(restartable_nats.url, source="faults").start()
    await bus.subscribe(topic, Collector(), group="g")
    later = await bus.publish(topic, type="later", delay=0.2)
    bus.adapter.forward = swallowing  # type: ignore[attr-defined]
    await asyncio.wait_for(entered.wait(), 20)
    began = time.monotonic()
    await asyncio.wait_for(bus.stop(), 20)
    assert time.monotonic() - began < 10, "the close waited for the swallowed cancellation"

    got = Collector()
    async with Bus(restartable_nats.url, source="faults") as again:
        await again.subscribe(topic, got, group="g")
        await eventually(lambda: later.id in got.ids, timeout=30)
