"""NATS JetStream side by side: raw nats-py vs choreograph vs FastStream, in one run.

    .venv/bin/python -m bench.brokers.nats

Uses ``CHOREO_TEST_NATS_URL`` or spawns the same nats-server as the tests (the venv's 2.15,
file storage in a temporary directory). Durable semantics everywhere: a file-backed stream per
topic, every publish waits for its PubAck, every delivery is acked after the handler:

* publish/s: 20,000 x 256-byte events, 64 in flight (raw sends the same ce-* headers and a
  Nats-Msg-Id per event, as a CloudEvents producer would);
* publish_many/s: the same events 500 a call (raw: 500 ``js.publish`` gathered; choreograph:
  ``publish_many``; FastStream has no JetStream batch publish);
* publish_many/s vs raw best batch: the ceiling, against choreograph's ``publish_many`` of
  the same run: the messages ``publish_many`` writes (choreograph's own header blocks, with
  an id, time and trace context per event: what the server stores costs it more than the
  raw rows' shorter headers), 500 a list, one list after the other, encoded
  before the clock starts and written straight to a socket as fast-ingest batches (ADR-50,
  nats-server 2.14+; a PubAck per event on older servers), so what is left is the server's
  work. nats-py's own ``publish`` costs 6-7 us of client CPU per event with these headers,
  more than choreograph's whole list path; the row also holds ``ceiling_x_single``, the
  ceiling over our single publish of the run (whether 3x single is reachable at all);
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
    CEILING_METRIC,
    Arrivals,
    Contender,
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
from broker.adapters.nats import safe_name
from broker.adapters.nats.wire import encode_block
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


def _batches(topic: str, prefix: str, fast: bool) -> list[tuple[bytes, bytes]]:
    """COUNT events, CALL a list, every ``HPUB`` command written before the clock starts:
    choreograph's own messages (``stamped`` events, header blocks as ``publish_many``
    writes them), so the server stores the bytes our list sends.

    ``fast``: JetStream fast-ingest batches (ADR-50, nats-server 2.14+): a list's first
    message goes alone (the server answers it with the flow acknowledgement), the other
    CALL - 1 as one write, the last of them committing (its PubAck counts what the batch
    stored). Else (an older server): the whole list as one write, a PubAck per message."""
    messages = [encode_block(event) for event in stamped(COUNT, PAYLOAD)]
    lists = []
    for first in range(0, COUNT, CALL):
        commands = []
        for sequence in range(1, CALL + 1):
            i = first + sequence - 1
            encoded = messages[i]
            if encoded is None:
                raise RuntimeError("a bench event needs nats-py's header cleaning")
            head, body = encoded
            operation = 0 if sequence == 1 else 2 if sequence == CALL else 1
            reply = f"{prefix}{first}.{CALL}.fail.{sequence}.{operation}.$FI" if fast else (
                f"{prefix}{i}")  # fmt: skip
            line = f"HPUB {topic} {reply} {len(head)} {len(head) + len(body)}\r\n"
            commands.append(line.encode() + head + body + b"\r\n")
        split = 1 if fast else 0
        lists.append((b"".join(commands[:split]), b"".join(commands[split:])))
    return lists


async def _answer(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The next message the server sends our inbox, as JSON (a status without one: {})."""
    while True:
        line = await reader.readuntil(b"\r\n")
        if line.startswith((b"MSG ", b"HMSG ")):
            payload = (await reader.readexactly(int(line.split()[-1]) + 2))[:-2]
            data = payload[payload.find(b"\r\n\r\n") + 4 :] if line[0:1] == b"H" else payload
            return json.loads(data) if data else {}
        if line.startswith(b"-ERR"):
            raise RuntimeError(f"nats-server: {line.decode().strip()}")


async def _stored(reader: asyncio.StreamReader, fast: bool) -> None:
    """Read what the server answers a list of CALL; raise unless it stored every event."""
    if not fast:
        for _ in range(CALL):
            answer = await _answer(reader)
            if "error" in answer or "seq" not in answer:
                raise RuntimeError(f"nats-server did not store an event: {answer}")
        return
    commit = await _answer(reader)
    if commit.get("count") != CALL:
        raise RuntimeError(f"a fast-ingest batch was not stored whole: {commit}")


async def publish_many_ceiling(url: str) -> float:
    """The most a client gets JetStream to store: choreograph's ``publish_many`` messages
    (ids, time and trace context: about 560 bytes a message, against 390 for the raw rows'
    headers), CALL a list, one list after the other, each awaited, but encoded
    before the clock starts and written straight to a socket (no client library in the
    way) as fast-ingest batches where the server has them. What is left is the server's work
    and the loop's reads and writes."""
    topic = await _topic(url, "many-ceiling")
    host, _, port = url.split("://", 1)[-1].split("?", 1)[0].rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    prefix = f"_INBOX.{uuid.uuid4().hex}."
    try:
        info = json.loads((await reader.readuntil(b"\r\n"))[5:])
        fast = tuple(int(x) for x in info["version"].split(".")[:2]) >= (2, 14)
        lists = _batches(topic, prefix, fast)
        connect = json.dumps({"verbose": False, "headers": True, "protocol": 1}).encode()
        writer.write(b"CONNECT %b\r\nSUB %b> 1\r\nPING\r\n" % (connect, prefix.encode()))
        while await reader.readuntil(b"\r\n") != b"PONG\r\n":
            pass
        started = time.perf_counter()
        for first, rest in lists:
            if fast:
                writer.write(first)
                flow = await _answer(reader)
                if flow.get("type") != "ack":
                    raise RuntimeError(f"nats-server refused a fast-ingest batch: {flow}")
            writer.write(rest)
            await _stored(reader, fast)
        return COUNT / (time.perf_counter() - started)
    finally:
        writer.close()
        await writer.wait_closed()


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
        CEILING_METRIC: {
            "raw": functools.partial(publish_many_ceiling, url),
            "choreograph": functools.partial(publish_many_choreograph, url),
        },
    }
    for metric, contenders in publishes.items():
        rows.append(row("nats", metric, await interleaved(contenders, ROUNDS)))
    ceiling_row(rows)
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
