"""Where a Kafka ``publish_many`` call's time goes, against FastStream's ``publish_batch``.

    .venv/bin/python -m bench.brokers.kafka_batch_cost

A diagnostic, not a suite (it writes no results): on one Tansu (or ``CHOREO_TEST_KAFKA_URL``),
500 events of 256 bytes a call as in the kafka suite, it prints per event

* ``client_us``: the publishing process's CPU (``time.process_time``), with the cyclic garbage
  collector on (as in the suite) and off: the difference is the collector's share;
* ``broker_us``: Tansu's CPU (utime + stime from ``/proc/<pid>/stat``; 10 ms ticks, so only
  rounded; absent for an external broker);
* ``survivors``: tracked objects a call leaves for the collector to walk while it runs;

then the same aiokafka path (one record batch appended and sent, its ack awaited) with the
records each side writes: the CloudEvents binding's (7 headers, ~495 bytes) against
FastStream's (a content type and a correlation id, ~348 bytes), to separate the wire shape
from the rest. Medians of ROUNDS alternated rounds of CALLS calls.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition
from faststream.kafka import KafkaBroker

from bench.brokers.kafka import BATCH_BYTES, PAYLOAD, _bootstrap, _topic
from broker import Bus
from broker.adapters.kafka.wire import encode_events
from devservers.kafka import ENV_URL, running_kafka

CALL = 500
CALLS = 100
ROUNDS = 5
Record = tuple[bytes | None, list[tuple[str, bytes]], bytes]


def _broker_cpu(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _costs(call: Callable[[], Awaitable[Any]], pid: int | None) -> dict[str, float]:
    """Per event: client CPU with the collector on and off, broker CPU, survivors."""
    await call()
    figures: dict[str, list[float]] = {"client_us": [], "client_us_gc_off": [], "broker_us": []}
    events = CALLS * CALL
    for _ in range(ROUNDS):
        for collect in (True, False):
            (gc.enable if collect else gc.disable)()
            cpu, broker = time.process_time(), _broker_cpu(pid)
            for _ in range(CALLS):
                await call()
            key = "client_us" if collect else "client_us_gc_off"
            figures[key].append((time.process_time() - cpu) / events * 1e6)
            if collect:
                figures["broker_us"].append((_broker_cpu(pid) - broker) / events * 1e6)
    gc.collect()
    gc.disable()  # survivors: tracked objects allocated and not freed by the end of a call
    before = gc.get_count()[0]
    result = await call()
    survivors = (gc.get_count()[0] - before) / CALL
    del result
    gc.enable()
    medians = {key: round(statistics.median(values), 2) for key, values in figures.items()}
    return medians | {"survivors": round(survivors, 1)}


async def ours(url: str, pid: int | None) -> dict[str, float]:
    topic = await _topic(url, "cost-ours")
    items = [{"type": "bench", "data": PAYLOAD}] * CALL
    async with Bus(url, source="bench") as bus:
        return await _costs(lambda: bus.publish_many(topic, items), pid)


async def faststream(url: str, pid: int | None) -> dict[str, float]:
    topic = await _topic(url, "cost-fs")
    broker = KafkaBroker(_bootstrap(url), acks="all", max_batch_size=BATCH_BYTES, logger=None)
    await broker.connect()
    bodies = [PAYLOAD] * CALL
    try:
        return await _costs(lambda: broker.publish_batch(*bodies, topic=topic), pid)
    finally:
        await broker.stop()


async def _shapes(url: str) -> dict[str, list[Record]]:
    async with Bus(url, source="bench") as bus:  # a list stamped as publish_many stamps it
        events = (
            await bus.publish_many("cost-shape-stamp", [{"type": "bench", "data": PAYLOAD}] * CALL)
        ).published
    cloudevents = [record for record in encode_events(events, {}) if record is not None]
    body = json.dumps(PAYLOAD).encode()
    headers = [
        ("content-type", b"application/json"),
        ("correlation_id", str(uuid.uuid4()).encode()),
    ]
    return {"cloudevents": cloudevents, "faststream": [(None, headers, body)] * CALL}


async def shapes(url: str, pid: int | None) -> dict[str, dict[str, float]]:
    """The same aiokafka path (a record batch built, sent, acked) with each side's records."""
    topic = await _topic(url, "cost-shape")
    records = await _shapes(url)
    producer = AIOKafkaProducer(
        bootstrap_servers=_bootstrap(url), acks="all", max_batch_size=BATCH_BYTES
    )
    await producer.start()
    partitions = [TopicPartition(topic, p) for p in range(4)]
    accumulator = producer._message_accumulator

    def call_with(shape: list[Record]) -> Callable[[], Awaitable[Any]]:
        turn = iter(range(1 << 62))

        async def call() -> Any:
            batch = producer.create_batch()
            for key, headers, value in shape:
                batch.append(key=key, value=value, timestamp=None, headers=headers)
            partition = partitions[next(turn) % len(partitions)]
            size = batch.size()
            await (await accumulator.add_batch(batch, partition, 30.0))
            return size

        return call

    try:
        await producer.send_and_wait(topic, b"warm-up")
        found = {}
        for name, shape in records.items():
            costs = await _costs(call_with(shape), pid)
            found[name] = costs | {"bytes": round(await call_with(shape)() / CALL, 1)}
        return found
    finally:
        await producer.stop()


async def run(url: str, pid: int | None) -> None:
    print("publish_many (choreograph)", await ours(url, pid))
    print("publish_batch (FastStream)", await faststream(url, pid))
    for name, figures in (await shapes(url, pid)).items():
        print(f"aiokafka batch of {name} records", figures)


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)
    with running_kafka() as server:
        url = server.url if server else os.environ[ENV_URL]
        pid = server.process.pid if server and server.process else None
        asyncio.run(run(url, pid))


if __name__ == "__main__":
    main()
