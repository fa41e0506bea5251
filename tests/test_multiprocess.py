"""Several `choreo subscribe` processes share one SQLite broker file and one group."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from broker import Bus

EVENTS = 1000


async def _publish_all(url: str) -> list[str]:
    async with Bus(url) as bus:
        sent = await asyncio.gather(
            *(
                bus.publish("work", type="job", data={"n": n}, key=f"k{n % 50}")
                for n in range(EVENTS)
            )
        )
    return [event.id for event in sent]


def _start(tmp_path: Path, url: str, name: str) -> subprocess.Popen[bytes]:
    sink = tmp_path / f"{name}.jsonl"
    command = f"sh -c 'cat >> {sink}; echo >> {sink}'"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "choreo",
            "subscribe",
            "work",
            "--group",
            "shared",
            "--from-beginning",
            "--exec",
            command,
            "--broker",
            url,
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _ids(tmp_path: Path, name: str) -> list[str]:
    sink = tmp_path / f"{name}.jsonl"
    if not sink.exists():
        return []
    return [json.loads(line)["id"] for line in sink.read_text().splitlines() if line.strip()]


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/broker.db?visibility_timeout=2&poll_interval=0.02"


@pytest.mark.slow
def test_two_processes_share_a_group(tmp_path: Path, url: str) -> None:
    """Two subscriber processes in one group split 1,000 events: each gets some, none twice."""
    sent = asyncio.run(_publish_all(url))
    workers = [_start(tmp_path, url, name) for name in ("a", "b")]
    try:
        _wait(
            lambda: len(_ids(tmp_path, "a")) + len(_ids(tmp_path, "b")) >= EVENTS, 120, "all events"
        )
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(30)
    a, b = _ids(tmp_path, "a"), _ids(tmp_path, "b")
    assert sorted(sent) == sorted(a + b)
    assert a
    assert b


@pytest.mark.slow
def test_killed_consumer_loses_nothing(tmp_path: Path, url: str) -> None:
    """kill -9 of one subscriber mid-stream: the other finishes, every event is delivered, and
    only events the killed one had started are delivered twice."""
    sent = asyncio.run(_publish_all(url))
    victim = _start(tmp_path, url, "victim")
    _wait(lambda: len(_ids(tmp_path, "victim")) >= 50, 60, "the victim to start working")
    survivor = _start(tmp_path, url, "survivor")
    try:
        _wait(lambda: len(_ids(tmp_path, "survivor")) >= 20, 60, "the survivor to get a share")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(30)
        victim_ids = _ids(tmp_path, "victim")
        _wait(
            lambda: set(sent) <= set(victim_ids) | set(_ids(tmp_path, "survivor")),
            120,
            "every event after the kill",
        )
    finally:
        survivor.terminate()
        survivor.wait(30)
    survivor_ids = _ids(tmp_path, "survivor")
    counts = Counter(victim_ids + survivor_ids)
    doubled = {event_id for event_id, n in counts.items() if n > 1}
    assert set(sent) == set(counts)
    assert doubled <= set(victim_ids)
    assert max(counts.values()) <= 2
    assert len(doubled) <= 200  # at most the victim's uncommitted tail
