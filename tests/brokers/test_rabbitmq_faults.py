"""RabbitMQ fault tests: dropped connections, a broker node killed with -9 and restarted, a
consumer killed with -9, and a handler that always fails, all against real RabbitMQ."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker import Bus, Event, Policy, Retry
from broker.adapters.rabbitmq import RabbitMQAdapter
from tests.helpers import Collector, eventually
from tests.servers.rabbitmq import TEST_OPTIONS, RabbitMQNode, RabbitMQServer

pytestmark = pytest.mark.rabbitmq

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses."""
    return f"faults-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def bus(rabbitmq_url: str) -> AsyncIterator[Bus]:
    """A started bus on the session's vhost."""
    async with Bus(rabbitmq_url, source="faults") as started:
        yield started


def _needs_rabbitmqctl(server: RabbitMQServer) -> None:
    if not server.managed:
        pytest.skip("fault injection needs the local broker and rabbitmqctl, not an external URL")


async def _publish_while(bus: Bus, topic: str, fault: asyncio.Task[None], count: int) -> list[str]:
    """Publish ``count`` events in 8 concurrent streams while ``fault`` runs; their ids."""
    sent: list[str] = []

    async def stream(offset: int) -> None:
        for i in range(offset, count, 8):
            sent.append((await bus.publish(topic, type="t", data=i)).id)
            await asyncio.sleep(0.005)

    await asyncio.gather(*(stream(k) for k in range(8)), fault)
    return sent


async def test_dropped_connections_lose_nothing(
    bus: Bus, topic: str, rabbitmq_server: RabbitMQServer
) -> None:
    """When the broker closes every connection mid-stream, publishers and consumers reconnect
    by themselves and every published event is delivered."""
    _needs_rabbitmqctl(rabbitmq_server)
    got = Collector()
    await bus.subscribe(topic, got, group="g")

    async def fault() -> None:
        await eventually(lambda: len(got.events) >= 50, what="the stream to be flowing")
        await asyncio.to_thread(rabbitmq_server.drop_connections)

    sent = await _publish_while(bus, topic, asyncio.create_task(fault()), 400)
    await eventually(lambda: set(sent) <= set(got.ids), timeout=60, what="every event")
    assert set(sent) == set(got.ids)


async def test_broker_crash_and_restart_loses_nothing(rabbitmq_node: RabbitMQNode) -> None:
    """When the RabbitMQ node is killed with -9 mid-stream and started again, durable queues and
    confirmed persistent events survive, and publishers and consumers resume on their own."""
    topic = f"crash-{uuid.uuid4().hex[:12]}"
    got = Collector()
    async with Bus(f"{rabbitmq_node.url}?{TEST_OPTIONS}", source="faults") as bus:
        await bus.subscribe(topic, got, group="g")

        async def fault() -> None:
            await eventually(lambda: len(got.events) >= 50, what="the stream to be flowing")
            await asyncio.to_thread(rabbitmq_node.restart)

        sent = await _publish_while(bus, topic, asyncio.create_task(fault()), 400)
        await eventually(lambda: set(sent) <= set(got.ids), timeout=90, what="every event")
    assert set(sent) == set(got.ids)


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
    bus: Bus, topic: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    """A consumer process killed with -9 mid-batch loses nothing: its unacked events go to the
    group's next consumer."""
    out = tmp_path / "handled.txt"
    out.touch()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        rabbitmq_url,
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
    rabbitmq_url: str, topic: str
) -> None:
    """A handler that always fails is called exactly max_attempts times, then the event is in
    <topic>.dlq with dlqattempts equal to that."""
    policy = Policy(retry=Retry(max_attempts=4, initial_delay=0.01, max_delay=0.02))
    calls: list[str] = []

    async def broken(event: Event) -> None:
        calls.append(event.id)
        raise RuntimeError("always")

    async with Bus(rabbitmq_url, policy=policy) as bus:
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


async def test_broker_expired_event_is_dead_lettered_as_expired(bus: Bus, topic: str) -> None:
    """An event RabbitMQ expires in a group queue (its TTL passed, nobody consuming) lands in
    <topic>.dlq with dlqreason=expired and the group that missed it."""
    subscriber = await bus.subscribe(topic, Collector(), group="away")
    await subscriber.stop()
    short = await bus.publish(topic, type="short", ttl=0.05)

    async def dead_lettered() -> bool:
        return len(await bus.dead_letters(f"{topic}.dlq")) == 1

    await eventually(dead_lettered, timeout=30)
    [dead] = await bus.dead_letters(f"{topic}.dlq")
    assert (short.id, "expired", topic, "away") == (
        dead.id,
        dead.extensions["dlqreason"],
        dead.extensions["dlqtopic"],
        dead.extensions["dlqgroup"],
    )


async def test_close_waits_for_publishes_in_flight(bus: Bus, rabbitmq_url: str, topic: str) -> None:
    """Closing an adapter while publishes await their confirms lets every one of them finish."""
    got = Collector()
    await bus.subscribe(topic, got, group="g")
    writer = RabbitMQAdapter(rabbitmq_url)
    await writer.connect()
    events = [Event(type="t", source="s", data=i) for i in range(200)]
    tasks = [asyncio.create_task(writer.publish(topic, e)) for e in events]
    await asyncio.sleep(0)  # every publish has started and waits for the broker
    await writer.close()
    await asyncio.gather(*tasks)
    await eventually(lambda: len(got.events) >= 200, timeout=30)
    assert sorted(e.id for e in events) == sorted(got.ids)
