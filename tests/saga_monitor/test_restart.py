"""kill -9 and restart: the monitor process ends with exactly the states, anomalies and alerts of
an uninterrupted run, on the embedded broker and on Kafka, RabbitMQ and NATS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from devservers import free_port
from saga_monitor import open_saga_store
from tests.saga_monitor.scenario import (
    DEFINITIONS,
    GROUP,
    MAX_DELAY,
    alert_difference,
    bounded,
    broker_url,
    check_stuck_alerts,
    join,
    play,
    reading_alerts,
    reference,
    schedule,
    settle,
    snapshot,
    snapshot_difference,
    stalled,
    wait_for,
)

ROOT = Path(__file__).parents[2]


def start_monitor(
    broker: str, store: str, definitions: Path, alerts: str, *extra: str
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "choreo",
        "saga",
        "monitor",
        "--definitions",
        str(definitions),
        "--broker",
        broker,
        "--store",
        store,
        "--alerts-topic",
        alerts,
        "--tick",
        "50ms",
        "--max-delay",
        f"{MAX_DELAY}s",
        *extra,
    ]
    env = {**os.environ, "CHOREO_LOG_LEVEL": "ERROR"}
    return subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE)


@pytest.fixture
def url(broker: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of the broker under test."""
    return broker_url(broker, request, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "broker",
    [
        "sqlite",
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("nats", marks=pytest.mark.nats),
        pytest.param("kafka", marks=pytest.mark.kafka),
    ],
)
async def test_kill_9_and_restart_reach_the_uninterrupted_verdicts(
    url: str, tmp_path: Path
) -> None:
    """Kill the monitor process mid-stream, restart it: its states, anomalies and alerts equal
    those of a monitor that was never interrupted, and no stuck alert goes out for a saga that
    never stalled."""
    async with bounded(240):
        run = uuid.uuid4().hex[:8]
        began = time.monotonic()

        def stage(what: str) -> None:  # shown when the test fails: where the time went
            print(f"{time.monotonic() - began:7.2f}s {what}", flush=True)

        topic, sagas = f"flow-{run}", 160
        definitions = tmp_path / "sagas.yaml"
        definitions.write_text(DEFINITIONS.format(topic=topic))
        await join(url, [topic], GROUP)
        stage(f"{GROUP} joined {topic}")
        await join(url, [topic], "reference")
        stage(f"reference joined {topic}")
        alert_topics = [f"alerts-monitor-{run}", f"alerts-reference-{run}"]
        store_url = f"sqlite:///{tmp_path}/sagas.db"
        async with reading_alerts(url, alert_topics) as (mine, theirs):
            stage("alert readers started")
            async with reference(url, tmp_path, definitions, alert_topics[1]) as alone:
                stage("the reference monitor started")
                watcher = open_saga_store(store_url)
                process = start_monitor(url, store_url, definitions, alert_topics[0])
                stream = schedule(sagas, time.monotonic() + 1.0)
                publishing = asyncio.create_task(play(url, topic, stream))
                try:
                    await wait_for(lambda: sum(watcher.counts().values()) >= 40, 60, "the monitor")
                    stage("the monitor applied 40 instances: kill -9")
                    process.send_signal(signal.SIGKILL)
                    process.wait(timeout=10)
                    assert not publishing.done(), "killed too late: the stream was already done"
                    port = free_port()
                    process = start_monitor(
                        url, store_url, definitions, alert_topics[0], "--metrics-port", str(port)
                    )
                    stamps = await asyncio.wait_for(publishing, 60)
                    stage("the stream is published")
                    expected = await settle(alone, sagas)
                    stage("the reference settled")
                    with contextlib.suppress(AssertionError):
                        await wait_for(
                            lambda: snapshot(watcher) == expected, 60, "the same states", 0.2
                        )
                    difference = snapshot_difference(snapshot(watcher), expected)
                    assert not difference, "\n".join(difference[:20])
                    stage("the restarted monitor reached the same states")
                    async with httpx.AsyncClient() as client:
                        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                    assert "choreo_saga_monitor_lag_seconds" in metrics
                    with contextlib.suppress(AssertionError):
                        await wait_for(lambda: mine.ids() == theirs.ids(), 30, "the same alerts")
                    assert [] == alert_difference(mine, theirs)
                    stage("the same alerts")
                finally:
                    publishing.cancel()
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=30)
                    watcher.close()
                    stage("stopped")
        check_stuck_alerts(mine, store_url, stalled(sagas, stamps))
