"""Kafka side by side: raw aiokafka vs choreograph vs FastStream, in one run.

    .venv/bin/python -m bench.brokers.kafka

Uses ``CHOREO_TEST_KAFKA_URL`` or spawns the same Tansu broker as the tests, with the same URL
tuning (short fetch long-poll, low session timeouts) for every client. Durable semantics
everywhere: acks=all producers; consumer groups that commit only after the handler:

* publish/s: 20,000 x 256-byte events, 64 in flight (raw sends the same ce_* headers per event,
  as a CloudEvents producer would);
* consume/s: 20,000 stored events read by a new group from the beginning; raw commits every 500
  records, choreograph commits acked offsets in batches, FastStream commits each (AckPolicy.ACK);
* each throughput is the best of two interleaved rounds (the machine is shared);
* e2e p50/p99 ms: publish-to-handler latency at a paced 1,000 events/s (FastStream with its
  default ack policy here: committing each record one by one saturates just above 1,000/s, which
  would measure queueing rather than latency).

Writes ``bench/results/kafka.json`` (rows for ``bench/run.py``) and prints a table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faststream import AckPolicy
from faststream.kafka import KafkaBroker

from bench.brokers._harness import Latencies, paced, percentile, spread
from broker import Bus, Event
from devservers.kafka import ENV_URL, running_kafka

COUNT = 20_000
PREFETCH = 500
RATE = 1_000
LATENCY_COUNT = 3_000
ROUNDS = 2
PAYLOAD = "x" * 254  # a JSON string of 256 bytes
RESULTS = Path(__file__).resolve().parents[1] / "results" / "kafka.json"
CONSUMER_OPTIONS = ("session_timeout_ms", "heartbeat_interval_ms", "fetch_max_wait_ms")


def _bootstrap(url: str) -> str:
    return urlsplit(url).netloc


def _consumer_options(url: str) -> dict[str, int]:
    query = dict(parse_qsl(urlsplit(url).query))
    return {k: int(v) for k, v in query.items() if k in CONSUMER_OPTIONS}


async def _topic(url: str, kind: str) -> str:
    """A fresh topic with 4 partitions (created the way choreograph creates it)."""
    topic = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
    async with Bus(url) as bus:
        await bus.create_topic(topic, partitions=4)
    return topic


def _headers(i: int) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", f"raw-{i}".encode()),
        ("ce_source", b"bench"),
        ("ce_type", b"bench"),
        ("ce_time", b"2026-01-01T00:00:00Z"),
        ("content-type", b"application/json"),
    ]


# -- publish -----------------------------------------------------------------------------------


async def publish_raw(url: str) -> float:
    topic = await _topic(url, "pub-raw")
    producer = AIOKafkaProducer(bootstrap_servers=_bootstrap(url), acks="all")
    await producer.start()
    body = json.dumps(PAYLOAD).encode()
    try:
        return await spread(
            COUNT, lambda i: producer.send_and_wait(topic, body, headers=_headers(i))
        )
    finally:
        await producer.stop()


async def publish_choreograph(url: str) -> float:
    topic = await _topic(url, "pub-choreo")
    async with Bus(url, source="bench") as bus:
        return await spread(COUNT, lambda i: bus.publish(topic, type="bench", data=PAYLOAD))


async def publish_faststream(url: str) -> float:
    topic = await _topic(url, "pub-fs")
    broker = KafkaBroker(_bootstrap(url), acks="all", logger=None)
    await broker.connect()
    try:
        return await spread(COUNT, lambda i: broker.publish(PAYLOAD, topic))
    finally:
        await broker.stop()


# -- consume -----------------------------------------------------------------------------------


async def fill(url: str) -> str:
    """A topic holding COUNT events, read by each consumer as a new group from the beginning."""
    topic = await _topic(url, "sub")
    async with Bus(url, source="bench") as bus:
        await spread(COUNT, lambda i: bus.publish(topic, type="bench", data=PAYLOAD))
    return topic


async def consume_raw(url: str, topic: str, name: str) -> float:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=_bootstrap(url), group_id=name, enable_auto_commit=False,
        auto_offset_reset="earliest", **_consumer_options(url),
    )  # fmt: skip
    started = time.perf_counter()
    await consumer.start()
    try:
        count = since_commit = 0
        while count < COUNT:
            batch = await consumer.getmany(timeout_ms=500, max_records=PREFETCH)
            for records in batch.values():
                count += len(records)
                since_commit += len(records)
            if since_commit >= 500:
                await consumer.commit()
                since_commit = 0
        await consumer.commit()
        return COUNT / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def consume_choreograph(url: str, topic: str, name: str) -> float:
    done = asyncio.Event()
    count = 0

    async def handler(event: Event) -> None:
        nonlocal count
        count += 1
        if count == COUNT:
            done.set()

    async with Bus(url) as bus:
        started = time.perf_counter()
        await bus.subscribe(topic, handler, group=name, prefetch=PREFETCH, from_beginning=True)
        await done.wait()
        return COUNT / (time.perf_counter() - started)


async def consume_faststream(url: str, topic: str, name: str) -> float:
    done = asyncio.Event()
    count = 0
    broker = KafkaBroker(_bootstrap(url), logger=None)

    @broker.subscriber(
        topic, group_id=name, auto_offset_reset="earliest", ack_policy=AckPolicy.ACK,
        **_consumer_options(url),
    )  # fmt: skip
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


async def _until_assigned(consumer: AIOKafkaConsumer) -> None:
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=100)


async def latency_raw(url: str) -> list[float]:
    topic = await _topic(url, "lat-raw")
    latencies = Latencies(LATENCY_COUNT)
    producer = AIOKafkaProducer(bootstrap_servers=_bootstrap(url), acks="all")
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=_bootstrap(url), group_id="raw", enable_auto_commit=False,
        auto_offset_reset="earliest", **_consumer_options(url),
    )  # fmt: skip
    await producer.start()
    await consumer.start()
    await _until_assigned(consumer)

    async def receive() -> None:
        since_commit = 0
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for record in records:
                    latencies.record(json.loads(record.value)["t"])
                since_commit += len(records)
            if since_commit >= 100:
                await consumer.commit()
                since_commit = 0

    receiver = asyncio.create_task(receive())
    try:
        return await paced(
            lambda now: producer.send_and_wait(
                topic, json.dumps({"t": now}).encode(), headers=_headers(0)
            ),
            latencies,
        )
    finally:
        receiver.cancel()
        await consumer.stop()
        await producer.stop()


async def latency_choreograph(url: str) -> list[float]:
    topic = await _topic(url, "lat-choreo")
    latencies = Latencies(LATENCY_COUNT)

    async def handler(event: Event) -> None:
        latencies.record(event.data["t"])

    async with Bus(url, source="bench") as bus:
        await bus.subscribe(topic, handler, group="bench", prefetch=PREFETCH)
        return await paced(lambda now: bus.publish(topic, type="t", data={"t": now}), latencies)


async def latency_faststream(url: str) -> list[float]:
    topic = await _topic(url, "lat-fs")
    latencies = Latencies(LATENCY_COUNT)
    broker = KafkaBroker(_bootstrap(url), acks="all", logger=None)
    ready = asyncio.Event()

    @broker.subscriber(  # its default ack policy: per-record commits saturate near 1,000/s
        topic, group_id="fs", auto_offset_reset="earliest", **_consumer_options(url)
    )
    async def handler(body: dict[str, float]) -> None:
        if "warm" in body:
            ready.set()
            return
        latencies.record(body["t"])

    await broker.start()
    try:
        while not ready.is_set():  # FastStream returns before its group has joined
            await broker.publish({"warm": 1}, topic)
            await asyncio.sleep(0.5)
        return await paced(lambda now: broker.publish({"t": now}, topic), latencies)
    finally:
        await broker.stop()


# -- the run -----------------------------------------------------------------------------------


async def run(url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def row(metric: str, raw: float, choreo: float, fast: float | None) -> None:
        rows.append(
            {
                "suite": "brokers",
                "backend": "kafka",
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

    await publish_raw(url)  # warm-up: connections, the broker's first topics
    published: dict[str, list[float]] = {"raw": [], "choreograph": [], "faststream": []}
    for _ in range(ROUNDS):  # interleaved rounds, best of each: the machine is shared
        published["raw"].append(await publish_raw(url))
        published["choreograph"].append(await publish_choreograph(url))
        published["faststream"].append(await publish_faststream(url))
    row("publish/s", *(max(published[k]) for k in ("raw", "choreograph", "faststream")))
    topic = await fill(url)
    consumed: dict[str, list[float]] = {"raw": [], "choreograph": [], "faststream": []}
    for n in range(ROUNDS):  # each round is a new group reading the whole topic
        consumed["raw"].append(await consume_raw(url, topic, f"raw{n}"))
        consumed["choreograph"].append(await consume_choreograph(url, topic, f"choreo{n}"))
        consumed["faststream"].append(await consume_faststream(url, topic, f"fs{n}"))
    row("consume/s", *(max(consumed[k]) for k in ("raw", "choreograph", "faststream")))
    raw, choreo, fast = (
        await latency_raw(url),
        await latency_choreograph(url),
        await latency_faststream(url),
    )
    row("e2e p50 ms", statistics.median(raw), statistics.median(choreo), statistics.median(fast))
    row("e2e p99 ms", percentile(raw, 0.99), percentile(choreo, 0.99), percentile(fast, 0.99))
    return rows


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)
    with running_kafka() as server:
        rows = asyncio.run(run(server.url if server else os.environ[ENV_URL]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
