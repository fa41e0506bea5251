"""NATS JetStream side by side: raw nats-py vs choreograph vs FastStream, in one run.

    .venv/bin/python -m bench.brokers.nats

Uses ``CHOREO_TEST_NATS_URL`` or spawns the same nats-server as the tests (the venv's 2.15,
file storage in a temporary directory). Durable semantics everywhere: a file-backed stream per
topic, every publish waits for its PubAck, every delivery is acked after the handler:

* publish/s: 20,000 x 256-byte events, 64 in flight (raw sends the same ce-* headers and a
  Nats-Msg-Id per event, as a CloudEvents producer would);
* publish_many/s: the same events 500 a call (raw: 500 ``js.publish`` gathered; choreograph:
  ``publish_many``; FastStream has no JetStream batch publish);
* consume/s: 20,000 stored events through a durable pull consumer, 100 in flight, rates from
  the first event handled to the last; "batch handler" rows hand lists of up to 100 events to
  one handler call (choreograph ``subscribe_batch``, FastStream ``PullSub(batch=True)``);
* e2e p50/p99 ms: publish-to-handler latency at a paced 1,000 events/s (raw uses a push
  consumer, its lowest-latency way to receive);
* every measurement runs in ROUNDS interleaved rounds (rotating who goes first); rows hold the
  medians and the spread of choreograph/raw round by round.

Writes ``bench/results/nats.json`` (rows for ``bench/run.py``) and prints a table.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import nats
from faststream.nats import DeliverPolicy, JStream, NatsBroker, PullSub
from nats.js import api

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
from broker.adapters.nats import safe_name
from devservers.nats import ENV_URL, running_nats

COUNT = 20_000
PREFETCH = 100
CALL = 500  # events per publish_many call
BATCH = 100  # events per batch handler call (choreograph's default max_batch)
RATE = 1_000
LATENCY_COUNT = 2_000
ROUNDS = 3
PAYLOAD = "x" * 254  # a JSON string of 256 bytes
RESULTS = Path(__file__).resolve().parents[1] / "results" / "nats.json"


async def _topic(url: str, kind: str) -> str:
    """A fresh topic whose stream exists (created the way choreograph creates it)."""
    topic = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
    async with Bus(url) as bus:
        await bus.create_topic(topic)
    return topic


def _headers(i: int) -> dict[str, str]:
    event_id = f"raw-{i}"
    return {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": "bench",
        "ce-type": "bench",
        "content-type": "application/json",
        "Nats-Msg-Id": event_id,
    }


# -- publish -----------------------------------------------------------------------------------


async def publish_raw(url: str) -> float:
    topic = await _topic(url, "pub-raw")
    nc = await nats.connect(url)
    js = nc.jetstream()
    body = json.dumps(PAYLOAD).encode()
    try:
        return await spread(COUNT, lambda i: js.publish(topic, body, headers=_headers(i)))
    finally:
        await nc.close()


async def publish_choreograph(url: str) -> float:
    topic = await _topic(url, "pub-choreo")
    async with Bus(url, source="bench") as bus:
        return await spread(COUNT, lambda i: bus.publish(topic, type="bench", data=PAYLOAD))


async def publish_faststream(url: str) -> float:
    topic = await _topic(url, "pub-fs")
    broker = NatsBroker(url, logger=None)
    await broker.connect()
    try:
        stream = safe_name(topic)
        return await spread(COUNT, lambda i: broker.publish(PAYLOAD, topic, stream=stream))
    finally:
        await broker.stop()


async def publish_many_raw(url: str) -> float:
    """What a raw client does for a list: every ``js.publish`` at once, then the PubAcks."""
    topic = await _topic(url, "many-raw")
    nc = await nats.connect(url)
    js = nc.jetstream()
    body = json.dumps(PAYLOAD).encode()
    try:
        started = time.perf_counter()
        for first in range(0, COUNT, CALL):
            await asyncio.gather(
                *(js.publish(topic, body, headers=_headers(i)) for i in range(first, first + CALL))
            )
        return COUNT / (time.perf_counter() - started)
    finally:
        await nc.close()


async def publish_many_choreograph(url: str) -> float:
    return await publish_many_bus(url, await _topic(url, "many-choreo"), COUNT, CALL, PAYLOAD)


# -- consume -----------------------------------------------------------------------------------


async def fill(url: str) -> str:
    """A topic holding COUNT events, read by three consumers from the beginning."""
    topic = await _topic(url, "sub")
    async with Bus(url, source="bench") as bus:
        await spread(COUNT, lambda i: bus.publish(topic, type="bench", data=PAYLOAD))
    return topic


async def consume_raw(url: str, topic: str, name: str) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.ALL, max_ack_pending=4 * PREFETCH, ack_wait=30
    )
    arrivals = Arrivals(COUNT)
    try:
        sub = await js.pull_subscribe(topic, durable=name, stream=safe_name(topic), config=config)
        while not arrivals.done.is_set():
            for msg in await sub.fetch(PREFETCH, timeout=5):
                await msg.ack()
                arrivals.add()
        return await arrivals.rate()
    finally:
        await nc.close()


async def consume_choreograph(url: str, topic: str, name: str) -> float:
    return await consume_bus(url, topic, name, COUNT, prefetch=PREFETCH)


async def consume_batch_choreograph(url: str, topic: str, name: str) -> float:
    return await consume_bus(url, topic, name, COUNT, batch=BATCH)


async def _faststream_consumer(url: str, topic: str, name: str, batch: bool) -> float:
    arrivals = Arrivals(COUNT)
    broker = NatsBroker(url, logger=None)

    @broker.subscriber(
        topic,
        stream=JStream(safe_name(topic), declare=False),
        durable=name,
        pull_sub=PullSub(batch_size=BATCH if batch else PREFETCH, batch=batch),
        deliver_policy=DeliverPolicy.ALL,
    )
    async def handler(body: Any) -> None:
        arrivals.add(len(body) if batch else 1)

    await broker.start()
    try:
        return await arrivals.rate()
    finally:
        await broker.stop()


async def consume_faststream(url: str, topic: str, name: str) -> float:
    return await _faststream_consumer(url, topic, name, batch=False)


async def consume_batch_faststream(url: str, topic: str, name: str) -> float:
    return await _faststream_consumer(url, topic, name, batch=True)


# -- latency -----------------------------------------------------------------------------------


async def latency_raw(url: str) -> list[float]:
    topic = await _topic(url, "lat-raw")
    latencies = Latencies(LATENCY_COUNT)
    nc = await nats.connect(url)
    js = nc.jetstream()

    async def on_message(msg: Any) -> None:
        latencies.record(json.loads(msg.data)["t"])
        await msg.ack()

    config = api.ConsumerConfig(max_ack_pending=PREFETCH)
    try:
        await js.subscribe(
            topic, durable="raw", stream=safe_name(topic), cb=on_message, manual_ack=True,
            config=config,
        )  # fmt: skip
        return await paced(
            lambda now: js.publish(topic, json.dumps({"t": now}).encode(), headers=_headers(0)
                                   | {"Nats-Msg-Id": uuid.uuid4().hex}),
            latencies,
        )  # fmt: skip
    finally:
        await nc.close()


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
    broker = NatsBroker(url, logger=None)
    stream = safe_name(topic)

    with warnings.catch_warnings():  # "a durable push consumer does not scale": one member
        warnings.simplefilter("ignore", RuntimeWarning)

        @broker.subscriber(topic, stream=JStream(stream, declare=False), durable="fs")
        async def handler(body: dict[str, float]) -> None:
            latencies.record(body["t"])

    await broker.start()
    try:
        return await paced(lambda now: broker.publish({"t": now}, topic, stream=stream), latencies)
    finally:
        await broker.stop()


# -- the run -----------------------------------------------------------------------------------


async def run(url: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    await publish_raw(url)  # warm-up: connections, the server's store
    publishes: dict[str, dict[str, Contender]] = {
        "publish/s": {
            "raw": functools.partial(publish_raw, url),
            "choreograph": functools.partial(publish_choreograph, url),
            "faststream": functools.partial(publish_faststream, url),
        },
        "publish_many/s (500 a call)": {
            "raw": functools.partial(publish_many_raw, url),
            "choreograph": functools.partial(publish_many_choreograph, url),
        },
    }
    for metric, contenders in publishes.items():
        rows.append(row("nats", metric, await interleaved(contenders, ROUNDS)))
    topic = await fill(url)
    groups = itertools.count()
    for metric, runs in {
        "consume/s": (consume_raw, consume_choreograph, consume_faststream),
        "consume/s, batch handler": (
            consume_raw,
            consume_batch_choreograph,
            consume_batch_faststream,
        ),
    }.items():  # each run is a new durable consumer reading the whole stream
        contenders = {
            name: (lambda fn=fn: fn(url, topic, f"g{next(groups)}"))
            for name, fn in zip(NAMES, runs, strict=True)
        }
        rows.append(row("nats", metric, await interleaved(contenders, ROUNDS)))
    runs = dict(zip(NAMES, (latency_raw, latency_choreograph, latency_faststream), strict=True))
    rows += await latency_rows(
        "nats", {name: functools.partial(run, url) for name, run in runs.items()}, ROUNDS
    )
    return rows


NAMES = ("raw", "choreograph", "faststream")


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    with running_nats() as server:
        url = server.address if server else os.environ[ENV_URL]
        rows = asyncio.run(run(url.split("?", 1)[0]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
