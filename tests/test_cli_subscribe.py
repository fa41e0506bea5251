"""`choreo subscribe` stops exactly where it is told, on every backend the CLI can reach: `--count
N` hands over and acks exactly N events, Ctrl-C is a shutdown (never a handler failure), and
`--handler-timeout` fails an attempt that runs too long."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from broker import Bus
from tests.conftest import SERVER_MODULES

CHOREO = [sys.executable, "-m", "choreo"]
CLI_BACKENDS = ["sqlite", *SERVER_MODULES]


@pytest.fixture(
    params=[pytest.param(name, marks=getattr(pytest.mark, name)) for name in CLI_BACKENDS]
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A broker URL that separate processes share."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/broker.db?visibility_timeout=3"
    found: str = request.getfixturevalue(f"{request.param}_url")
    return found


@pytest.fixture
def topic() -> str:
    return f"contract-cli-{uuid.uuid4().hex[:12]}"


def choreo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHOREO, *args], cwd=cwd, capture_output=True, text=True, timeout=180, check=False
    )


def publish(url: str, topic: str, items: list[dict[str, Any]]) -> list[str]:
    """Publish ``items`` (publish options) one by one and return their ids. (Not publish_many:
    Tansu's high watermark counts a multi-record batch as one offset, so a group's committed
    position past such a batch looks beyond the log end and the group reads it again.)"""

    async def go() -> list[str]:
        async with Bus(url) as bus:
            await bus.create_topic(topic)
            joined = await bus.subscribe(topic, _ignore, group="g")  # the group exists first
            await joined.stop()
            return [(await bus.publish(topic, **item)).id for item in items]

    return asyncio.run(go())


async def _ignore(_: object) -> None:
    raise AssertionError("nothing is published before the group exists")


def read(url: str, topic: str, count: int, cwd: Path, *extra: str) -> list[dict[str, object]]:
    """`choreo subscribe --count` in group g (which exists); the events it printed."""
    done = choreo(
        "subscribe", topic, "--group", "g", "--count", str(count),
        "--timeout", "60s", "--output", "json", "--broker", url, *extra, cwd=cwd,
    )  # fmt: skip
    assert 0 == done.returncode, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_count_hands_over_and_acks_exactly_n(url: str, topic: str, tmp_path: Path) -> None:
    """Three readers of one group with --count 2, 2 and 3 get 7 published events between
    them, each exactly once: a reader hands over only its N (prefetched events go back)."""
    sent = publish(url, topic, [{"type": "t", "data": n} for n in range(7)])
    got = [read(url, topic, n, tmp_path) for n in (2, 2, 3)]
    assert [2, 2, 3] == [len(events) for events in got]
    assert sorted(sent) == sorted(str(e["id"]) for events in got for e in events)


def test_ctrl_c_during_exec_leaves_the_event_for_the_next_reader(
    url: str, topic: str, tmp_path: Path
) -> None:
    """Ctrl-C (SIGINT to the terminal's process group) while an --exec command runs, with
    --max-attempts 1: the command is not interrupted by the terminal but ended by choreo, the
    event is not dead-lettered, choreo exits 130, and the group's next reader gets the event."""
    [sent] = publish(url, topic, [{"type": "t", "data": "work"}])
    started = tmp_path / "started"
    interrupted = tmp_path / "interrupted"
    handler = (
        f'sh -c \'trap "echo INT > {interrupted}" INT; cat > /dev/null; '
        f"echo $$ > {started}; sleep 600 & wait'"
    )
    args = ["subscribe", topic, "--group", "g", "--exec", handler, "--max-attempts", "1"]
    reader = subprocess.Popen(
        [*CHOREO, *args, "--broker", url],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    try:
        child, stderr = _interrupt_when_started(reader, started)
    finally:
        _end_group(reader, started)
    assert 130 == reader.returncode, stderr
    assert "Traceback" not in stderr
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(child)  # ended, not orphaned
    assert not interrupted.exists()  # the terminal's Ctrl-C never reached the command
    dead = choreo("dlq", "ls", topic, "--output", "json", "--broker", url, cwd=tmp_path)
    assert (0, []) == (dead.returncode, json.loads(dead.stdout or "[]")), dead.stderr
    assert [sent] == [e["id"] for e in read(url, topic, 1, tmp_path)]


def _interrupt_when_started(reader: subprocess.Popen[str], started: Path) -> tuple[int, str]:
    """Once the handler wrote its pid to ``started``, Ctrl-C the reader's process group; the
    handler's pid and the reader's stderr."""
    deadline = time.monotonic() + 120
    while not (started.exists() and started.read_text().strip()):
        assert time.monotonic() < deadline, "the handler never started"
        assert reader.poll() is None, reader.communicate()
        time.sleep(0.05)
    os.killpg(reader.pid, signal.SIGINT)
    _, stderr = reader.communicate(timeout=120)
    return int(started.read_text()), stderr


def _end_group(reader: subprocess.Popen[str], started: Path) -> None:
    """Kill what is left of the reader and of the handler (their own process groups), which
    is nothing unless the test failed."""
    if reader.poll() is not None:
        return  # choreo exited: it ended the handler itself (asserted by the test)
    groups = [reader.pid]
    if started.exists() and started.read_text().strip():
        groups.append(int(started.read_text()))
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    reader.wait(30)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except OSError:
        return "Z"


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_handler_timeout_fails_the_attempt(url: str, topic: str, tmp_path: Path) -> None:
    """--handler-timeout 1s kills an --exec command that hangs: the attempt fails, the event
    is dead-lettered with a HandlerTimeoutError, the next event is handled, and the run exits
    1 saying that one event failed."""
    script = tmp_path / "handler.py"
    script.write_text(
        "import json, sys, time\nif json.load(sys.stdin)['data'] == 'slow':\n    time.sleep(600)\n"
    )
    slow, fast = publish(url, topic, [{"type": "t", "data": d, "key": "k"} for d in ("slow", "ok")])
    done = choreo(
        "subscribe", topic, "--group", "g", "--count", "2",
        "--exec", f"{sys.executable} {script}", "--handler-timeout", "1s",
        "--max-attempts", "1", "--broker", url, cwd=tmp_path,
    )  # fmt: skip
    assert (1, True) == (done.returncode, "error: 1 event failed the handler" in done.stderr)
    dead = choreo("dlq", "ls", topic, "--output", "json", "--broker", url, cwd=tmp_path)
    [entry] = json.loads(dead.stdout)
    assert (slow, "handler-error") == (entry["id"], entry["dlqreason"])
    assert entry["dlqerror"].startswith("HandlerTimeoutError: the handler did not finish within")
    assert [] == read(url, topic, 1, tmp_path, "--timeout", "1s")  # fast was handled and acked
    assert fast != slow


def test_a_failing_handler_fails_a_bounded_run(url: str, topic: str, tmp_path: Path) -> None:
    """--exec false --count 1: the event that failed every attempt counts as the one handed
    over, goes to the DLQ, and the run exits 1 with one line saying how many failed and where
    they went; the other events stay for the group's next reader."""
    first, *rest = publish(url, topic, [{"type": "t", "data": n, "key": "k"} for n in range(3)])
    done = choreo(
        "subscribe", topic, "--group", "g", "--count", "1", "--exec", "false",
        "--max-attempts", "2", "--retry-delay", "10ms", "--timeout", "30s",
        "--broker", url, cwd=tmp_path,
    )  # fmt: skip
    dlq = f"{topic}.dlq"
    expected = (
        f"error: 1 event failed the handler (last: RuntimeError: '/usr/bin/false' exited with "
        f"status 1) and went to the dead-letter topic {dlq}; see: choreo dlq ls {dlq}"
    )
    assert (1, expected) == (done.returncode, done.stderr.splitlines()[-1])
    assert "Traceback" not in done.stderr
    dead = choreo("dlq", "ls", topic, "--output", "json", "--broker", url, cwd=tmp_path)
    assert [first] == [e["id"] for e in json.loads(dead.stdout)]
    assert sorted(rest) == sorted(e["id"] for e in read(url, topic, 2, tmp_path))


def test_failures_in_a_run_bounded_by_timeout_are_counted(
    url: str, topic: str, tmp_path: Path
) -> None:
    """--exec false --timeout: the run ends when idle and exits 1 naming both failed events;
    the same run with a handler that succeeds exits 0."""
    publish(url, topic, [{"type": "t", "data": n} for n in range(2)])
    args = ["subscribe", topic, "--group", "g", "--max-attempts", "1", "--timeout", "2s"]
    failed = choreo(*args, "--exec", "false", "--broker", url, cwd=tmp_path)
    assert (1, True) == (
        failed.returncode,
        failed.stderr.splitlines()[-1].startswith("error: 2 events failed the handler"),
    ), failed.stderr
    publish(url, topic, [{"type": "t", "data": "ok"}])
    succeeded = choreo(*args, "--exec", "true", "--broker", url, cwd=tmp_path)
    assert 0 == succeeded.returncode, succeeded.stderr


@pytest.mark.parametrize("value", ["0s", "-1", "soon"])
def test_handler_timeout_must_be_a_positive_duration(value: str, tmp_path: Path) -> None:
    """A --handler-timeout that is not a duration above 0 is a usage error naming it."""
    done = choreo(
        "subscribe", "t", "--handler-timeout", value, "--broker", f"sqlite:///{tmp_path}/b.db",
        cwd=tmp_path,
    )  # fmt: skip
    assert 2 == done.returncode
    assert "--handler-timeout" in done.stderr
    assert "Traceback" not in done.stderr
