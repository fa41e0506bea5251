"""A consumer killed (SIGKILL) after a delayed event was published, before its time, loses
nothing: the group's next consumer gets the event at its time, on every backend that can have
a consumer in another process (the memory broker lives in one process)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from broker import Bus, Event
from broker.delay import due_at
from tests.helpers import eventually

BACKENDS = ["sqlite", "kafka", "rabbitmq", "nats"]


@pytest.fixture(params=[pytest.param(name, marks=getattr(pytest.mark, name)) for name in BACKENDS])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A broker URL on one backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/broker.db?visibility_timeout=3&poll_interval=0.01"
    found: str = request.getfixturevalue(f"{request.param}_url")
    return found


def _consumer(url: str, topic: str, sink: Path, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "choreo",
            "subscribe",
            topic,
            "--group",
            "g",
            "--exec",
            f"sh -c 'cat >> {sink}'",
            "--broker",
            url,
        ],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_killed_consumer_before_the_time_loses_nothing(url: str, tmp_path: Path) -> None:
    """The group's consumer is killed while the event waits (after it handled an event
    published after it); the next consumer of the group gets it at its time."""
    topic = f"crash-{uuid.uuid4().hex[:10]}"
    sink = tmp_path / "killed.jsonl"
    got: dict[str, float] = {}

    async def handler(event: Event) -> None:
        got.setdefault(event.id, time.time())

    async with Bus(url) as bus:
        first = await bus.subscribe(topic, handler, group="g")  # the group's position exists
        await first.stop()
        process = _consumer(url, topic, sink, tmp_path)
        try:
            sent = await bus.publish(topic, type="later", key="k", delay=12.0)
            # Same key, so on a log the consumer reads (and holds) the delayed one first.
            marker = await bus.publish(topic, type="now", key="k")
            await eventually(lambda: sink.exists() and marker.id in sink.read_text(), timeout=10)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert not sink.exists() or sent.id not in sink.read_text()
        await bus.subscribe(topic, handler, group="g")
        await eventually(lambda: sent.id in got, timeout=90)
    due = due_at(sent)
    assert due is not None
    assert got[sent.id] >= due
