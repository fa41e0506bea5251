"""RabbitMQ side by side: raw aio-pika vs choreograph vs FastStream, in one run.

    .venv/bin/python -m bench.brokers.rabbitmq

Uses the same server as the tests (``CHOREO_TEST_AMQP_URL`` or the local broker in a fresh
vhost). Measures, with durable semantics everywhere (persistent messages, publisher confirms,
a durable queue bound so the broker really stores them, manual ack of each delivery):

* publish/s: 20,000 x 256-byte events, 64 in flight (raw sends the same cloudEvents_* headers
  and message id, as a CloudEvents producer would);
* publish_many/s: the same events 500 a call (raw: 500 publishes gathered, confirms in flight;
  choreograph: ``publish_many``);
* consume/s: 20,000 stored events, prefetch 100, acked after the handler, rates from the first
  event handled to the last; the "batch handler" row hands lists of up to 100 events to one
  handler call (choreograph ``subscribe_batch``; FastStream has no RabbitMQ batch consumer);
* e2e p50/p99 ms: publish-to-handler latency at a paced 1,000 events/s (1,500 per round);
* every measurement runs in ROUNDS interleaved rounds (rotating who goes first); rows hold the
  medians and the spread of choreograph/raw round by round.

Writes ``bench/results/rabbitmq.json`` (rows for ``bench/run.py``) and prints a table.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.schemas import Channel

from bench.brokers._harness import (
    Arrivals,
    Contender,
    Latencies,
    consume_bus,
    interleaved,
    latency_rows,
    paced,
    publish_many_bus,
    row,
    spread,
)
from broker import Bus, Event
from devservers.rabbitmq import rabbitmq_session

COUNT = 20_000
PREFETCH = 100
CALL = 500  # events per publish_many call
BATCH = 100  # events per batch handler call (choreograph's default max_batch)
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
            await exchange.publish(_message(body, i), routing_key=topic)

        return await spread(COUNT, publish)


def _message(body: bytes, i: int) -> aio_pika.Message:
    """A persistent message with the cloudEvents_* headers a CloudEvents producer sends."""
    return aio_pika.Message(
        body,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=f"raw-{i}",
        content_type="application/json",
        headers={
            "cloudEvents_specversion": "1.0",
            "cloudEvents_id": f"raw-{i}",
            "cloudEvents_source": "bench",
            "cloudEvents_type": "bench",
            "cloudEvents_time": "2026-01-01T00:00:00Z",
        },
    )


async def publish_many_raw(url: str, topic: str) -> float:
    """What a raw client does for a list: every publish at once, then the confirms."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(topic)
        body = json.dumps(PAYLOAD).encode()
        started = time.perf_counter()
        for first in range(0, COUNT, CALL):
            await asyncio.gather(
                *(
                    exchange.publish(_message(body, i), routing_key=topic)
                    for i in range(first, first + CALL)
                )
            )
        return COUNT / (time.perf_counter() - started)


async def publish_many_choreograph(url: str, topic: str) -> float:
    return await publish_many_bus(url, topic, COUNT, CALL, PAYLOAD)


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
    arrivals = Arrivals(COUNT)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(f"{topic}.raw", durable=True)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            arrivals.add()

        await queue.consume(on_message)
        return await arrivals.rate()


async def consume_choreograph(url: str, topic: str) -> float:
    return await consume_bus(url, topic, "bench", COUNT, prefetch=PREFETCH, from_beginning=False)


async def consume_batch_choreograph(url: str, topic: str) -> float:
    return await consume_bus(url, topic, "bench", COUNT, batch=BATCH, from_beginning=False)


async def consume_faststream(url: str, topic: str) -> float:
    arrivals = Arrivals(COUNT)
    broker = RabbitBroker(url, logger=None, default_channel=Channel(prefetch_count=PREFETCH))

    @broker.subscriber(RabbitQueue(f"{topic}.fs", durable=True))
    async def handler(body: str) -> None:
        arrivals.add()

    await broker.start()
    try:
        return await arrivals.rate()
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


async def run(url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def timed(fn: Callable[[str, str], Awaitable[float]]) -> Contender:
        return lambda: asyncio.wait_for(_into_sink(url, lambda topic: fn(url, topic)), LIMIT)

    await _into_sink(url, lambda topic: publish_raw(url, topic))  # warm-up
    publishes: dict[str, dict[str, Contender]] = {
        "publish/s": {
            "raw": timed(publish_raw),
            "choreograph": timed(publish_choreograph),
            "faststream": timed(publish_faststream),
        },
        "publish_many/s (500 a call)": {
            "raw": timed(publish_many_raw),
            "choreograph": timed(publish_many_choreograph),
        },
    }
    for metric, contenders in publishes.items():
        rows.append(row("rabbitmq", metric, await interleaved(contenders, ROUNDS)))
    for metric, runs in {
        "consume/s": (consume_raw, consume_choreograph, consume_faststream),
        "consume/s, batch handler": (consume_raw, consume_batch_choreograph),
    }.items():
        results: dict[str, list[float]] = {name: [] for name in NAMES[: len(runs)]}
        for round_ in range(ROUNDS):  # each round fills fresh queues, then each drains its own
            topic = await asyncio.wait_for(fill(url), LIMIT)
            for k in range(len(runs)):
                index = (round_ + k) % len(runs)
                rate = await asyncio.wait_for(runs[index](url, topic), LIMIT)
                results[NAMES[index]].append(rate)
            await _drop(url, *(f"{topic}.{name}" for name in ("raw", "bench", "fs")))
        rows.append(row("rabbitmq", metric, results))
    runs = dict(zip(NAMES, (latency_raw, latency_choreograph, latency_faststream), strict=True))
    rows += await latency_rows(
        "rabbitmq",
        {name: functools.partial(_limited, run, url) for name, run in runs.items()},
        ROUNDS,
    )
    return rows


NAMES = ("raw", "choreograph", "faststream")


async def _limited(run: Callable[[str], Awaitable[list[float]]], url: str) -> list[float]:
    return await asyncio.wait_for(run(url), LIMIT)


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    with rabbitmq_session() as server:
        rows = asyncio.run(run(server.url))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
