"""Kafka fault tests: a broker restart mid-stream, a consumer process killed with -9 mid-batch,
and a handler that always fails, each against a real (spawned Tansu, or external) broker.

Tansu keeps its log in memory only, so a restart loses every record, topic, group and committed
offset. The restart test is designed around that honestly: the events published before the
restart are handled and acked before the kill; the broker comes back empty on the same port, the
topic is provisioned again (as after any data loss; a persistent Kafka keeps it), and the events
published afterwards must all reach the *same* subscriber, whose clients reconnected by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator

import pytest

from broker import Bus, Event, Policy, Retry
from tests.helpers import Collector, eventually
from tests.servers.kafka import KafkaServer

pytestmark = pytest.mark.kafka

CHILD = """
import asyncio, sys
from broker import Bus

async def main(url, topic):
    async def handle(event):
        print(event.id, flush=True)
        await asyncio.sleep(0.02)

    async with Bus(url) as bus:
        await bus.subscribe(topic, handle, group="workers", prefetch=50)
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses."""
    return f"faults-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def restartable(kafka_server: KafkaServer | None) -> KafkaServer:
    """The spawned broker; restarting someone else's external broker is not this suite's job."""
    if kafka_server is None:
        pytest.skip("CHOREO_TEST_KAFKA_URL names an external broker, which tests cannot restart")
    return kafka_server


async def test_broker_restart_mid_stream(
    restartable: KafkaServer, kafka_url: str, topic: str
) -> None:
    """After the broker restarts, publisher and subscriber reconnect by themselves and every
    event published after the restart is delivered; the ones before were handled already."""
    async with Bus(kafka_url) as publisher, Bus(kafka_url) as consumer:
        got = Collector()
        await consumer.subscribe(topic, got, group="g")
        before = [(await publisher.publish(topic, type="t", data=i)).id for i in range(20)]
        await eventually(lambda: set(before) <= set(got.ids), what="events before the restart")
        restartable.restart()
        await publisher.create_topic(topic, partitions=4)  # the memory-only broker lost it
        after = [(await publisher.publish(topic, type="t", data=i)).id for i in range(20, 50)]
        await eventually(lambda: set(after) <= set(got.ids), timeout=60, what="events after")
    assert sorted(before + after) == sorted(set(got.ids))


async def _lines(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        into.append(line.decode().strip())


async def test_consumer_killed_with_sigkill_loses_nothing(kafka_url: str, topic: str) -> None:
    """A consumer process killed with -9 mid-batch loses no event: what it had not acked
    (committed) is delivered to the group's next member."""
    async with Bus(kafka_url) as bus:
        await bus.create_topic(topic, partitions=4)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, kafka_url, topic,
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()},
        )  # fmt: skip
        assert child.stdout is not None
        seen: list[str] = []
        reader = asyncio.create_task(_lines(child.stdout, seen))
        try:
            await eventually(lambda: "ready" in seen, timeout=60, what="the child to subscribe")
            sent = [(await bus.publish(topic, type="t", data=i)).id for i in range(200)]
            await eventually(lambda: len(seen) > 40, timeout=30, what="the child mid-batch")
        finally:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGKILL)
            await child.wait()
            await reader
        handled_by_child = set(seen) - {"ready"}
        assert handled_by_child < set(sent)
        survivor = Collector()
        await bus.subscribe(topic, survivor, group="workers")
        await eventually(
            lambda: set(sent) <= handled_by_child | set(survivor.ids), timeout=60,
            what="the survivor to take over the killed member's partitions",
        )  # fmt: skip
    assert -signal.SIGKILL == child.returncode


async def test_rebalance_mid_stream_loses_nothing(kafka_url: str, topic: str) -> None:
    """A member joining while another is busy takes over partitions: the busy member commits
    what it acked, the rest reaches the new owner, and every event is handled."""
    first_handled: list[str] = []
    second = Collector()

    async def slow(event: Event) -> None:
        await asyncio.sleep(0.005)
        first_handled.append(event.id)

    async with Bus(kafka_url) as first, Bus(kafka_url) as joiner:
        await first.create_topic(topic, partitions=4)
        await first.subscribe(topic, slow, group="workers")
        sent = [(await first.publish(topic, type="t", data=i, key=f"k{i}")).id for i in range(400)]
        await eventually(lambda: len(first_handled) >= 50, what="the first member mid-stream")
        await joiner.subscribe(topic, second, group="workers")
        await eventually(
            lambda: set(sent) <= set(first_handled) | set(second.ids), timeout=60,
            what="every event handled by one member or the other",
        )  # fmt: skip
    assert second.ids, "the joining member took over no partition"
    assert sorted(sent) == sorted(set(first_handled) | set(second.ids))


@pytest.fixture
async def bus(kafka_url: str) -> AsyncIterator[Bus]:
    """A started bus with four fast attempts per event."""
    policy = Policy(retry=Retry(max_attempts=4, initial_delay=0.01, max_delay=0.02))
    async with Bus(kafka_url, policy=policy) as started:
        yield started


async def test_always_failing_handler_ends_in_dlq_after_exact_attempts(
    bus: Bus, topic: str
) -> None:
    """A handler that always raises is called exactly max_attempts times per event, then the
    event sits in <topic>.dlq once, and the group moves on."""
    calls: list[str] = []

    async def broken(event: Event) -> None:
        calls.append(event.id)
        raise RuntimeError("always")

    await bus.subscribe(topic, broken, group="g")
    sent = [await bus.publish(topic, type="t", data=i, key="one") for i in range(3)]

    async def all_dead() -> bool:
        return len(await bus.dead_letters(f"{topic}.dlq")) == 3

    await eventually(all_dead, timeout=30)
    dead = await bus.dead_letters(f"{topic}.dlq")
    assert [e.id for e in sent for _ in range(4)] == calls
    assert sorted(e.id for e in sent) == sorted(e.id for e in dead)
    assert {4} == {e.extensions["dlqattempts"] for e in dead}
    assert {"handler-error"} == {e.extensions["dlqreason"] for e in dead}


async def test_stopping_with_the_broker_gone_is_bounded(topic: str) -> None:
    """A bus whose broker died stops within its publish timeout plus the consumer's bounds: a
    shutdown never waits forever for a broker that no longer answers."""
    server = KafkaServer()
    server.start()
    try:
        url = f"{server.url}&publish_timeout_ms=2000"
        bus = Bus(url)
        await bus.start()
        got = Collector()
        await bus.subscribe(topic, got, group="g")
        sent = await bus.publish(topic, type="t", data=1)
        await eventually(lambda: sent.id in got.ids, what="the event before the broker dies")
        server.kill()
        await asyncio.wait_for(bus.stop(), 30)
    finally:
        server.kill()
