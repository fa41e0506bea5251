"""A saga store at a real stream's size, and the operator's questions timed against it.

``fill`` builds a store of ``--instances`` instances through the monitor itself
(``SagaMonitor.apply_many`` in batches, then a tick that judges the deadlines): three events
each over three services, spread over the last three days; about 1.5% stuck (one in ten of
them acknowledged), 1% still running, one in a hundred with a duplicate (an anomaly), a few
hundred orphans. Each event's data names a customer (``customer-<n % 5000>``) and a region.

``time`` asks the questions through the public interface: an HTTP client against
``choreo saga serve`` (started here on a free port) and the ``choreo saga`` commands, and
prints the median wall time of each (and its spread).

    python -m bench.saga_store fill --store sqlite:///big.db --instances 200000
    python -m bench.saga_store time --store sqlite:///big.db [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker import Bus, Event
from saga_monitor import SagaMonitor, open_saga_store, parse_definitions
from saga_monitor.correlator import Received
from saga_monitor.queries import Note, Query

ROOT = Path(__file__).resolve().parent.parent
SAGAS = """\
topics: [orders, payments, shipping]
sagas:
  - name: orders
    start: order.placed
    steps:
      - {event: payment.authorized, within: 60s, service: payments}
      - {event: order.shipped, within: 60s, service: shipping}
    complete: order.shipped
"""
#: How far back the instances start.
SPAN = timedelta(days=3)


def _events(n: int, start: datetime) -> list[Event]:
    """The events of instance ``n``: its start, then as many steps as its fate allows."""
    corr = f"order-{n:07d}"
    data = {"customer": f"customer-{n % 5000}", "region": "eu" if n % 2 else "us", "n": n}
    flow = [("order.placed", "shop"), ("payment.authorized", "payments")]
    if n % 67 != 0 and n % 97 != 1:  # 1.5% stuck (one in ten acked), running at the end
        flow.append(("order.shipped", "shipping"))
    out = [
        Event(
            type=kind,
            source=source,
            id=f"{corr}-{k}",
            time=start + timedelta(seconds=5 * k),
            data=data,
            extensions={"correlationid": corr},
        )
        for k, (kind, source) in enumerate(flow)
    ]
    if n % 100 == 3:  # a duplicate: the same event type again, another id
        dup = out[1]
        out.insert(
            2,
            Event(
                type=dup.type,
                source=dup.source,
                id=dup.id + "b",
                time=dup.time,
                data=data,
                extensions={"correlationid": corr},
            ),
        )
    if n % 97 == 1:
        out = out[1:]  # an orphan (no start ever)
    return out


async def fill(url: str, instances: int) -> None:
    store = open_saga_store(url)
    now = datetime.now(UTC)
    base = now - SPAN
    step = (SPAN - timedelta(minutes=5)) / instances
    # the last 1% of the instances run (their deadlines have not passed)
    running_from = int(instances * 0.99)
    step_running = timedelta(minutes=3) / max(1, instances - running_from)
    bus = Bus("memory://", source="saga-monitor")
    monitor = SagaMonitor(parse_definitions(SAGAS), bus, store, alerts_topic=None, retention=None)
    started, cpu = time.perf_counter(), time.process_time()
    batch: list[Received] = []
    for n in range(instances):
        if n < running_from:
            events = _events(n, base + step * n)
        else:
            events = _events(n, now - timedelta(minutes=4) + step_running * (n - running_from))
            events = events[:2]
        batch += [Received(e, "orders") for e in events]
        if len(batch) >= 2000:
            await monitor.apply_many(batch)
            batch = []
    if batch:
        await monitor.apply_many(batch)
    applied, cpu = time.perf_counter() - started, time.process_time() - cpu
    monitor.correlator.tick(store, now - timedelta(minutes=2))
    store.record_monitor(monitor.group, now - timedelta(minutes=2), 0.0, now)
    acked = 0
    for n in range(0, running_from, 67 * 10):
        if n % 97 == 1:
            continue
        store.add_note(Note("orders", f"order-{n:07d}", "ack", "ops", now, "on it"))
        acked += 1
    counts = store.counts()
    print(
        f"filled {url}: {sum(counts.values())} instances {dict(counts)}, acked {acked}, "
        f"orphans {len(store.orphans(limit=100_000))}, "
        f"applied in {applied:.1f} s (CPU {cpu:.1f} s)",
        file=sys.stderr,
    )
    store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _get(url: str, server: int) -> tuple[float, float]:
    """(wall seconds, the server's CPU seconds) of one GET."""
    cpu, began = _cpu(server), time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as response:
        response.read()
    return time.perf_counter() - began, _cpu(server) - cpu


def _cli(store: str, *args: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``choreo saga`` command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "choreo", "saga", *args, "--store", store],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=os.getcwd(),
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return time.perf_counter() - began, cpu


def time_questions(store: str, rounds: int, definitions: Path, out: Path | None) -> None:
    opened = open_saga_store(store)
    one = opened.search(Query(offset=1000, limit=1)).items[0].correlation_id
    opened.close()
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "choreo",
            "saga",
            "serve",
            "--store",
            store,
            "--port",
            str(port),
            "--definitions",
            str(definitions),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    web = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(web + "/healthz", server.pid)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        http = {
            "console first page (/)": "/",
            "console live update (/partials/console)": "/partials/console",
            "deep page (offset 150000)": "/api/instances?offset=150000&limit=200",
            "totals (/api/counts)": "/api/counts",
            "state=stuck": "/api/instances?state=stuck",
            "anomaly=duplicate": "/api/instances?anomaly=duplicate",
            "service=shipping": "/api/instances?service=shipping",
            "since=1h": "/api/instances?since=1h",
            "acknowledged=no": "/api/instances?acknowledged=no",
            "search id prefix": "/api/instances?q=order-01234",
            "search field, no match": "/api/instances?q=data.customer%3Dnobody",
            "search field, 40 match": "/api/instances?q=data.customer%3Dcustomer-10",
            "search field, half match": "/api/instances?q=data.region%3Deu",
            "owes board (/api/board)": "/api/board",
            "show one (/api/instances/orders/ID)": "/api/instances/orders/" + one,
        }
        #: the console rebuilds its board after BOARD_TTL (2 s); it refreshes every 5 s
        rebuilt = {"console first page (/)", "console live update (/partials/console)"}
        cli = {
            "cli saga ls": ["ls"],
            "cli saga ls --state stuck": ["ls", "--state", "stuck"],
            "cli saga ls --search data.customer=nobody": ["ls", "--search", "data.customer=nobody"],
            "cli saga ls --search data.region=eu": ["ls", "--search", "data.region=eu"],
            "cli saga owes": ["owes", "--definitions", str(definitions)],
            "cli saga show ID": ["show", one],
        }
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in (*http, *cli)}
        for _ in range(rounds):
            for name, path in http.items():
                if name in rebuilt:
                    time.sleep(2.2)
                times[name].append(_get(web + path, server.pid))
            for name, args in cli.items():
                times[name].append(_cli(store, *args))
        opened = open_saga_store(store)
        monitor = SagaMonitor(
            parse_definitions(SAGAS), Bus("memory://"), opened, alerts_topic=None, retention=None
        )
        inside = {
            "monitor tick (correlator.tick)": lambda: monitor.correlator.tick(
                opened, datetime.now(UTC) - timedelta(minutes=2)
            ),
            "metrics: counts()": opened.counts,
            "metrics: oldest_stuck()": opened.oldest_stuck,
        }
        for name in inside:
            times[name] = []
        for _ in range(rounds):
            for name, call in inside.items():
                began, cpu = time.perf_counter(), time.process_time()
                call()
                times[name].append((time.perf_counter() - began, time.process_time() - cpu))
        opened.close()
        if out is not None:
            out.write_text(json.dumps(times))
        print(f"| question | wall ms (spread) | CPU ms |  ({rounds} rounds, {store})")
        for name, values in times.items():
            walls = [v[0] * 1000 for v in values]
            cpus = [v[1] * 1000 for v in values]
            print(
                f"| {name} | {statistics.median(walls):.0f} ({min(walls):.0f}-{max(walls):.0f})"
                f" | {statistics.median(cpus):.0f} |"
            )
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("fill", "time"))
    parser.add_argument("--store", required=True)
    parser.add_argument("--instances", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the timings here")
    args = parser.parse_args()
    if args.what == "fill":
        asyncio.run(fill(args.store, args.instances))
    else:
        path = Path("/tmp") / f"saga-store-bench-{os.getpid()}.yaml"
        path.write_text(SAGAS)
        time_questions(args.store, args.rounds, path, args.json)


if __name__ == "__main__":
    main()
