"""No CLI error path shows a secret: every command that takes a URL (--broker, --storage,
--store, --registry, --db) is run with credential-bearing URLs that cannot work (refused,
unknown scheme, bad port, unclosed bracket), and neither stdout nor stderr (JSON output
included) holds the password or token, nor a traceback; the exit code is 1 or 2."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devservers import free_port

SECRET = "Pw5ecretXyz"
#: URLs no command can use: an unknown scheme (with a password, with a bare token), a port that
#: is not a number or out of range, an unclosed bracket.
BROKEN = [
    f"foo://u:{SECRET}@host/x",
    f"fooo://{SECRET}@host",
    f"amqp://u:{SECRET}@host:99999/",
    f"nats://{SECRET}@host:port",
    f"postgresql://u:{SECRET}@[::1/db",
]
#: Well-formed URLs of servers that refuse the connection, by the kind of option.
BROKERS = [
    f"nats://{SECRET}@127.0.0.1:1?connect_timeout=1",
    f"nats://u:{SECRET}@127.0.0.1:1?connect_timeout=1",
    f"amqp://u:{SECRET}@127.0.0.1:1/",
    f"kafka://u:{SECRET}@127.0.0.1:1",
    f"kafka://127.0.0.1:1?sasl_mechanism=PLAIN&sasl_plain_password={SECRET}",
    f"postgresql://u:{SECRET}@127.0.0.1:1/db",
]
DATABASES = [
    f"postgresql://u:{SECRET}@127.0.0.1:1/db",
    f"mysql://u:{SECRET}@127.0.0.1:1/db",
    f"nats://{SECRET}@127.0.0.1:1",
]
REGISTRIES = [f"http://u:{SECRET}@127.0.0.1:1", f"https://{SECRET}@127.0.0.1:1"]

#: Each command that takes a URL, its URLs, and the command line with ``{url}`` in place.
COMMANDS = {
    "publish": (BROKERS, ["publish", "t", "--type", "x", "--output", "json", "--broker"]),
    "subscribe": (BROKERS, ["subscribe", "t", "-n", "1", "--timeout", "1s", "--broker"]),
    "topics ls": (BROKERS, ["topics", "ls", "--output", "json", "--broker"]),
    "dlq ls": (BROKERS, ["dlq", "ls", "--output", "json", "--broker"]),
    "registry serve": (DATABASES, ["registry", "serve", "--port", "{port}", "--storage"]),
    "saga ls": (DATABASES, ["saga", "ls", "--output", "json", "--store"]),
    "saga serve": (DATABASES, ["saga", "serve", "--port", "{port}", "--store"]),
    "schema ls": (REGISTRIES, ["schema", "ls", "--registry"]),
    "outbox status": (DATABASES, ["outbox", "status", "--output", "json", "--db"]),
    "outbox init": (DATABASES, ["outbox", "init", "--db"]),
}


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "choreo", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_no_error_path_shows_the_secret(command: str, tmp_path: Path) -> None:
    """``command`` given each bad URL fails with exit 1 or 2, no traceback, and no secret in
    its output."""
    urls, args = COMMANDS[command]
    lines = [
        [arg.replace("{port}", str(free_port())) for arg in args] + [url]
        for url in [*urls, *BROKEN]
    ]
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda line: run(line, tmp_path), lines))
    leaks = [
        (done.args[-1], done.returncode, done.stdout + done.stderr)
        for done in runs
        if done.returncode not in (1, 2)
        or SECRET in done.stdout + done.stderr
        or "Traceback" in done.stderr
    ]
    assert [] == leaks
