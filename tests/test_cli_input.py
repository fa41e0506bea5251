"""Bad input to the CLI is one line and an exit code, found before anything is published or
consumed: undecodable data, bad ports and URLs, empty topics, counts and timeouts out of range,
a handler command that cannot start."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.sqlstore import sqlite_file
from choreo.cli import app
from tests.saga_monitor.helpers import EXAMPLE

runner = CliRunner()
CHOREO = [sys.executable, "-m", "choreo"]


@pytest.fixture
def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path}/broker.db"


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other socket is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def invoke(*args: str, stdin: bytes | None = None) -> tuple[int, str]:
    """Run the CLI; its exit code and its stderr (where the one line goes)."""
    result = runner.invoke(app, list(args), input=stdin)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert 1 == len(lines), stderr
    return lines[0]


def published(broker: str) -> dict[str, int]:
    """Events per topic on the embedded ``broker`` (none when its file was never created)."""
    if not Path(sqlite_file(broker) or "").exists():
        return {}
    result = runner.invoke(app, ["topics", "ls", "-o", "json", "--broker", broker])
    assert 0 == result.exit_code, result.output
    return {t["name"]: t["messages"] for t in json.loads(result.stdout) if t["messages"]}


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--data", "@latin1.json"], None, "latin1.json is not UTF-8 text (byte 0xe9 at offset 4)"),
        (["--data", "@-"], b'"caf\xe9"', "stdin is not UTF-8 text (byte 0xe9 at offset 4)"),
        (["--data", '"\\ud800"'], None, "--data holds '\\ud800', which is not valid Unicode"),
    ],
)
def test_data_that_is_not_utf8_is_refused_and_nothing_published(
    broker: str, tmp_path: Path, args: list[str], stdin: bytes | None, message: str
) -> None:
    """A non-UTF-8 @file or stdin, or a lone surrogate in the JSON: exit 2, one line, no event."""
    (tmp_path / "latin1.json").write_bytes('"café"'.encode("latin-1"))
    code, err = invoke("publish", "t", "--type", "x", *args, "--broker", broker, stdin=stdin)
    assert (2, True) == (code, one_line(err).startswith(f"error: {message}"))
    assert {} == published(broker)


def test_an_argument_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 on the command line: exit 2 with one line naming the argument."""
    result = subprocess.run(
        [*CHOREO, "publish", b"t\xff", "--type", "x"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=False,
    )
    stderr = result.stderr.decode()
    assert (2, "error: argument 2 (t\\xff) is not valid UTF-8; pass UTF-8 text") == (
        result.returncode,
        one_line(stderr),
    )


@pytest.mark.parametrize(
    "command",
    [
        ["subscribe", "t", "--timeout", "1s"],
        ["saga", "monitor", "-d", str(EXAMPLE), "--store", "memory://"],
        ["outbox", "relay", "--db", "sqlite:///app.db"],
    ],
)
@pytest.mark.parametrize("port", ["99999", "-1", "0", "http"])
def test_an_invalid_metrics_port_is_a_usage_error(
    broker: str, command: list[str], port: str
) -> None:
    """--metrics-port outside 1..65535 (or not a number) exits 2 before anything starts."""
    code, err = invoke(*command, "--metrics-port", port, "--broker", broker)
    assert (2, True) == (code, "--metrics-port" in err), err


@pytest.mark.parametrize(
    "command",
    [
        ["subscribe", "t", "--timeout", "1s"],
        ["saga", "monitor", "-d", str(EXAMPLE), "--store", "memory://"],
    ],
)
def test_a_busy_metrics_port_is_one_line_and_exit_1(
    broker: str, busy_port: int, command: list[str]
) -> None:
    """A --metrics-port already in use: one line naming it, exit 1, before consuming."""
    code, err = invoke(*command, "--metrics-port", str(busy_port), "--broker", broker)
    host = "0.0.0.0" if command[0] == "saga" else "127.0.0.1"
    expected = (
        f"error: cannot serve metrics on {host}:{busy_port}: Address already in use; "
        "choose another --metrics-port"
    )
    assert (1, expected) == (code, one_line(err))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("amqp://guest:s3cret@127.0.0.1:notaport/", "has a bad host or port"),
        ("amqp://guest:s3cret@127.0.0.1:99999/", "has a bad host or port"),
        ("amqp://guest:s3cret@[bad/", "has a malformed host"),
        ("kafka://127.0.0.1:9092,127.0.0.1:x", "has a bad host or port"),
    ],
)
@pytest.mark.parametrize(
    "command",
    [
        ["publish", "t", "--type", "x"],
        ["subscribe", "t"],
        ["topics", "ls"],
        ["dlq", "ls"],
        ["saga", "discover", "-t", "t"],
    ],
)
def test_a_broker_url_with_a_bad_port_or_host_is_one_line_and_exit_2(
    url: str, problem: str, command: list[str]
) -> None:
    """A broker URL that does not parse: exit 2, one line naming the option, no password."""
    code, err = invoke(*command, "--broker", url)
    line = one_line(err)
    assert (2, True, False) == (code, f"the --broker URL {problem}" in line, "s3cret" in err)


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["saga", "ls", "--store"], "--store"),
        (["outbox", "status", "--db"], "--db"),
        (["outbox", "init", "--db"], "--db"),
        (["schema", "ls", "--registry"], "--registry"),
    ],
)
def test_other_urls_with_a_bad_port_are_one_line_and_exit_2(
    command: list[str], option: str
) -> None:
    """The store, outbox and registry URLs are checked the same way as the broker's."""
    code, err = invoke(*command, "postgresql://u:s3cret@127.0.0.1:notaport/db")
    line = one_line(err)
    assert (2, True, False) == (code, f"the {option} URL has a bad host" in line, "s3cret" in err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slot", "a\nb"], "slot name 'a\\nb' is not a plain identifier"),
        (["--table", "outbox\n"], "table name 'outbox\\n' is not a plain identifier"),
    ],
)
def test_outbox_names_with_a_newline_are_refused(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """outbox init refuses a table or slot name with a newline (exit 2), creating nothing."""
    database = tmp_path / "app.db"
    code, err = invoke("outbox", "init", "--db", f"sqlite:///{database}", *args)
    assert (2, True) == (code, message in one_line(err))
    assert not database.exists()


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("{aggregatetype:d}", "Unknown format code 'd'"),
        ("{aggregatetype!z}", "Unknown conversion specifier z"),
        ("{aggregatetype:>9999999999}", "pads beyond a topic's 249 characters"),
    ],
)
def test_a_route_template_that_cannot_format_is_a_usage_error(
    tmp_path: Path, route: str, message: str
) -> None:
    """outbox relay --route with a format spec no text takes: one line, exit 2."""
    db = f"sqlite:///{tmp_path}/app.db"
    assert 0 == invoke("outbox", "init", "--db", db)[0]
    code, err = invoke("outbox", "relay", "--db", db, "--route", route, "--broker", "memory://")
    assert (2, True) == (code, message in one_line(err))


@pytest.mark.parametrize(
    "command",
    [
        ["publish", "", "--type", "x"],
        ["publish", "  ", "--type", "x"],
        ["subscribe", "t", ""],
        ["topics", "create", ""],
        ["dlq", "ls", ""],
        ["dlq", "show", "", "some-id"],
        ["dlq", "replay", ""],
        ["dlq", "purge", ""],
        ["saga", "discover", "-t", ""],
        ["outbox", "relay", "--db", "sqlite:///app.db", "--dlq-topic", ""],
    ],
)
def test_an_empty_topic_is_a_usage_error_and_nothing_is_published(
    broker: str, command: list[str]
) -> None:
    """An empty or blank topic name: exit 2 with one line, and no topic gets an event."""
    code, err = invoke(*command, "--broker", broker)
    assert (2, True) == (code, "name cannot be empty" in one_line(err))
    assert {} == published(broker)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "0"], "--count must be at least 1; omit it to read until stopped"),
        (["--count", "-1"], "--count must be at least 1; omit it to read until stopped"),
        (["--timeout", "0"], "--timeout must be more than 0"),
    ],
)
def test_counts_and_timeouts_out_of_range_are_refused(
    broker: str, args: list[str], message: str
) -> None:
    """--count below 1 and a zero --timeout are usage errors, not silently accepted."""
    code, err = invoke("subscribe", "t", *args, "--broker", broker)
    assert (2, True) == (code, message in one_line(err))


@pytest.mark.parametrize("timeout", ["-1", "-5s", "36501d"])
def test_negative_and_huge_timeouts_are_refused(broker: str, timeout: str) -> None:
    """A negative --timeout, or one beyond 100 years, is a usage error (exit 2)."""
    code, err = invoke("subscribe", "t", "--timeout", timeout, "--broker", broker)
    assert (2, True) == (code, "--timeout" in err), err


@pytest.mark.parametrize(
    "command", [["registry", "serve"], ["saga", "serve", "--store", "memory://"]]
)
def test_a_server_on_a_busy_port_is_one_line_and_exit_1(
    tmp_path: Path, busy_port: int, command: list[str]
) -> None:
    """registry serve and saga serve on a port in use: one line, exit 1 (uvicorn alone would
    log and exit 3)."""
    result = subprocess.run(
        [*CHOREO, *command, "--port", str(busy_port)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    expected = f"error: cannot listen on 127.0.0.1:{busy_port}: Address already in use"
    assert (1, True) == (result.returncode, one_line(result.stderr).startswith(expected))


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_servers_refuse_a_port_out_of_range(port: str) -> None:
    """registry serve and saga serve take --port 1..65535 only (exit 2)."""
    assert 2 == invoke("registry", "serve", "--port", port)[0]
    assert 2 == invoke("saga", "serve", "--port", port, "--store", "memory://")[0]


def test_servers_refuse_a_host_that_is_not_an_address() -> None:
    """A --host that does not resolve to an address: one line, exit 2."""
    code, err = invoke("saga", "serve", "--host", "no such host", "--store", "memory://")
    assert (2, True) == (code, "--host 'no such host' does not resolve" in one_line(err))


@pytest.fixture
def handlers(tmp_path: Path) -> dict[str, str]:
    """Handler commands that cannot start, by what is wrong with them."""
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\ncat >/dev/null\n")
    return {
        "missing path": f"{tmp_path}/no/such/cmd arg",
        "missing program": "no-such-program-choreo --flag",
        "not executable": str(plain),
        "a directory": str(tmp_path),
        "bad quoting": "'unterminated",
        "empty": "  ",
    }


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing path", "does not exist"),
        ("missing program", "'no-such-program-choreo' is not found on PATH"),
        ("not executable", "is not executable"),
        ("a directory", "is a directory, not a program"),
        ("bad quoting", "cannot be split into a command (No closing quotation)"),
        ("empty", "--exec needs a command"),
    ],
)
def test_a_handler_that_cannot_start_is_a_usage_error_and_consumes_nothing(
    broker: str, handlers: dict[str, str], kind: str, message: str
) -> None:
    """--exec with a command that cannot run: exit 2 with one line; the event is not consumed
    and nothing is dead-lettered, so the next reader of the group gets it."""
    assert 0 == invoke("publish", "jobs", "--type", "job", "--broker", broker)[0]
    group = ["--group", "workers", "--from-beginning", "--broker", broker]
    code, err = invoke("subscribe", "jobs", *group, "--exec", handlers[kind], "--timeout", "5s")
    assert (2, True) == (code, message in one_line(err))
    assert {"jobs": 1} == published(broker)
    result = runner.invoke(app, ["subscribe", "jobs", *group, "--count", "1", "-o", "json"])
    assert (0, "job") == (result.exit_code, json.loads(result.stdout)["type"])
