"""The `choreo` pub/sub commands, run as a user runs them: a real process, exit codes, output."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker import Bus, RequestFailedError

CHOREO = [sys.executable, "-m", "choreo"]


def choreo(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHOREO, *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def choreo_into_a_closed_pipe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``choreo(*args)`` with a stdout whose reader has gone (writing to it gives EPIPE), as
    under ``| head -1``; stderr captured."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [*CHOREO, *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.fixture
def broker(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/broker.db"


def test_publish_then_subscribe_round_trip(tmp_path: Path, broker: str) -> None:
    """An event published with every option is printed back as CloudEvents JSON."""
    sent = choreo(
        "publish",
        "orders",
        "--type",
        "order.placed",
        "--data",
        '{"orderId": "o-1"}',
        "--key",
        "o-1",
        "--correlation-id",
        "c-1",
        "--header",
        "tenant=acme",
        "--subject",
        "o-1",
        "--ttl",
        "1h",
        "--broker",
        broker,
        "--output",
        "json",
        cwd=tmp_path,
    )
    assert 0 == sent.returncode, sent.stderr
    published = json.loads(sent.stdout)
    got = choreo(
        "subscribe",
        "orders",
        "--group",
        "g",
        "--from-beginning",
        "--count",
        "1",
        "--timeout",
        "20s",
        "--output",
        "json",
        "--broker",
        broker,
        cwd=tmp_path,
    )
    assert 0 == got.returncode, got.stderr
    received = json.loads(got.stdout.splitlines()[0])
    assert published == received
    assert {"orderId": "o-1"} == received["data"]
    assert ("c-1", "o-1", "acme") == (
        received["correlationid"],
        received["partitionkey"],
        received["tenant"],
    )
    assert "expiration" in received


def test_data_from_file_and_stdin(tmp_path: Path, broker: str) -> None:
    """--data @file and @- read JSON from a file and from stdin."""
    (tmp_path / "order.json").write_text('{"n": 1}')
    from_file = choreo(
        "publish",
        "t",
        "--type",
        "x",
        "--data",
        "@order.json",
        "--broker",
        broker,
        "--output",
        "json",
        cwd=tmp_path,
    )
    from_stdin = choreo(
        "publish",
        "t",
        "--type",
        "x",
        "--data",
        "@-",
        "--broker",
        broker,
        "--output",
        "json",
        cwd=tmp_path,
        stdin='{"n": 2}',
    )
    assert {"n": 1} == json.loads(from_file.stdout)["data"]
    assert {"n": 2} == json.loads(from_stdin.stdout)["data"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["publish", "t", "--type", "x", "--data", "{oops"], "--data is not valid JSON"),
        (["publish", "t", "--type", "x", "--data", "@missing.json"], "cannot read 'missing.json'"),
        (["publish", "t", "--type", "x", "--broker", "kafak://h:9092"], "did you mean kafka://"),
        (["publish", "t", "--type", "x", "--ttl", "soon"], "is not a duration"),
        (["publish", "t", "--type", "x", "--delay", "soon"], "is not a duration for --delay"),
        (["publish", "t", "--type", "x", "--at", "2026-12-01T09:00:00"], "is not a time with"),
        (["publish", "t", "--type", "x", "--at", "tomorrow"], "is not a time with"),
        (
            ["publish", "t", "--type", "x", "--delay", "1s", "--at", "2026-12-01T09:00:00Z"],
            "not both",
        ),
        (["publish", "t", "--type", "x", "--header", "novalue"], "must look like name=value"),
        (["publish", "t", "--type", "x", "--header", "X-Bad=1"], "extension name 'x-bad'"),
        (["subscribe", "t", "--output", "yaml"], "--output must be table or json"),
        (["subscribe", "t", "--reply"], "--reply needs --exec CMD"),
        (["request", "t", "--type", "x", "--timeout", "0s"], "--timeout must be more than 0"),
        (["request", "t", "--type", "x", "--timeout", "soon"], "is not a duration"),
        (["request", "t", "--type", "x", "--data", "{oops"], "--data is not valid JSON"),
        # mistakes Click finds while parsing: one line too, naming the command and its --help
        (["publish", "--type", "x"], "choreo publish: Missing argument 'topic'; see"),
        (["publish", "t", "--nope"], "No such option: --nope"),
        (["subscribe", "t", "--count", "many"], "Invalid value for '--count'"),
        (["nosuch"], "No such command 'nosuch'; see"),
    ],
)
def test_user_mistakes_print_one_line_and_exit_2(
    tmp_path: Path, broker: str, args: list[str], message: str
) -> None:
    """A usage mistake prints one line naming the problem, no traceback, and exits 2."""
    if "--broker" not in args:
        args = [*args, "--broker", broker]
    result = choreo(*args, cwd=tmp_path)
    assert 2 == result.returncode
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert 1 == len([line for line in result.stderr.splitlines() if line.strip()]), result.stderr


def test_an_unanswered_request_exits_1_with_one_line(tmp_path: Path, broker: str) -> None:
    """`choreo request` with nobody answering exits 1 after its timeout, saying so in a line."""
    result = choreo(
        "request", "quotes", "--type", "q", "--timeout", "200ms", "--broker", broker, cwd=tmp_path
    )
    assert (1, "") == (result.returncode, result.stdout)
    assert ["error: no reply to q"] == [
        line[:20] for line in result.stderr.splitlines() if line.strip()
    ]
    assert "on quotes within 0.2s" in result.stderr


def test_a_failing_reply_command_sends_an_error_reply(tmp_path: Path, broker: str) -> None:
    """With `subscribe --exec CMD --reply`, a command that fails answers the request with an
    error reply naming its exit status (after the retries), which the requester raises."""
    responder = subprocess.Popen(
        [*CHOREO, "subscribe", "quotes", "--group", "pricing", "--from-beginning", "--exec",
         "false", "--reply", "--max-attempts", "1", "--broker", broker],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    async def ask() -> str:
        async with Bus(broker) as bus:
            try:
                await bus.request("quotes", type="quote", timeout=60)
            except RequestFailedError as failure:
                return str(failure)
        return "replied"

    try:
        failure = asyncio.run(ask())
    finally:
        responder.terminate()
        responder.wait()
    assert "exited with status 1" in failure


def test_publish_with_a_delay_is_delivered_at_its_time(tmp_path: Path, broker: str) -> None:
    """`publish --delay` sets deliverat; a subscriber gets the event only once it is due."""
    sent = choreo(
        "publish",
        "later",
        "--type",
        "x",
        "--delay",
        "1s",
        "--broker",
        broker,
        "--output",
        "json",
        cwd=tmp_path,
    )
    assert 0 == sent.returncode, sent.stderr
    due = datetime.fromisoformat(json.loads(sent.stdout)["deliverat"])
    got = choreo(
        "subscribe",
        "later",
        "--group",
        "g",
        "--from-beginning",
        "--count",
        "1",
        "--timeout",
        "60s",
        "--output",
        "json",
        "--broker",
        broker,
        cwd=tmp_path,
    )
    assert 0 == got.returncode, got.stderr
    assert datetime.now(UTC) >= due
    assert json.loads(sent.stdout)["id"] == json.loads(got.stdout)["id"]


def test_publish_at_a_time_sets_deliverat(tmp_path: Path, broker: str) -> None:
    """`publish --at` with an offset is carried as deliverat in UTC."""
    sent = choreo(
        "publish",
        "later",
        "--type",
        "x",
        "--at",
        "2026-12-01T10:00:00+01:00",
        "--broker",
        broker,
        "--output",
        "json",
        cwd=tmp_path,
    )
    assert 0 == sent.returncode, sent.stderr
    assert "2026-12-01T09:00:00Z" == json.loads(sent.stdout)["deliverat"]


def test_unreachable_broker_is_an_operational_error(tmp_path: Path) -> None:
    """A broker that cannot be opened exits 1 with one line naming it."""
    (tmp_path / "file").write_text("not a directory")
    result = choreo(
        "publish", "t", "--type", "x", "--broker", f"sqlite:///{tmp_path}/file/b.db", cwd=tmp_path
    )
    assert 1 == result.returncode
    assert "cannot open the SQLite broker" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_extra_names_the_install_command(tmp_path: Path) -> None:
    """A backend whose client library is absent names the pip extra to install."""
    code = (
        "import sys; sys.modules['aiokafka'] = None; "
        "from choreo.cli import main; sys.argv = ['choreo', 'topics', 'ls', '--broker', "
        "'kafka://127.0.0.1:1']; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=60,
    )
    assert 2 == result.returncode
    assert "pip install 'choreograph[kafka]'" in result.stderr


def test_exec_failure_follows_retry_and_dlq(tmp_path: Path, broker: str) -> None:
    """With --exec a non-zero exit is a handler error: retried, then dead-lettered, then listed;
    the run exits 1 saying so."""
    choreo(
        "publish", "jobs", "--type", "job", "--data", '{"n": 1}', "--broker", broker, cwd=tmp_path
    )
    handler = "python3 -c 'import sys; sys.stdin.read(); sys.exit(3)'"
    result = choreo(
        "subscribe",
        "jobs",
        "--group",
        "workers",
        "--from-beginning",
        "--exec",
        handler,
        "--max-attempts",
        "2",
        "--retry-delay",
        "10ms",
        "--timeout",
        "3s",
        "--broker",
        broker,
        cwd=tmp_path,
    )
    assert (1, True) == (
        result.returncode,
        "error: 1 event failed the handler" in result.stderr.splitlines()[-1],
    ), result.stderr
    listed = choreo("dlq", "ls", "jobs", "--output", "json", "--broker", broker, cwd=tmp_path)
    [dead] = json.loads(listed.stdout)
    assert ("handler-error", 2, "workers") == (
        dead["dlqreason"],
        dead["dlqattempts"],
        dead["dlqgroup"],
    )
    assert "exited with status 3" in dead["dlqerror"]


def test_exec_success_receives_the_event_json(tmp_path: Path, broker: str) -> None:
    """The --exec command gets the event's JSON on stdin."""
    choreo(
        "publish", "jobs", "--type", "job", "--data", '{"n": 7}', "--broker", broker, cwd=tmp_path
    )
    sink = tmp_path / "seen.json"
    handler = (
        f"python3 -c 'import sys, pathlib; pathlib.Path(\"{sink}\").write_text(sys.stdin.read())'"
    )
    result = choreo(
        "subscribe",
        "jobs",
        "--group",
        "w",
        "--from-beginning",
        "--exec",
        handler,
        "--count",
        "1",
        "--timeout",
        "20s",
        "--broker",
        broker,
        cwd=tmp_path,
    )
    assert 0 == result.returncode, result.stderr
    assert {"n": 7} == json.loads(sink.read_text())["data"]


def test_dlq_show_replay_purge_and_topics(tmp_path: Path, broker: str) -> None:
    """Dead letters can be shown, replayed to their topic, purged; topics are listed."""
    for n in (1, 2):
        choreo(
            "publish", "jobs", "--type", "job", "--data", str(n), "--broker", broker, cwd=tmp_path
        )
    choreo(
        "subscribe",
        "jobs",
        "--group",
        "w",
        "--from-beginning",
        "--exec",
        "false",
        "--max-attempts",
        "1",
        "--timeout",
        "3s",
        "--broker",
        broker,
        cwd=tmp_path,
    )
    dead = json.loads(
        choreo("dlq", "ls", "--output", "json", "--broker", broker, cwd=tmp_path).stdout
    )
    assert 2 == len(dead)
    shown = choreo("dlq", "show", "jobs", dead[0]["id"], "--broker", broker, cwd=tmp_path)
    assert dead[0]["id"] == json.loads(shown.stdout)["id"]
    replayed = choreo(
        "dlq", "replay", "jobs", "--id", dead[0]["id"], "--broker", broker, cwd=tmp_path
    )
    assert "replayed 1 event(s)" in replayed.stdout
    purged = choreo("dlq", "purge", "jobs", "--broker", broker, cwd=tmp_path)
    assert "purged 1 event(s)" in purged.stdout
    topics = json.loads(
        choreo("topics", "ls", "--output", "json", "--broker", broker, cwd=tmp_path).stdout
    )
    jobs = next(t for t in topics if t["name"] == "jobs")
    assert (3, ["w"]) == (jobs["messages"], jobs["groups"])


def test_replay_of_an_empty_dlq_says_so_and_succeeds(tmp_path: Path, broker: str) -> None:
    """Replaying a topic with no dead letters replays nothing, says so in one line on stderr
    and exits 0 (choosing nothing is not a failure: docs/delivery.md)."""
    choreo("topics", "create", "nothing-here", "--broker", broker, cwd=tmp_path)
    result = choreo("dlq", "replay", "nothing-here", "--broker", broker, cwd=tmp_path)
    assert (0, "replayed 0 event(s)\n") == (result.returncode, result.stdout)
    assert [
        "warning: no dead letters in nothing-here.dlq; nothing was replayed"
    ] == result.stderr.splitlines()
    assert "Traceback" not in result.stderr


def test_durable_inbox_skips_a_republished_event(tmp_path: Path, broker: str) -> None:
    """With --inbox, an event published twice with one id is handled once, across runs."""
    for _ in range(2):
        choreo(
            "publish",
            "jobs",
            "--type",
            "job",
            "--id",
            "job-1",
            "--source",
            "cron",
            "--broker",
            broker,
            cwd=tmp_path,
        )
    choreo("publish", "jobs", "--type", "marker", "--broker", broker, cwd=tmp_path)
    result = choreo(
        "subscribe",
        "jobs",
        "--group",
        "w",
        "--from-beginning",
        "--inbox",
        str(tmp_path / "inbox.db"),
        "--output",
        "json",
        "--timeout",
        "3s",
        "--broker",
        broker,
        cwd=tmp_path,
    )
    handled = [json.loads(line)["id"] for line in result.stdout.splitlines()]
    assert ["job-1"] == [i for i in handled if i == "job-1"]
    assert 2 == len(handled)


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("kafka://127.0.0.1:1", "cannot reach Kafka at kafka://127.0.0.1:1"),
        ("amqp://guest:secret@127.0.0.1:1/", "amqp://guest:***@127.0.0.1:1/"),
        # connect_timeout (10 s by default) bounds the reconnect attempts to the closed port
        ("nats://127.0.0.1:1?connect_timeout=1", "cannot connect to NATS at nats://127.0.0.1:1"),
    ],
)
def test_unreachable_real_broker_is_one_line(tmp_path: Path, url: str, names: str) -> None:
    """No server behind the URL: exit 1 with exactly one line naming it (password masked)."""
    result = choreo("publish", "t", "--type", "x", "--broker", url, cwd=tmp_path)
    assert 1 == result.returncode
    assert [names in result.stderr, "secret" in result.stderr] == [True, False]
    assert 1 == len([line for line in result.stderr.splitlines() if line.strip()]), result.stderr


def test_ctrl_c_while_the_cli_loads_exits_130_without_a_traceback(tmp_path: Path) -> None:
    """A Ctrl-C that lands while the CLI still imports its commands ends it like a Ctrl-C
    during a command: exit 130, no traceback. The interrupt is raised, deterministically, by a
    stand-in for a library the CLI imports (``typer``), found first on the path."""
    (tmp_path / "typer.py").write_text("raise KeyboardInterrupt\n")
    path = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    result = choreo("topics", "ls", cwd=tmp_path, env=env)
    assert (130, "") == (result.returncode, result.stderr)


def test_the_console_script_runs_the_launcher() -> None:
    """The installed ``choreo`` script enters through :mod:`choreo.launch`, like ``-m choreo``."""
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="choreo")
    assert "choreo.launch:main" == script.value
