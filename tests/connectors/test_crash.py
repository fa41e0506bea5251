"""Crash safety on every database: a relay process killed with SIGKILL while relaying (the first
5,000 of 10,000 events) and started again delivers every event; duplicates come only from the
unconfirmed tail and per-aggregate order is kept. A broker that is away for a while delays
events, never drops them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import httpx

from broker import Event
from tests.connectors.conftest import REPO, OutboxDB
from tests.connectors.relaying import collecting, eventually, order_rows, running_relay

TOPIC = "outbox.event.order"
EVENTS = 10_000
AGGREGATES = 50


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_relay(
    outbox: OutboxDB, broker: str, log: Path, metrics_port: int | None = None
) -> subprocess.Popen[bytes]:
    """``choreo outbox relay`` as a real process (stderr to ``log``, stdout piped)."""
    choreo = Path(sys.executable).parent / "choreo"
    command = [str(choreo), "outbox", "relay", "--db", outbox.url, "--broker", broker]
    command += ["--table", outbox.table, "--slot", outbox.slot]
    if metrics_port is not None:
        command += ["--metrics-port", str(metrics_port)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "CHOREO_LOG_LEVEL": "ERROR"}
    with log.open("ab") as stderr:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr)


async def relayed_metric(port: int, least: int) -> float:
    """``choreo_outbox_relayed_total`` from the relay's /metrics once it answers and counts at
    least ``least`` (the relay process may still be starting, or counting, when every event has
    already arrived)."""
    found: list[float] = []

    async def answered() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        except httpx.TransportError:
            return False
        lines = [x for x in text.splitlines() if x.startswith("choreo_outbox_relayed_total{")]
        if not lines:  # no row relayed yet: the labelled counter is not there
            return False
        assert 1 == len(lines), text
        found.append(float(lines[0].rsplit(" ", 1)[1]))
        return found[-1] >= least

    await eventually(answered, timeout=30, what=f"the relay's metrics on port {port}")
    return found[-1]


def regressions(events: list[Event]) -> dict[str, int]:
    """Per aggregate: how often the seq went backwards (a restart re-sending its tail)."""
    last: dict[str, int] = {}
    back: dict[str, int] = defaultdict(int)
    for event in events:
        key, seq = str(event.partitionkey), int(event.data["seq"])
        if key in last and seq <= last[key]:
            back[key] += 1
        last[key] = seq
    return back


def first_seen_order(events: list[Event]) -> dict[str, list[int]]:
    """Per aggregate, the seqs in the order they were first received."""
    seen: set[str] = set()
    order: dict[str, list[int]] = defaultdict(list)
    for event in events:
        if event.id not in seen:
            seen.add(event.id)
            order[str(event.partitionkey)].append(int(event.data["seq"]))
    return order


async def test_kill_9_mid_stream_then_restart_loses_nothing(
    outbox: OutboxDB, tmp_path: Path
) -> None:
    """Every id arrives after a SIGKILL and restart; duplicates only from the tail; order kept.

    The first half of the rows is written before the relay starts and the second half after
    it is killed, so the kill always lands before the end (the collector's count says nothing
    of how far the relay got: it publishes faster than the collector reads) and the second
    relay always has rows to relay."""
    broker = f"sqlite:///{tmp_path}/broker.db?poll_interval=0.01"
    half = EVENTS // 2
    ids = outbox.write_many(order_rows(half, aggregates=AGGREGATES), per_transaction=100)
    async with collecting(broker, TOPIC) as got:
        events = got[TOPIC].events
        relay = start_relay(outbox, broker, tmp_path / "relay.log")
        await eventually(lambda: len(events) >= 1500, timeout=60, what="1,500 events")
        relay.kill()
        relay.wait()
        ids += outbox.write_many(
            order_rows(half, aggregates=AGGREGATES, start=half), per_transaction=100
        )
        await eventually(lambda: not outbox.relay_locked(), what="the slot to be released")
        port = free_port()
        relay = start_relay(outbox, broker, tmp_path / "relay.log", metrics_port=port)
        wanted = set(ids)
        await eventually(lambda: wanted <= {e.id for e in events}, timeout=120, what="every event")
        relayed = await relayed_metric(port, least=half)
        relay.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(relay.wait, 30)
        stdout = relay.stdout.read().decode() if relay.stdout else ""
    assert wanted == {e.id for e in events}
    # unconfirmed at most: 4 batches in flight of <= 1,000 rows (rounded up to a transaction)
    assert len(events) - EVENTS <= 4 * (1000 + 100), "more duplicates than the unconfirmed tail"
    assert all(seqs == sorted(seqs) for seqs in first_seen_order(events).values())
    assert all(count <= 1 for count in regressions(events).values())
    assert (0, True) == (code, "relay stopped" in stdout)
    assert relayed >= half  # the second relay published at least the rows written after the kill


async def test_broker_down_for_a_while_delays_but_loses_nothing(
    outbox: OutboxDB, tmp_path: Path
) -> None:
    """With the SQLite broker locked by another process the relay retries, then delivers all."""
    path = tmp_path / "broker.db"
    consumer = f"sqlite:///{path}?poll_interval=0.01"
    relay_broker = f"{consumer}&busy_timeout=0.2"  # the relay notices the lock quickly
    before = outbox.write(order_rows(5))
    async with collecting(consumer, TOPIC) as got, running_relay(outbox, relay_broker) as run:
        await run.until(lambda: len(got[TOPIC].events) >= 5, what="the first events")
        locker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _LOCKER, str(path), stdout=subprocess.PIPE
        )
        assert locker.stdout is not None
        assert b"locked\n" == await locker.stdout.readline()
        during = outbox.write(order_rows(20, start=5, aggregates=4))
        await run.until(lambda: run.relay.stats.publish_errors >= 3, what="publish failures")
        published_while_down = len(got[TOPIC].events)
        locker.kill()
        await locker.wait()
        await run.until(lambda: len(got[TOPIC].events) >= 25, what="every event after recovery")
    events = got[TOPIC].events
    assert 5 == published_while_down
    assert sorted(before + during) == sorted(e.id for e in events)
    assert all(seqs == sorted(seqs) for seqs in first_seen_order(events).values())


_LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(300)
"""


async def test_stopping_while_the_broker_is_down_confirms_nothing_unpublished(
    outbox: OutboxDB, tmp_path: Path
) -> None:
    """A relay stopped during an outage leaves the unpublished rows for the next relay."""
    path = tmp_path / "broker.db"
    consumer = f"sqlite:///{path}?poll_interval=0.01"
    relay_broker = f"{consumer}&busy_timeout=0.2"
    async with collecting(consumer, TOPIC) as got:
        locker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _LOCKER, str(path), stdout=subprocess.PIPE
        )
        assert locker.stdout is not None
        assert b"locked\n" == await locker.stdout.readline()
        ids = outbox.write(order_rows(10, aggregates=3))
        async with running_relay(outbox, relay_broker) as run:
            await run.until(lambda: run.relay.stats.publish_errors >= 2, what="publish failures")
        locker.kill()
        await locker.wait()
        assert [] == got[TOPIC].events
        async with running_relay(outbox, relay_broker) as run:
            await run.until(lambda: len(got[TOPIC].events) >= 10, what="every event")
    assert sorted(ids) == sorted(got[TOPIC].ids)
