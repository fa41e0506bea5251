"""Saga monitor benchmarks: what an operator gets from the monitor, end to end.

* **catch-up ratio**, per broker (embedded SQLite, NATS, RabbitMQ, Kafka), one run: the same
  backlog (``--sagas`` sagas x 5 events over 4 topics) read by three new groups, one after the
  other, and the monitor's rate set against each of the two baselines (two rows):

  - the public consume API: ``Bus.subscribe`` with a handler that does nothing (what
    ``choreo subscribe`` does, minus its printing: the stricter baseline);
  - the ``choreo subscribe --from-beginning --output json`` command itself (the issue's
    literal baseline), a process of its own printing each event as a JSON line (the faster of
    its two outputs) to a pipe this process drains, stamping each read by the lines it held;
    stopped once it printed the whole backlog;
  - a new :class:`~saga_monitor.SagaMonitor` with ``from_beginning`` (what
    ``choreo saga monitor --from-beginning`` runs), through the bus into the default SQLite saga
    store, until every event is applied and committed.

  The rates are taken over the same events: from the moment the reader had handled as many as
  the monitor's first batch held to the end of the last (starting the command, joining a
  group, the first fetch and the first batch's decoding do not count, for any of them), stamped
  after each handler call (the monitor's batches through a subclass that times ``apply_many``,
  what its batch handler calls) or pipe read. RabbitMQ cannot replay, so there the groups'
  queues are created before the backlog is published instead (and the command runs without
  ``--from-beginning``);
* **in memory, including decode**: encoded CloudEvents (structured JSON) decoded with
  ``Event.from_json`` and applied through ``SagaMonitor.apply_many`` in batches of the monitor's
  size (what its batch handler does) with the memory store;
* **bytes per active instance** (5-event timelines, running), tracemalloc, through the same path;
* **steady state**: a publisher process of its own sends 5,000 events/s for 12 s (sagas of 5
  events over 4 topics, ``publish_many`` per topic every 10 ms) to the embedded SQLite broker
  while the monitor runs with the SQLite store; the latency of the k-th event from the wall time
  its publish call started to the end of the monitor's batch (its commit included) that brought
  its applied count to k
  (events matched in order), p50 and p99; the first second is warm-up and left out. Three
  runs, medians reported with the spread of the p99s, and the rate the publisher reached.

    python -m bench.saga [--sagas N] [--brokers sqlite,nats,rabbitmq,kafka]
    # writes bench/results/saga.json; `python -m bench.run saga` also updates README.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.brokers._harness import percentile
from broker import Bus, Event
from saga_monitor import Definitions, MemoryStore, SagaDefinition, SagaMonitor, Step
from saga_monitor.correlator import Received
from saga_monitor.machine import Outcome
from saga_monitor.monitor import BATCH_SIZE
from saga_monitor.store_sql import SqlSagaStore

RESULTS = Path(__file__).parent / "results"
#: The checkout the ``choreo`` command is run from (the same code as this process's).
ROOT = Path(__file__).resolve().parent.parent
#: Five events of a saga over four topics, in the order they happen.
FLOW = (
    ("order.placed", "orders"),
    ("payment.authorized", "payments"),
    ("inventory.reserved", "inventory"),
    ("parcel.packed", "shipping"),
    ("order.shipped", "shipping"),
)
TOPICS = ("orders", "payments", "inventory", "shipping")
STEADY_RATE = 5_000
STEADY_SECONDS = 12
WARM_UP = 1.0


def definitions(prefix: str = "") -> Definitions:
    """The benchmark saga over ``prefix``-named topics (fresh topics per run)."""
    saga = SagaDefinition(
        name="bench",
        start=("order.placed",),
        steps=(
            Step("payment.authorized", within=30.0, compensation="payment.refunded"),
            Step("inventory.reserved", within=30.0, compensation="inventory.released"),
            Step("parcel.packed", within=3600.0),
            Step("order.shipped", within=7200.0),
        ),
        complete=("order.shipped",),
        fail=("payment.failed",),
        deadline=86400.0,
    )
    return Definitions((saga,), tuple(prefix + topic for topic in TOPICS))


def saga_events(sagas: int, run: str, *, steps: int = 5) -> Iterator[tuple[str, Event]]:
    """(topic, event) for ``sagas`` sagas, ``steps`` events each, saga after saga, a
    millisecond apart and all in the past (no clock looks skewed)."""
    base = datetime.now(UTC) - timedelta(milliseconds=sagas + steps + 1000)
    for n in range(sagas):
        for k, (kind, topic) in enumerate(FLOW[:steps]):
            yield (
                topic,
                Event(
                    type=kind,
                    source="bench",
                    id=f"{run}-{n}-{k}",
                    time=base + timedelta(milliseconds=n + k),
                    data={"orderId": n, "total": 42.5},
                    extensions={"correlationid": f"order-{run}-{n}"},
                ),
            )


# -- timing the handling ------------------------------------------------------------------------


class Span:
    """When handling started (before the first event) and when the last one was done, stamped
    by the handlers themselves: a consumer draining a buffer may not yield to a watcher."""

    def __init__(self) -> None:
        self.first = 0.0
        self.last = 0.0
        self.count = 0
        #: (wall time, events handled so far, perf_counter) after each call.
        self.marks: list[tuple[float, int, float]] = []

    def begin(self) -> None:
        if not self.first:
            self.first = time.perf_counter()

    def end(self, events: int) -> None:
        self.count += events
        self.last = time.perf_counter()
        self.marks.append((time.time(), self.count, self.last))

    async def done(self, total: int, timeout: float = 600) -> Span:
        """This span, once ``total`` events were handled."""
        await _until(lambda: self.count >= total, timeout)
        return self

    def rate(self) -> float:
        """Events per second from the start of the first to the end of the last."""
        return self.count / max(self.last - self.first, 1e-9)

    def rate_after(self, skip: int) -> float:
        """Events per second from the end of the call that brought the count to ``skip`` (or
        beyond) to the end of the last: the same events for two readers, their warm-up left
        out."""
        for _, count, at in self.marks:
            if count >= skip:
                if count >= self.count:
                    break
                return (self.count - count) / max(self.last - at, 1e-9)
        raise ValueError(f"all {self.count} events were handled by then: give a larger backlog")


class TimedMonitor(SagaMonitor):
    """The monitor, its batches stamped (what its batch handler calls, unchanged)."""

    span: Span

    async def apply_many(self, items: list[Received]) -> list[Outcome]:
        self.span.begin()
        outcomes = await super().apply_many(items)
        self.span.end(len(items))
        return outcomes


# -- catch-up: the same backlog, two readers ----------------------------------------------------


async def fill(url: str, prefix: str, sagas: int) -> int:
    """Publish the backlog (``publish_many``, 500 a call per topic); returns the event count."""
    by_topic: dict[str, list[Event]] = {}
    for topic, event in saga_events(sagas, prefix):
        by_topic.setdefault(prefix + topic, []).append(event)
    async with Bus(url, source="bench") as bus:
        for topic, events in by_topic.items():
            for i in range(0, len(events), 500):
                (await bus.publish_many(topic, events[i : i + 500])).raise_for_failures()
    return sum(len(events) for events in by_topic.values())


async def subscribe_span(url: str, prefix: str, total: int, group: str) -> Span:
    """What ``choreo subscribe --from-beginning`` reads, through ``Bus.subscribe``."""
    span = Span()

    async def handle(event: Event) -> None:
        span.begin()
        span.end(1)

    async with Bus(url, source="bench") as bus:
        topics = [prefix + topic for topic in TOPICS]
        replay = bus.capabilities.replay
        await bus.subscribe(topics, handle, group=group, from_beginning=replay)
        return await span.done(total)


async def command_span(url: str, prefix: str, total: int, group: str) -> Span:
    """What ``choreo subscribe --from-beginning --output json`` prints (each event a line, to a
    pipe read here), as a process of its own run from this checkout; its span is stamped at
    each read of the pipe, by the lines it brought. The command stops itself after ``--count``
    events (it is ended here once all were read, if it lingers). JSON lines, what a script
    reads, are the faster of its two outputs (the table's Rich lines cost about 3x as much)."""
    async with Bus(url, source="bench") as bus:  # RabbitMQ: its queue was made beforehand
        replay = bus.capabilities.replay
    argv = [sys.executable, "-m", "choreo", "subscribe", *(prefix + topic for topic in TOPICS)]
    argv += ["--group", group, "--broker", url, "--count", str(total), "--output", "json"]
    argv += ["--from-beginning"] if replay else []
    with tempfile.TemporaryDirectory() as cwd:  # no choreo.toml of the caller's is read
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *_pythonpath()])},
        )
        errors = asyncio.ensure_future(_read_all(process.stderr))
        try:
            span = await _lines_read(process.stdout, total)
        finally:
            if process.returncode is None:
                process.terminate()
            await process.wait()
            complaint = (await errors).decode(errors="replace").strip()
    if span.count < total:
        raise RuntimeError(
            f"choreo subscribe printed {span.count} of {total} events (exit "
            f"{process.returncode}): {complaint[-2000:]}"
        )
    return span


def _pythonpath() -> list[str]:
    return [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]


async def _lines_read(stream: asyncio.StreamReader | None, total: int) -> Span:
    """The span of reading ``total`` lines from ``stream`` (each read stamped by its lines)."""
    assert stream is not None
    span = Span()
    while span.count < total:
        chunk = await stream.read(1 << 16)
        if not chunk:
            break
        lines = chunk.count(b"\n")
        if lines:
            span.begin()
            span.end(lines)
    return span


async def _read_all(stream: asyncio.StreamReader | None) -> bytes:
    assert stream is not None
    return await stream.read()


async def monitor_span(
    url: str, prefix: str, total: int, sagas: int, store_url: str, group: str
) -> Span:
    """What ``choreo saga monitor --from-beginning`` applies into the SQLite store."""
    store = SqlSagaStore(store_url)
    try:
        async with Bus(url, source="bench") as bus:
            monitor = TimedMonitor(
                definitions(prefix),
                bus,
                store,
                alerts_topic=None,
                group=group,
                from_beginning=bus.capabilities.replay,
            )
            monitor.span = Span()
            async with monitor:
                span = await monitor.span.done(total)
        completed = sum(n for (_, state), n in store.counts().items() if state == "completed")
        if completed != sagas:
            raise AssertionError(f"{completed} of {sagas} sagas completed in the store")
        return span
    finally:
        store.close()


@contextlib.contextmanager
def broker_url(name: str, tmp: str) -> Iterator[str]:
    """A broker to measure on: the embedded one in ``tmp``, or a test server."""
    if name == "sqlite":
        yield f"sqlite:///{tmp}/broker.db"
    elif name == "nats":
        from devservers.nats import ENV_URL, running_nats

        with running_nats() as server:
            yield (server.address if server else _env(ENV_URL)).split("?", 1)[0]
    elif name == "rabbitmq":
        from devservers.rabbitmq import rabbitmq_session

        with rabbitmq_session() as server:
            yield server.url
    elif name == "kafka":
        from devservers.kafka import ENV_URL as KAFKA_ENV
        from devservers.kafka import running_kafka

        with running_kafka() as kafka:
            yield kafka.url if kafka else _env(KAFKA_ENV)
    else:
        raise SystemExit(f"unknown broker {name!r}")


def _env(name: str) -> str:
    import os

    return os.environ[name]


async def _create_topics(url: str, prefix: str, groups: tuple[str, ...] = ()) -> None:
    """Create the topics; on a broker that cannot replay (RabbitMQ) also the ``groups``'
    queues, so that they hold the backlog published next (``--from-beginning`` elsewhere)."""
    async with Bus(url, source="bench") as bus:
        topics = [prefix + topic for topic in TOPICS]
        for topic in topics:
            await bus.create_topic(topic)
        if bus.capabilities.replay:
            return
        for group in groups:
            await (await bus.subscribe(topics, _refuse, group=group)).stop()


async def _refuse(event: Event) -> None:
    raise RuntimeError("only the group's queue is being created")


#: The brokers' names in the table.
LABELS = {"sqlite": "embedded SQLite", "nats": "NATS", "rabbitmq": "RabbitMQ", "kafka": "Kafka"}


def catch_up(name: str, sagas: int) -> list[dict[str, Any]]:
    """The catch-up rows for one broker: the three readers on one backlog, in one run."""
    with tempfile.TemporaryDirectory() as tmp, broker_url(name, tmp) as url:
        run = uuid.uuid4().hex[:6]
        prefix = f"b{run}-"
        groups = (f"bench-sub-{run}", f"bench-cli-{run}", f"bench-mon-{run}")
        asyncio.run(_create_topics(url, prefix, groups))
        total = asyncio.run(fill(url, prefix, sagas))
        base_span = asyncio.run(subscribe_span(url, prefix, total, groups[0]))
        command = asyncio.run(command_span(url, prefix, total, groups[1]))
        store = f"sqlite:///{tmp}/sagas.db"
        ours_span = asyncio.run(monitor_span(url, prefix, total, sagas, store, groups[2]))
    return catch_up_rows(LABELS[name], total, base_span, command, ours_span)


def catch_up_rows(
    label: str, total: int, base: Span, command: Span, ours: Span
) -> list[dict[str, Any]]:
    """The monitor's catch-up rate against each baseline, over the same events (past the
    monitor's first batch), printed and as two rows."""
    skip = ours.marks[0][1]  # the monitor's first batch, for every reader
    rate, quiet, printing = ours.rate_after(skip), base.rate_after(skip), command.rate_after(skip)
    print(
        f"{label:>16}: Bus.subscribe {quiet:9,.0f}/s  choreo subscribe {printing:9,.0f}/s  "
        f"monitor {rate:9,.0f}/s  {rate / quiet:.2f}x and {rate / printing:.2f}x"
    )
    metric = f"catch-up events/s, {total:,} events, past the first batch (monitor vs "
    baselines = (
        ("Bus.subscribe, a handler doing nothing", quiet),
        ("the choreo subscribe --from-beginning --output json command, to a pipe", printing),
    )
    return [
        {
            "suite": "saga",
            "backend": f"{label} -> sqlite store",
            "metric": f"{metric}{baseline})",
            "choreograph": round(rate, 1),
            "baseline": round(value, 1),
        }
        for baseline, value in baselines
    ]


# -- in memory ----------------------------------------------------------------------------------


async def memory_rate(payloads: list[bytes]) -> float:
    """Events per second: decode, then ``SagaMonitor.apply_many`` by batches, memory store."""
    async with Bus("memory://", source="bench") as bus:
        monitor = SagaMonitor(definitions(), bus, MemoryStore(), alerts_topic=None)
        started = time.perf_counter()
        for i in range(0, len(payloads), BATCH_SIZE):
            chunk = payloads[i : i + BATCH_SIZE]
            await monitor.apply_many([Received(Event.from_json(p), "orders") for p in chunk])
        return len(payloads) / (time.perf_counter() - started)


def decode_rate(payloads: list[bytes]) -> float:
    """Events per second of ``Event.from_json`` alone (the envelope's share)."""
    started = time.perf_counter()
    for payload in payloads:
        Event.from_json(payload)
    return len(payloads) / (time.perf_counter() - started)


async def bytes_per_instance(sagas: int) -> float:
    """Memory the monitor holds per running instance with a 5-event timeline (tracemalloc)."""
    saga = definitions().sagas[0]
    longer = SagaDefinition(  # the same saga with one more step: these five events leave it open
        name=saga.name,
        start=saga.start,
        steps=(*saga.steps, Step("order.delivered", within=86400.0)),
        complete=("order.delivered",),
        deadline=saga.deadline,
    )
    payloads = [event.to_json().encode() for _, event in saga_events(sagas, "mem")]
    async with Bus("memory://", source="bench") as bus:
        gc.collect()
        tracemalloc.start()
        before, _ = tracemalloc.get_traced_memory()
        store = MemoryStore()
        monitor = SagaMonitor(Definitions((longer,), TOPICS), bus, store, alerts_topic=None)
        for i in range(0, len(payloads), BATCH_SIZE):  # decoded here: kept data counts too
            chunk = payloads[i : i + BATCH_SIZE]
            await monitor.apply_many([Received(Event.from_json(p), "orders") for p in chunk])
        gc.collect()
        used, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    running = sum(1 for i in store.data.values() if i.state == "running")
    if running != sagas:
        raise AssertionError(f"{running} of {sagas} instances running")
    return (used - before) / sagas


# -- steady state -------------------------------------------------------------------------------


async def steady(tmp: str, rate: int = STEADY_RATE, seconds: int = STEADY_SECONDS) -> Steady:
    """Milliseconds from publish to applied at a steady ``rate`` (see the module docstring).
    The publisher is a process of its own, as producers are: the monitor keeps its core."""
    url = f"sqlite:///{tmp}/steady.db"
    store = SqlSagaStore(f"sqlite:///{tmp}/steady-sagas.db")
    total = rate * seconds // 5 * 5
    sent_file = Path(tmp) / "sent.json"
    try:
        async with Bus(url, source="bench") as bus:
            await _create_topics(url, "")
            monitor = TimedMonitor(definitions(), bus, store, alerts_topic=None)
            monitor.span = Span()
            async with monitor:
                publisher = multiprocessing.get_context("spawn").Process(
                    target=publish_steadily, args=(url, rate, seconds, str(sent_file))
                )
                publisher.start()
                await asyncio.to_thread(publisher.join)
                if publisher.exitcode != 0:
                    raise RuntimeError(f"the publisher failed (exit {publisher.exitcode})")
                await _until(lambda: monitor.applied >= total)
    finally:
        store.close()
    sent = json.loads(sent_file.read_text())
    published = len(sent) / (sent[-1] - sent[0])
    return Steady(_latencies(sent, monitor.span.marks, skip=int(rate * WARM_UP)), published)


@dataclasses.dataclass
class Steady:
    """The latencies (ms) of a steady run and the rate the publisher reached."""

    latencies: list[float]
    published: float


def publish_steadily(url: str, rate: int, seconds: int, sent_file: str) -> None:
    """The publisher process: sagas at ``rate`` events/s in 10 ms ticks (``publish_many`` per
    topic), stamped at publish; writes the wall time each event's publish call started."""
    sent = asyncio.run(_publish_paced(url, rate, seconds))
    Path(sent_file).write_text(json.dumps(sent))


async def _publish_paced(url: str, rate: int, seconds: int) -> list[float]:
    tick = 0.01
    per_tick = int(rate * tick)
    events = list(saga_events(rate * seconds // 5, "steady"))
    sent: list[float] = []
    async with Bus(url, source="bench") as bus:
        started = time.time()
        for n, i in enumerate(range(0, len(events), per_tick)):
            delay = started + n * tick - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = events[i : i + per_tick]
            sent.extend([time.time()] * len(chunk))
            await _publish_chunk(bus, chunk)
    return sent


async def _publish_chunk(bus: Bus, chunk: list[tuple[str, Event]]) -> None:
    by_topic: dict[str, list[Event]] = {}
    for topic, event in chunk:
        by_topic.setdefault(topic, []).append(event.replace(time=datetime.now(UTC)))
    results = await asyncio.gather(*(bus.publish_many(t, e) for t, e in by_topic.items()))
    for result in results:
        result.raise_for_failures()


async def _until(condition: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the monitor did not apply everything")
        await asyncio.sleep(0.005)


def _latencies(
    sent: list[float], samples: list[tuple[float, int, float]], skip: int
) -> list[float]:
    """For the k-th event sent: ms until the applied counter first reached k + 1."""
    out = []
    j = 0
    for k, at in enumerate(sent):
        while j < len(samples) and samples[j][1] < k + 1:
            j += 1
        if j == len(samples):
            break
        if k >= skip:
            out.append((samples[j][0] - at) * 1000)
    return out


# -- the suite ----------------------------------------------------------------------------------


def _rows_in_memory(sagas: int) -> list[dict[str, Any]]:
    payloads = [e.to_json().encode() for _, e in saga_events(sagas, "enc")]
    decode = decode_rate(payloads)
    memory = statistics.median(asyncio.run(memory_rate(payloads)) for _ in range(3))
    per_instance = asyncio.run(bytes_per_instance(min(sagas, 10_000)))
    print(f"memory store: {memory:,.0f} events/s incl. decode (decode alone {decode:,.0f}/s)")
    print(f"bytes per running instance: {per_instance:,.0f}")
    return [
        {
            "suite": "saga",
            "backend": "memory store",
            "metric": f"events/s incl. decode (SagaMonitor.apply_many, batches of {BATCH_SIZE:,})",
            "value": round(memory, 1),
        },
        {
            "suite": "saga",
            "backend": "-",
            "metric": "decode alone (Event.from_json), events/s",
            "value": round(decode, 1),
        },
        {
            "suite": "saga",
            "backend": "memory store",
            "metric": "bytes per active instance (5 events, decoded payloads included)",
            "value": round(per_instance, 1),
        },
    ]


def _rows_steady(rounds: int = 3) -> list[dict[str, Any]]:
    """p50 and p99 of each of ``rounds`` steady runs; the rows hold the medians and the
    spread of the p99s (the machine is shared: one run can meet another engineer's build)."""
    p50s, p99s, rates = [], [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            run = asyncio.run(steady(tmp))
        p50s.append(percentile(run.latencies, 0.5))
        p99s.append(percentile(run.latencies, 0.99))
        rates.append(run.published)
        print(
            f"steady {STEADY_RATE}/s (published at {run.published:,.0f}/s): p50 {p50s[-1]:.1f} "
            f"ms, p99 {p99s[-1]:.1f} ms ({len(run.latencies)} events after the warm-up)"
        )
    backend = "embedded SQLite -> sqlite store"
    published = statistics.median(rates)
    metric = f"publish to applied at {STEADY_RATE:,}/s (published {published:,.0f}/s)"
    spread = f"median of {rounds}, p99s {min(p99s):,.0f}-{max(p99s):,.0f} ms"
    return [
        {
            "suite": "saga",
            "backend": backend,
            "metric": f"{metric}, p50 ms",
            "value": statistics.median(p50s),
        },
        {
            "suite": "saga",
            "backend": backend,
            "metric": f"{metric}, p99 ms ({spread})",
            "value": statistics.median(p99s),
        },
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Saga monitor benchmarks (see the docstring).")
    parser.add_argument("--sagas", type=int, default=4_000, help="Backlog sagas (5 events each).")
    parser.add_argument(
        "--brokers", default="sqlite,nats,rabbitmq,kafka", help="Catch-up brokers, by name."
    )
    parser.add_argument("--memory-sagas", type=int, default=20_000, help="In-memory sagas.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    rows = [row for name in args.brokers.split(",") if name for row in catch_up(name, args.sagas)]
    rows += _rows_in_memory(args.memory_sagas)
    rows += _rows_steady()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "saga.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {RESULTS / 'saga.json'}")


if __name__ == "__main__":
    main()
