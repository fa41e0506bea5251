"""A broker outage under a running ``choreo saga monitor``: the operator reads once that it lost
the broker and retries, sees the lag grow on /metrics, and reads once that it is back."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devservers.nats import NatsServer
from tests.saga_monitor.test_cli import DEMO_SAGAS
from tests.saga_monitor.test_web import _free_port

LOST, BACK = "lost the broker", "answers again after"


class Lines:
    """The stderr lines of a process, read as they come."""

    def __init__(self, stream: object) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._queue.put(line.rstrip("\n"))

    def until(self, text: str, timeout: float = 60.0) -> str:
        """Wait for a line containing ``text``; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} within {timeout}s; saw {self.seen}")

    def drain(self) -> list[str]:
        """The lines that came since the last look."""
        while True:
            try:
                self.seen.append(self._queue.get_nowait())
            except queue.Empty:
                return self.seen


def lag(port: int) -> float | None:
    """``choreo_saga_monitor_lag_seconds`` as the monitor's /metrics shows it now."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("choreo_saga_monitor_lag_seconds "):
            return float(line.split()[1])
    return None


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)  # polling a condition, with a deadline


@contextmanager
def monitor(url: str, tmp_path: Path, port: int) -> Iterator[Lines]:
    """`choreo saga monitor` of the demo's sagas on ``url``, its stderr read as it comes."""
    process = subprocess.Popen(
        [sys.executable, "-m", "choreo", "saga", "monitor", "-d", str(DEMO_SAGAS),
         "--broker", url, "--store", f"sqlite:///{tmp_path}/s.db", "--tick", "0.2",
         "--metrics-port", str(port)],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        yield Lines(process.stderr)
    finally:
        process.terminate()
        process.wait(60)


@pytest.mark.nats
def test_a_nats_outage_is_said_once_and_its_end_once(
    restartable_nats: NatsServer, tmp_path: Path
) -> None:
    """Killing the NATS server under a running monitor gives one warning that it lost the
    broker and retries, while the lag on /metrics grows; restarting it gives one line that it
    answers again, and the lag goes back to 0. Nothing is said twice meanwhile."""
    port = _free_port()
    with monitor(restartable_nats.url, tmp_path, port) as lines:
        lines.until("watching")
        wait_for(lambda: lag(port) == 0.0, "the monitor to catch up")
        restartable_nats.kill()
        lost = lines.until(LOST)
        wait_for(lambda: (lag(port) or 0.0) > 3.0, "the lag to grow past 3 s (many ticks)")
        restartable_nats.start()
        back = lines.until(BACK)
        wait_for(lambda: lag(port) == 0.0, "the monitor to catch up again")
        said = lines.drain()
    assert ('"level": "warning"' in lost, '"level": "warning"' in back) == (True, True)
    events = [json.loads(line)["event"] for line in said[said.index(lost) :]]
    repeated = [event for event, times in Counter(events).items() if times > 1]
    assert (1, 1, []) == (
        sum(LOST in e for e in events),
        sum(BACK in e for e in events),
        repeated,
    ), events
