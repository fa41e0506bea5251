"""The benchmarks in bench/ still run (their numbers are not asserted: they are not tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.registry import bench_avro
from bench.saga import bytes_per_instance, encoded_events, throughput
from saga_monitor import MemoryStore

ROOT = Path(__file__).resolve().parents[1]


def test_registry_codec_comparison_runs() -> None:
    """The registry suite's Avro comparison returns both timings and their ratio."""
    result = bench_avro(count=50, rounds=1)
    assert {"raw_fastavro_s", "ours_s", "ratio"} == set(result)


def test_saga_measures_run() -> None:
    """The saga suite's correlation throughput and memory measures run on a few sagas."""
    payloads = encoded_events(20, 5)
    assert 100 == len(payloads)
    assert 0 < throughput(MemoryStore(), payloads, batch=16)
    assert 0 < bytes_per_instance(20)


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
