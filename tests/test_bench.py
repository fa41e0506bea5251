"""The benchmarks in bench/ still run (their numbers are not asserted: they are not tests)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bench import run as bench_run
from bench.brokers import kafka as kafka_bench
from bench.brokers import nats as nats_bench
from bench.brokers._harness import CEILING_METRIC, ceiling_row
from bench.registry import bench_avro
from bench.saga import (
    TOPICS,
    Span,
    bytes_per_instance,
    catch_up_rows,
    command_span,
    decode_rate,
    fill,
    memory_rate,
    saga_events,
)
from broker import Bus

ROOT = Path(__file__).resolve().parents[1]


def test_registry_codec_comparison_runs() -> None:
    """The registry suite's Avro comparison returns both timings and their ratio."""
    result = bench_avro(count=50, rounds=1)
    assert {"raw_fastavro_s", "ours_s", "ratio"} == set(result)


async def test_saga_measures_run() -> None:
    """The saga suite's in-memory rate, decode rate and bytes per instance run on a few sagas."""
    payloads = [event.to_json().encode() for _, event in saga_events(20, "test")]
    assert 100 == len(payloads)
    assert 0 < await memory_rate(payloads)
    assert 0 < decode_rate(payloads)
    assert 0 < await bytes_per_instance(20)


def test_runner_lists_its_suites_without_running_them() -> None:
    """`python -m bench.run --help` names every suite and runs none."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    assert "embedded, kafka, rabbitmq, nats, registry, outbox, saga" in done.stdout


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("nats", marks=pytest.mark.nats),
    ]
)
def backlog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A broker the catch-up reads from: the embedded one, or a live NATS JetStream."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/broker.db"
    url: str = request.getfixturevalue("nats_url")
    return url


async def test_command_baseline_reads_the_whole_backlog(backlog_url: str) -> None:
    """The catch-up's second baseline, the `choreo subscribe` command, is stamped once per
    line it printed, the whole backlog and nothing more."""
    prefix = f"bench-{uuid.uuid4().hex[:6]}-"
    async with Bus(backlog_url, source="bench") as bus:
        for topic in TOPICS:
            await bus.create_topic(prefix + topic)
    total = await fill(backlog_url, prefix, 20)

    span = await command_span(backlog_url, prefix, total, f"bench-cli-{prefix}")

    assert 100 == total
    assert total == span.count
    assert total == span.marks[-1][1]
    assert sorted(mark[1] for mark in span.marks) == [mark[1] for mark in span.marks]


def _span(counts: list[int], seconds: list[float]) -> Span:
    """A span whose handler calls ended at ``seconds`` with these running counts."""
    span = Span()
    span.first = seconds[0] - 1.0
    span.marks = [(0.0, count, at) for count, at in zip(counts, seconds, strict=True)]
    span.count, span.last = counts[-1], seconds[-1]
    return span


def test_catch_up_rows_set_the_monitor_against_both_baselines() -> None:
    """One row per baseline, each over the events past the monitor's first batch."""
    monitor = _span([1_000, 3_000], [1.0, 2.0])  # 2,000 events/s past its first batch
    quiet = _span([500, 1_000, 3_000], [0.5, 1.0, 1.5])  # 4,000/s past 1,000
    command = _span([1_000, 2_000, 3_000], [1.0, 2.0, 3.0])  # 1,000/s past 1,000

    rows = catch_up_rows("embedded SQLite", 3_000, quiet, command, monitor)

    assert [(2_000.0, 4_000.0), (2_000.0, 1_000.0)] == [
        (row["choreograph"], row["baseline"]) for row in rows
    ]
    assert ["Bus.subscribe", "choreo subscribe"] == [
        "Bus.subscribe" if "Bus.subscribe" in row["metric"] else "choreo subscribe" for row in rows
    ]
    assert {"embedded SQLite -> sqlite store"} == {row["backend"] for row in rows}


@pytest.mark.nats
async def test_nats_ceiling_stores_every_event(nats_url: str) -> None:
    """The NATS ceiling contender (events written straight to a socket) gets every event of
    its run stored, in a stream of its own."""
    rate = await nats_bench.publish_many_ceiling(nats_url)

    async with Bus(nats_url) as bus:
        topics = [t for t in await bus.topics() if t.name.startswith("bench-many-ceiling-")]
    assert 0 < rate
    assert nats_bench.COUNT in [topic.messages for topic in topics]


@pytest.mark.kafka
async def test_kafka_ceiling_runs(kafka_url: str) -> None:
    """The Kafka ceiling contender (record batches built by hand) has every batch acked."""
    assert 0 < await kafka_bench.publish_many_ceiling(kafka_url)


def test_ceiling_row_says_how_far_3x_single_is() -> None:
    """The ceiling row carries the ceiling over our single publish of the same run, and the
    README table shows it beside the metric."""
    rows = [
        {"suite": "brokers", "backend": "nats", "metric": "publish/s", "raw": 50.0,
         "choreograph": 60_000.0},
        {"suite": "brokers", "backend": "nats", "metric": CEILING_METRIC, "raw": 180_000.0,
         "choreograph": 120_000.0},
    ]  # fmt: skip

    ceiling_row(rows)

    assert 3.0 == rows[1]["ceiling_x_single"]
    assert f"| {CEILING_METRIC}; ceiling = 3.00x single | 120,000 |" in bench_run.render(rows)
