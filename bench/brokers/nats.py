"""NATS JetStream side by side: raw nats-py vs choreograph vs FastStream, in one run.

    .venv/bin/python -m bench.brokers.nats

Uses ``CHOREO_TEST_NATS_URL`` or spawns the same nats-server as the tests (the venv's 2.15,
file storage in a temporary directory). Durable semantics everywhere: a file-backed stream per
topic, every publish waits for its PubAck, every delivery is acked after the handler:

* publish/s: 20,000 x 256-byte events, 64 in flight (raw sends the same ce-* headers and a
  Nats-Msg-Id per event, as a CloudEvents producer would);
* consume/s: 20,000 stored events through a durable pull consumer, 100 in flight;
* each throughput is the best of three interleaved rounds (the machine is shared);
* e2e p50/p99 ms: publish-to-handler latency at a paced 1,000 events/s (raw uses a push
  consumer, its lowest-latency way to receive); two interleaved runs, the calmer one counts.

Writes ``bench/results/nats.json`` (rows for ``bench/run.py``) and prints a table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import nats
from faststream.nats import DeliverPolicy, JStream, NatsBroker, PullSub
from nats.js import api

from bench.brokers._harness import Latencies, paced, percentile, spread
from broker import Bus, Event
from broker.adapters.nats import safe_name
from devservers.nats import ENV_URL, running_nats

COUNT = 20_000
PREFETCH = 100
RATE = 1_000
LATENCY_COUNT = 3_000
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
    try:
        started = time.perf_counter()
        sub = await js.pull_subscribe(topic, durable=name, stream=safe_name(topic), config=config)
        count = 0
        while count < COUNT:
            for msg in await sub.fetch(PREFETCH, timeout=5):
                await msg.ack()
                count += 1
        return COUNT / (time.perf_counter() - started)
    finally:
        await nc.close()


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
    broker = NatsBroker(url, logger=None)

    @broker.subscriber(
        topic,
        stream=JStream(safe_name(topic), declare=False),
        durable=name,
        pull_sub=PullSub(batch_size=PREFETCH),
        deliver_policy=DeliverPolicy.ALL,
    )
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

    def row(metric: str, raw: float, choreo: float, fast: float | None) -> None:
        rows.append(
            {
                "suite": "brokers",
                "backend": "nats",
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

    await publish_raw(url)  # warm-up: connections, the server's store
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
    runs: dict[str, list[list[float]]] = {"raw": [], "choreograph": [], "faststream": []}
    for _ in range(2):  # interleaved; each client's calmer run (lower median) is reported
        runs["raw"].append(await latency_raw(url))
        runs["choreograph"].append(await latency_choreograph(url))
        runs["faststream"].append(await latency_faststream(url))
    raw, choreo, fast = (min(runs[k], key=statistics.median) for k in runs)
    row("e2e p50 ms", statistics.median(raw), statistics.median(choreo), statistics.median(fast))
    row("e2e p99 ms", percentile(raw, 0.99), percentile(choreo, 0.99), percentile(fast, 0.99))
    return rows


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
