"""The monitor's Prometheus metrics, scraped from `choreo saga monitor --metrics-port` while it
watches a real stream on the embedded broker: oldest stuck age, lag, step histograms, alerts by
type and batches."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from broker import Bus, Event
from devservers import free_port
from tests.test_cli import choreo

ROOT = Path(__file__).parents[2]
DEFINITIONS = """
topics: [orders, payments, shipping]
sagas:
  - name: metered
    start: [order.placed]
    steps:
      - event: payment.authorized
        within: 1s
      - event: order.shipped
        within: 1h
    complete: [order.shipped]
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample on the monitor's /metrics page, by name and labels."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def start_monitor(definitions: Path, broker: str, store: str, port: int) -> subprocess.Popen[bytes]:
    """`choreo saga monitor` serving its metrics on ``port``."""
    command = [
        *(sys.executable, "-m", "choreo", "saga", "monitor", "--definitions", str(definitions)),
        *("--broker", broker, "--store", store, "--metrics-port", str(port)),
        # --max-delay bounds how late an event may reach the broker after its own time: on a
        # loaded machine a publish can take a second, and a tighter bound would (rightly) call
        # the completing saga overdue before its payment arrives.
        *("--tick", "100ms", "--max-delay", "3s"),
        # The metrics are served before the monitor's group joins (its lag reads 0 until
        # then): from the beginning of the test's fresh broker, the events the test publishes
        # meanwhile are read all the same (a loaded machine lost them to the join's race).
        "--from-beginning",
    ]
    env = {**os.environ, "CHOREO_LOG_LEVEL": "ERROR"}
    return subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE)


async def scraped_until(
    port: int, process: subprocess.Popen[bytes], check: Callable[[Samples], bool]
) -> Samples:
    """Scrape until ``check`` holds (the monitor refreshes its gauges every 5 s); 60 s at most."""
    deadline = time.monotonic() + 60
    samples: Samples = {}
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            samples = scrape(port)
        except httpx.TransportError:
            samples = {}
        if samples and check(samples):
            return samples
        await asyncio.sleep(0.2)
    shown = {key: v for key, v in samples.items() if key[0].startswith("choreo_saga_")}
    raise AssertionError(f"the metrics never showed it; last scrape: {sorted(shown.items())}")


async def test_metrics_page_shows_oldest_stuck_lag_steps_alerts_and_batches(
    tmp_path: Path,
) -> None:
    """One saga completes and one gets stuck: /metrics shows the stuck one's age, the
    monitor's lag, the step histograms, the alerts by type and the batches applied."""
    definitions = tmp_path / "sagas.yaml"
    definitions.write_text(DEFINITIONS)
    broker = f"sqlite:///{tmp_path}/broker.db?poll_interval=0.01"
    port = free_port()
    process = start_monitor(definitions, broker, f"sqlite:///{tmp_path}/sagas.db", port)
    try:
        await scraped_until(
            port, process, lambda s: value(s, "choreo_saga_monitor_lag_seconds") >= 0
        )
        async with Bus(broker, source="shop") as bus:
            now = datetime.now(UTC)
            for topic, kind, corr, late in (
                ("orders", "order.placed", "ok-1", 0.0),
                ("payments", "payment.authorized", "ok-1", 0.3),
                ("shipping", "order.shipped", "ok-1", 0.5),
                ("orders", "order.placed", "late-1", 0.0),
            ):
                event = Event(type=kind, source="shop", time=now + timedelta(seconds=late))
                await bus.publish(topic, event, correlation_id=corr)

        def settled(s: Samples) -> bool:
            return (
                value(s, "choreo_saga_oldest_stuck_seconds", saga="metered") > 0
                and value(s, "choreo_saga_alerts_total", type="saga.stuck") == 1
                and value(s, "choreo_saga_monitor_lag_seconds") == 0
            )

        samples = await scraped_until(port, process, settled)
    finally:
        process.terminate()
        process.wait(timeout=30)
    step = {"saga": "metered", "step": "payment.authorized"}
    assert {
        "completed alerts": 1.0,
        "stuck gauge": 1.0,
        "payment step observations": 1.0,
        "payment step within 0.5 s": 1.0,
        "shipping step observations": 1.0,
        "events applied": 4.0,
        "events in batches": 4.0,
    } == {
        "completed alerts": value(samples, "choreo_saga_alerts_total", type="saga.completed"),
        "stuck gauge": value(samples, "choreo_saga_instances", saga="metered", state="stuck"),
        "payment step observations": value(samples, "choreo_saga_step_seconds_count", **step),
        "payment step within 0.5 s": value(
            samples, "choreo_saga_step_seconds_bucket", **step, le="0.5"
        ),
        "shipping step observations": value(
            samples, "choreo_saga_step_seconds_count", saga="metered", step="order.shipped"
        ),
        "events applied": value(samples, "choreo_saga_events_total", outcome="applied"),
        "events in batches": value(samples, "choreo_saga_batch_events_sum"),
    }
    assert 0 < value(samples, "choreo_saga_oldest_stuck_seconds", saga="metered") < 60


async def test_acknowledging_the_stuck_instances_silences_the_oldest_stuck_gauge(
    tmp_path: Path,
) -> None:
    """Once every stuck instance is acknowledged (`choreo saga ack`), the oldest-stuck gauge
    an alert rule watches reads 0, while the instance gauge still counts them stuck."""
    definitions = tmp_path / "sagas.yaml"
    definitions.write_text(DEFINITIONS)
    broker = f"sqlite:///{tmp_path}/broker.db?poll_interval=0.01"
    store = f"sqlite:///{tmp_path}/sagas.db"
    port = free_port()
    process = start_monitor(definitions, broker, store, port)
    try:
        await scraped_until(
            port, process, lambda s: value(s, "choreo_saga_monitor_lag_seconds") >= 0
        )
        async with Bus(broker, source="shop") as bus:
            for corr in ("late-1", "late-2"):
                await bus.publish(
                    "orders", Event(type="order.placed", source="shop"), correlation_id=corr
                )
        await scraped_until(
            port,
            process,
            lambda s: (
                value(s, "choreo_saga_instances", saga="metered", state="stuck") == 2
                and value(s, "choreo_saga_oldest_stuck_seconds", saga="metered") > 0
            ),
        )
        for corr in ("late-1", "late-2"):
            acked = choreo("saga", "ack", corr, "--note", "vendor down", "-s", store, cwd=ROOT)
            assert 0 == acked.returncode, acked.stderr
        samples = await scraped_until(
            port,
            process,
            lambda s: value(s, "choreo_saga_oldest_stuck_seconds", saga="metered") == 0,
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert 2 == value(samples, "choreo_saga_instances", saga="metered", state="stuck")


def test_a_batch_of_step_durations_counts_as_observing_each_one() -> None:
    """The step histogram takes a batch's durations in one go: the same buckets, count and
    sum as observing them one by one (bounds included, beyond the last one too)."""
    from prometheus_client import CollectorRegistry, Histogram

    from saga_monitor.metrics import _observe_all

    values = [0.0, 0.05, 0.07, 0.1, 2.5, 2.5000001, 86400.0, 1e9, 3.25]
    registry = CollectorRegistry()
    buckets = (0.05, 0.1, 0.25, 2.5, 86400)
    one = Histogram("one_by_one", "", ["step"], buckets=buckets, registry=registry)
    batch = Histogram("in_one_go", "", ["step"], buckets=buckets, registry=registry)
    for value in values:
        one.labels("s").observe(value)
    _observe_all(batch.labels("s"), values)

    def samples(name: str) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name.removeprefix(name), s.labels, s.value)
            for family in registry.collect()
            if family.name == name
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    assert samples("one_by_one") == samples("in_one_go")
