"""RabbitMQ side by side: raw aio-pika vs choreograph vs FastStream, in one run.

    .venv/bin/python -m bench.brokers.rabbitmq

Uses the same server as the tests (``CHOREO_TEST_AMQP_URL`` or the local broker in a fresh
vhost). Measures, with durable semantics everywhere (persistent messages, publisher confirms,
a durable queue bound so the broker really stores them, manual ack of each delivery):

* publish/s: 20,000 x 256-byte events, 64 in flight;
* consume/s: 20,000 stored events, prefetch 100, acked after the handler;
* e2e p50/p99 ms: publish-to-handler latency at a paced 1,000 events/s (1,500 per round, pooled).

Writes ``bench/results/rabbitmq.json`` (rows for ``bench/run.py``) and prints a table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.schemas import Channel

from bench.brokers._harness import Latencies, paced, percentile, spread
from broker import Bus, Event
from devservers.rabbitmq import rabbitmq_session

COUNT = 20_000
PREFETCH = 100
RATE = 1_000
LATENCY_COUNT = 1_500  # per round
LIMIT = 120.0  # seconds any one measurement may take
ROUNDS = 3  # interleaved; the median of each is reported (the machine may be shared)
PAYLOAD = "x" * 254  # a JSON string of 256 bytes
RESULTS = Path(__file__).resolve().parents[1] / "results" / "rabbitmq.json"


async def _drop(url: str, *queues: str) -> None:
    """Delete queues a measurement filled, so the broker does not carry them into the next."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)


async def _sink(url: str, exchange: str, queue: str) -> None:
    """A durable exchange with a durable queue bound, so published events are stored."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        bound = await channel.declare_queue(queue, durable=True)
        await bound.bind(ex, routing_key="#")


async def _into_sink(url: str, run: Callable[[str], Awaitable[float]]) -> float:
    """Run a publish measurement on a fresh topic with a stored queue, then drop the queue."""
    topic = f"bench-pub-{uuid.uuid4().hex[:8]}"
    await _sink(url, topic, f"{topic}.sink")
    try:
        return await run(topic)
    finally:
        await _drop(url, f"{topic}.sink")


# -- publish -----------------------------------------------------------------------------------


async def publish_raw(url: str, topic: str) -> float:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(topic)
        body = json.dumps(PAYLOAD).encode()

        async def publish(i: int) -> None:
            message = aio_pika.Message(
                body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=str(i),
                content_type="application/json",
            )
            await exchange.publish(message, routing_key=topic)

        return await spread(COUNT, publish)


async def publish_choreograph(url: str, topic: str) -> float:
    async with Bus(url, source="bench") as bus:
        return await spread(COUNT, lambda i: bus.publish(topic, type="bench", data=PAYLOAD))


async def publish_faststream(url: str, topic: str) -> float:
    broker = RabbitBroker(url, logger=None)
    await broker.connect()
    exchange = RabbitExchange(topic, type=ExchangeType.TOPIC, durable=True)
    try:
        return await spread(
            COUNT,
            lambda i: broker.publish(PAYLOAD, exchange=exchange, routing_key=topic, persist=True),
        )
    finally:
        await broker.stop()


# -- consume -----------------------------------------------------------------------------------


async def fill(url: str) -> str:
    """A topic whose three queues (raw, choreograph's group, FastStream) hold COUNT events."""
    topic = f"bench-sub-{uuid.uuid4().hex[:6]}"
    async with Bus(url, source="bench") as bus:
        subscriber = await bus.subscribe(topic, _ignore, group="bench")
        await subscriber.stop()
        for name in ("raw", "fs"):
            await _sink(url, topic, f"{topic}.{name}")
        await spread(COUNT, lambda i: bus.publish(topic, type="bench", data=PAYLOAD))
    return topic


async def _ignore(event: Event) -> None:
    return None


async def consume_raw(url: str, topic: str) -> float:
    done = asyncio.Event()
    count = 0
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(f"{topic}.raw", durable=True)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal count
            await message.ack()
            count += 1
            if count == COUNT:
                done.set()

        started = time.perf_counter()
        await queue.consume(on_message)
        await done.wait()
        return COUNT / (time.perf_counter() - started)


async def consume_choreograph(url: str, topic: str) -> float:
    done = asyncio.Event()
    count = 0

    async def handler(event: Event) -> None:
        nonlocal count
        count += 1
        if count == COUNT:
            done.set()

    async with Bus(url) as bus:
        started = time.perf_counter()
        await bus.subscribe(topic, handler, group="bench", prefetch=PREFETCH)
        await done.wait()
        return COUNT / (time.perf_counter() - started)


async def consume_faststream(url: str, topic: str) -> float:
    done = asyncio.Event()
    count = 0
    broker = RabbitBroker(url, logger=None, default_channel=Channel(prefetch_count=PREFETCH))

    @broker.subscriber(RabbitQueue(f"{topic}.fs", durable=True))
    async def handler(body: str) -> None:
        nonlocal count
        count += 1
        if count == COUNT:
            done.set()

    started = time.perf_counter()
    await broker.start()
    try:
        await done.wait()
        return COUNT / (time.perf_counter() - started)
    finally:
        await broker.stop()


# -- latency -----------------------------------------------------------------------------------


async def latency_raw(url: str) -> list[float]:
    topic = f"bench-lat-raw-{uuid.uuid4().hex[:6]}"
    await _sink(url, topic, f"{topic}.raw")
    latencies = Latencies(LATENCY_COUNT)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(f"{topic}.raw", durable=True)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            latencies.record(json.loads(message.body)["t"])
            await message.ack()

        await queue.consume(on_message)
        exchange = await channel.get_exchange(topic)

        async def send(now: float) -> None:
            body = json.dumps({"t": now}).encode()
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await exchange.publish(message, routing_key=topic)

        return await paced(send, latencies)


async def latency_choreograph(url: str) -> list[float]:
    topic = f"bench-lat-choreo-{uuid.uuid4().hex[:6]}"
    latencies = Latencies(LATENCY_COUNT)

    async def handler(event: Event) -> None:
        latencies.record(event.data["t"])

    async with Bus(url, source="bench") as bus:
        await bus.subscribe(topic, handler, group="bench", prefetch=PREFETCH)
        return await paced(lambda now: bus.publish(topic, type="t", data={"t": now}), latencies)


async def latency_faststream(url: str) -> list[float]:
    topic = f"bench-lat-fs-{uuid.uuid4().hex[:6]}"
    latencies = Latencies(LATENCY_COUNT)
    broker = RabbitBroker(url, logger=None, default_channel=Channel(prefetch_count=PREFETCH))
    exchange = RabbitExchange(topic, type=ExchangeType.TOPIC, durable=True)

    @broker.subscriber(RabbitQueue(f"{topic}.fs", durable=True, routing_key="#"), exchange)
    async def handler(body: dict[str, float]) -> None:
        latencies.record(body["t"])

    await broker.start()
    try:
        return await paced(
            lambda now: broker.publish(
                {"t": now}, exchange=exchange, routing_key=topic, persist=True
            ),
            latencies,
        )
    finally:
        await broker.stop()


# -- the run -----------------------------------------------------------------------------------


def _rotated(count: int, round_: int) -> list[int]:
    """The order of the contenders in a round: each goes first once (no position bias)."""
    return [(round_ + k) % count for k in range(count)]


async def run(url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def row(metric: str, raw: float, choreo: float, fast: float | None) -> None:
        rows.append(
            {
                "suite": "brokers",
                "backend": "rabbitmq",
                "metric": metric,
                "raw": round(raw, 2),
                "choreograph": round(choreo, 2),
                "faststream": None if fast is None else round(fast, 2),
            }
        )
        print(
            f"{metric:>12}  raw {raw:10.2f}  choreograph {choreo:10.2f}  "
            f"faststream {fast or 0:10.2f}  ratio {choreo / raw:5.2f}",
            flush=True,
        )

    async def rounds(*runs: Callable[[], Awaitable[float]]) -> list[float]:
        results: list[list[float]] = [[] for _ in runs]
        for round_ in range(ROUNDS):
            for index in _rotated(len(runs), round_):
                results[index].append(await asyncio.wait_for(runs[index](), LIMIT))
        return [statistics.median(r) for r in results]

    await _into_sink(url, lambda topic: publish_raw(url, topic))  # warm-up
    row(
        "publish/s",
        *await rounds(
            lambda: _into_sink(url, lambda topic: publish_raw(url, topic)),
            lambda: _into_sink(url, lambda topic: publish_choreograph(url, topic)),
            lambda: _into_sink(url, lambda topic: publish_faststream(url, topic)),
        ),
    )
    consumed: list[list[float]] = [[], [], []]
    for round_ in range(ROUNDS):
        topic = await asyncio.wait_for(fill(url), LIMIT)
        consumers = (consume_raw, consume_choreograph, consume_faststream)
        for index in _rotated(3, round_):
            consumed[index].append(await asyncio.wait_for(consumers[index](url, topic), LIMIT))
        await _drop(url, *(f"{topic}.{name}" for name in ("raw", "bench", "fs")))
    row("consume/s", *(statistics.median(rates) for rates in consumed))
    latencies: list[list[float]] = [[], [], []]
    paced = (latency_raw, latency_choreograph, latency_faststream)
    for round_ in range(ROUNDS):  # pooled over interleaved rounds
        for index in _rotated(3, round_):
            latencies[index].extend(await asyncio.wait_for(paced[index](url), LIMIT))
    raw, choreo, fast = latencies
    row("e2e p50 ms", statistics.median(raw), statistics.median(choreo), statistics.median(fast))
    row("e2e p99 ms", percentile(raw, 0.99), percentile(choreo, 0.99), percentile(fast, 0.99))
    return rows


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    with rabbitmq_session() as server:
        rows = asyncio.run(run(server.url))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
