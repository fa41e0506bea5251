"""The benchmarks in bench/ still run (their numbers are not asserted: they are not tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.registry import bench_avro
from bench.saga import bytes_per_instance, decode_rate, memory_rate, saga_events

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
