"""Kafka side by side: raw aiokafka vs choreograph vs FastStream, in one run.

    .venv/bin/python -m bench.brokers.kafka [--rounds N] [--only publish_many,consume] [--output F]

Uses ``CHOREO_TEST_KAFKA_URL`` or spawns the same Tansu broker as the tests (low session timeouts
for every client). Durable semantics everywhere: acks=all producers; consumer groups that commit
only after the handler:

* publish/s: 20,000 x 256-byte events, 64 in flight (raw sends the same ce_* headers per event,
  as a CloudEvents producer would; every producer gets choreograph's 256 KiB record batches);
* publish_many/s: the same events 500 a call (raw: ``send`` 500 records, then await their
  futures; choreograph: ``publish_many``; FastStream: ``publish_batch``). Not the same work:
  FastStream's batch carries bare payloads, each record with a ``content-type`` header and
  one ``correlation_id`` shared by the whole list (about 340 bytes a record), where raw and
  choreograph write the CloudEvents binding, an id, time and trace per event (about 495
  bytes); FastStream fills one record batch per call (and refuses a list that does not fit),
  choreograph two of 250 events (the second encoded while the broker stores the first);
* publish_many/s vs raw best batch: the ceiling, against choreograph's ``publish_many`` of
  the same run: the records ``publish_many`` writes (encoded by choreograph before the
  clock starts: the broker stores our bytes), 500 a call, one call after the other, but built
  straight into record batches (``create_batch``, one per partition of a 4-partition topic,
  ``linger_ms=0``), all handed over with ``send_batch`` before the first ack is awaited;
  the row also holds ``ceiling_x_single``, the ceiling over our single publish of the run
  (whether ``publish_many`` at 3x single is reachable at all);
* consume/s: 20,000 stored events read by a new group from the beginning; raw is a batch
  consumer (``getmany`` of 500, a commit per 500), choreograph commits acked offsets in batches,
  FastStream commits each (AckPolicy.ACK); "batch handler" rows hand lists of up to 100 events
  to one handler call (choreograph ``subscribe_batch`` with its default ``max_batch``,
  FastStream ``batch=True``), against the same raw batch consumer;
* e2e p50/p99 ms: publish-to-handler latency at a paced 1,000 events/s. choreograph runs with
  its defaults (the test URL's ``commit_interval_ms=50`` left out: the default 100 ms is the
  raw consumer's cadence, a commit per 100 events); raw aiokafka and FastStream get
  ``fetch_max_wait_ms=10`` (their default of 500 ms waits the whole long-poll on Tansu, see
  shared/TEST-SERVERS.md);
* every measurement runs in ROUNDS interleaved rounds (rotating who goes first); rows hold the
  medians and the spread of choreograph/raw round by round.

Writes ``bench/results/kafka.json`` (rows for ``bench/run.py``) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faststream import AckPolicy
from faststream.kafka import KafkaBroker

from bench.brokers._harness import (
    CEILING_METRIC,
    Arrivals,
    Latencies,
    ceiling_row,
    consume_bus,
    interleaved,
    latency_rows,
    paced,
    publish_many_bus,
    row,
    spread,
    stamped,
)
from broker import Bus, Event
from broker.adapters.kafka.wire import encode_events
from devservers.kafka import ENV_URL, running_kafka

COUNT = 20_000
PREFETCH = 500
CALL = 500  # events per publish_many call
BATCH = 100  # events per batch handler call (choreograph's default max_batch)
RATE = 1_000
LATENCY_COUNT = 2_000
ROUNDS = 3
#: Raw aiokafka and FastStream consumers get the fetch wait Tansu needs (choreograph's default).
TUNED = {"fetch_max_wait_ms": 10}
#: Every producer gets choreograph's default record batch size (aiokafka's is 16 KiB).
BATCH_BYTES = 256 * 1024
PAYLOAD = "x" * 254  # a JSON string of 256 bytes
RESULTS = Path(__file__).resolve().parents[1] / "results" / "kafka.json"
CONSUMER_OPTIONS = ("session_timeout_ms", "heartbeat_interval_ms", "fetch_max_wait_ms")
#: Test tuning of the URL that the latency row leaves out, so choreograph runs with its
#: defaults there: commits every 50 ms (tests wait less for them) cost it 0.2 ms p50 and
#: 1.5 ms p99 against the default 100 ms (28 alternated rounds; docs/performance.md).
TEST_ONLY = ("commit_interval_ms",)


def _bootstrap(url: str) -> str:
    return urlsplit(url).netloc


def _defaults(url: str) -> str:
    """``url`` without the test-only options (:data:`TEST_ONLY`)."""
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query) if k not in TEST_ONLY]
    return parts._replace(query=urlencode(kept)).geturl()


def _consumer_options(url: str) -> dict[str, int]:
    query = dict(parse_qsl(urlsplit(url).query))
    return TUNED | {k: int(v) for k, v in query.items() if k in CONSUMER_OPTIONS}


async def _topic(url: str, kind: str, partitions: int = 4) -> str:
    """A fresh topic with 4 partitions (created the way choreograph creates it)."""
    topic = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
    async with Bus(url) as bus:
        await bus.create_topic(topic, partitions=partitions)
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
    producer = AIOKafkaProducer(
        bootstrap_servers=_bootstrap(url), acks="all", max_batch_size=BATCH_BYTES
    )
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
    broker = KafkaBroker(_bootstrap(url), acks="all", max_batch_size=BATCH_BYTES, logger=None)
    await broker.connect()
    try:
        return await spread(COUNT, lambda i: broker.publish(PAYLOAD, topic))
    finally:
        await broker.stop()


async def publish_many_raw(url: str) -> float:
    topic = await _topic(url, "many-raw")
    producer = AIOKafkaProducer(
        bootstrap_servers=_bootstrap(url), acks="all", max_batch_size=BATCH_BYTES
    )
    await producer.start()
    body = json.dumps(PAYLOAD).encode()
    try:
        started = time.perf_counter()
        for first in range(0, COUNT, CALL):
            futures = [
                await producer.send(topic, body, headers=_headers(i))
                for i in range(first, first + CALL)
            ]
            await asyncio.gather(*futures)
        return COUNT / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def publish_many_ceiling(url: str, partitions: int = 4, window: int = 1) -> float:
    """The most aiokafka gets stored: the records ``publish_many`` writes (choreograph's own
    encoding of ``stamped`` events: seven headers with an id, time and trace context, about
    495 bytes a record, where the raw rows write six shorter ones), CALL a call,
    built straight into record batches (``create_batch``: no per-record ``send``), one batch
    per partition of the topic, all handed over with ``send_batch`` before the first ack is
    awaited; ``window`` calls in flight."""
    topic = await _topic(url, "many-ceiling", partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=_bootstrap(url), acks="all", max_batch_size=BATCH_BYTES, linger_ms=0
    )
    await producer.start()
    errors: dict[int, Exception] = {}
    records = [record for record in encode_events(stamped(COUNT, PAYLOAD), errors) if record]
    if errors:
        raise RuntimeError(f"bench events that cannot be encoded: {errors}")

    share = -(-CALL // partitions)  # records a partition's batch holds

    async def call(first: int) -> None:
        futures = []
        for partition, start in enumerate(range(first, first + CALL, share)):
            batch = producer.create_batch()
            for i in range(start, min(start + share, first + CALL)):
                _, headers, body = records[i]
                if batch.append(key=None, value=body, timestamp=None, headers=headers) is None:
                    raise RuntimeError("a record batch of the ceiling run is full")
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)

    try:
        started = time.perf_counter()
        running: set[asyncio.Task[None]] = set()
        for first in range(0, COUNT, CALL):
            running.add(asyncio.create_task(call(first)))
            if len(running) >= window:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
        await asyncio.gather(*running)
        return COUNT / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def publish_many_choreograph(url: str) -> float:
    return await publish_many_bus(url, await _topic(url, "many-choreo"), COUNT, CALL, PAYLOAD)


async def publish_many_faststream(url: str) -> float:
    topic = await _topic(url, "many-fs")
    broker = KafkaBroker(_bootstrap(url), acks="all", max_batch_size=BATCH_BYTES, logger=None)
    await broker.connect()
    try:
        started = time.perf_counter()
        for _ in range(0, COUNT, CALL):
            await broker.publish_batch(*([PAYLOAD] * CALL), topic=topic)
        return COUNT / (time.perf_counter() - started)
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
    arrivals = Arrivals(COUNT)
    await consumer.start()
    try:
        since_commit = 0
        while not arrivals.done.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=PREFETCH)
            for records in batch.values():
                arrivals.add(len(records))
                since_commit += len(records)
            if since_commit >= 500:
                await consumer.commit()
                since_commit = 0
        await consumer.commit()
        return await arrivals.rate()
    finally:
        await consumer.stop()


async def consume_choreograph(url: str, topic: str, name: str) -> float:
    return await consume_bus(url, topic, name, COUNT, prefetch=PREFETCH)


async def consume_faststream(url: str, topic: str, name: str) -> float:
    arrivals = Arrivals(COUNT)
    broker = KafkaBroker(_bootstrap(url), logger=None)

    @broker.subscriber(
        topic, group_id=name, auto_offset_reset="earliest", ack_policy=AckPolicy.ACK,
        **_consumer_options(url),
    )  # fmt: skip
    async def handler(body: str) -> None:
        arrivals.add()

    await broker.start()
    try:
        return await arrivals.rate()
    finally:
        await broker.stop()


async def consume_batch_choreograph(url: str, topic: str, name: str) -> float:
    return await consume_bus(url, topic, name, COUNT, batch=BATCH)


async def consume_batch_faststream(url: str, topic: str, name: str) -> float:
    arrivals = Arrivals(COUNT)
    broker = KafkaBroker(_bootstrap(url), logger=None)

    @broker.subscriber(
        topic, group_id=name, auto_offset_reset="earliest", ack_policy=AckPolicy.ACK,
        batch=True, max_records=BATCH, **_consumer_options(url),
    )  # fmt: skip
    async def handler(bodies: list[str]) -> None:
        arrivals.add(len(bodies))

    await broker.start()
    try:
        return await arrivals.rate()
    finally:
        await broker.stop()


# -- latency -----------------------------------------------------------------------------------


async def _until_assigned(consumer: AIOKafkaConsumer) -> None:
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=100)


async def latency_raw(url: str) -> list[float]:
    topic = await _topic(url, "lat-raw")
    latencies = Latencies(LATENCY_COUNT)
    producer = AIOKafkaProducer(
        bootstrap_servers=_bootstrap(url), acks="all", max_batch_size=BATCH_BYTES
    )
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
    url = _defaults(url)
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
    broker = KafkaBroker(_bootstrap(url), acks="all", max_batch_size=BATCH_BYTES, logger=None)
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


#: The rows a run can be limited to (``--only``), by name.
METRICS = ("publish", "publish_many", "ceiling", "consume", "consume_batch", "latency")


async def run(
    url: str, rounds: int = ROUNDS, only: tuple[str, ...] = METRICS
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    await publish_raw(url)  # warm-up: connections, the broker's first topics
    for name, metric, runs in (
        ("publish", "publish/s", (publish_raw, publish_choreograph, publish_faststream)),
        (
            "publish_many",
            "publish_many/s (500 a call)",
            (publish_many_raw, publish_many_choreograph, publish_many_faststream),
        ),
        ("ceiling", CEILING_METRIC, (publish_many_ceiling, publish_many_choreograph)),
    ):
        if name in only:
            results = await interleaved(
                {who: functools.partial(fn, url) for who, fn in zip(NAMES, runs, strict=False)},
                rounds,
            )
            rows.append(row("kafka", metric, results))
    ceiling_row(rows)
    consuming = [
        (metric, runs)
        for name, metric, runs in (
            ("consume", "consume/s", (consume_raw, consume_choreograph, consume_faststream)),
            (
                "consume_batch",
                "consume/s, batch handler",
                (consume_raw, consume_batch_choreograph, consume_batch_faststream),
            ),
        )
        if name in only
    ]
    topic = await fill(url) if consuming else ""
    groups = itertools.count()
    for metric, runs in consuming:  # each run is a new group reading the whole topic
        results = await interleaved(
            {
                who: (lambda fn=fn: fn(url, topic, f"g{next(groups)}"))
                for who, fn in zip(NAMES, runs, strict=True)
            },
            rounds,
        )
        rows.append(row("kafka", metric, results))
    if "latency" in only:
        latency = (latency_raw, latency_choreograph, latency_faststream)
        rows += await latency_rows(
            "kafka",
            {who: functools.partial(fn, url) for who, fn in zip(NAMES, latency, strict=True)},
            rounds,
        )
    return rows


NAMES = ("raw", "choreograph", "faststream")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Kafka side by side (see the docstring).")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="Interleaved rounds.")
    parser.add_argument(
        "--only",
        default=",".join(METRICS),
        help=f"Comma-separated rows to run, of {', '.join(METRICS)} (default: all).",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="Where the rows go (JSON).")
    args = parser.parse_args(argv)
    only = tuple(name for name in args.only.split(",") if name)
    unknown = sorted(set(only) - set(METRICS))
    if unknown:
        parser.error(f"unknown rows {', '.join(unknown)}; use some of {', '.join(METRICS)}")
    logging.basicConfig(level=logging.CRITICAL)
    with running_kafka() as server:
        url = server.url if server else os.environ[ENV_URL]
        rows = asyncio.run(run(url, args.rounds, only))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
