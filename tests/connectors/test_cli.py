"""`choreo outbox init|status` as a user runs them: output, JSON, one-line errors, exit codes.
(`relay` runs as a real process in test_crash.py, which also stops it with SIGTERM.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from choreo.commands.outbox import outbox_app
from tests.connectors.conftest import OutboxDB
from tests.connectors.relaying import order_rows

runner = CliRunner()


def test_init_then_status_as_json(tmp_path: Path) -> None:
    """init creates the outbox; status --output json reports position and lag."""
    url = f"sqlite:///{tmp_path}/app.db"
    created = runner.invoke(outbox_app, ["init", "--db", url, "--table", "events"])
    assert 0 == created.exit_code, created.output
    assert "table events" in created.output
    shown = runner.invoke(outbox_app, ["status", "--db", url, "--table", "events", "-o", "json"])
    info = json.loads(shown.stdout)
    assert (0, 0, 0) == (shown.exit_code, info["position"], info["lag_events"])


def test_status_table_shows_pending_events(tmp_path: Path) -> None:
    """The table view lists the lag in events."""
    outbox = OutboxDB("sqlite", tmp_path)
    outbox.write(order_rows(2))
    shown = runner.invoke(outbox_app, ["status", "--db", outbox.url, "--table", outbox.table])
    assert 0 == shown.exit_code
    assert "lag_events" in shown.stdout
    assert " 2" in shown.stdout.split("lag_events", 1)[1].splitlines()[0]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["init", "--db", "oracle://x/y"], 2, "is not supported"),
        (["init", "--db", "sqlite:///x.db", "--table", "drop table"], 2, "not a plain identifier"),
        (["status", "--db", "postgresql://u:pw@127.0.0.1:1/x"], 1, "cannot connect to PostgreSQL"),
        (["status", "--db", "sqlite:///x.db", "-o", "yaml"], 2, "is not table or json"),
    ],
)
def test_errors_are_one_line_with_an_exit_code(
    args: list[str], code: int, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad URLs, names and unreachable databases give one line on stderr, no traceback."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(outbox_app, args)
    assert code == result.exit_code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "pw@" not in result.stderr


def test_status_of_a_table_that_is_not_there_says_to_create_it(outbox: OutboxDB) -> None:
    """status on a database without that outbox table (a typo in --table) is one line naming
    the table and the init command to run, exit 1, on every database; no driver traceback."""
    result = runner.invoke(outbox_app, ["status", "--db", outbox.url, "--table", "no_such_box"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert (1, 1) == (result.exit_code, len(lines)), result.stderr
    assert "has no outbox table 'no_such_box'" in lines[0]
    assert lines[0].endswith(f"run: choreo outbox init --db {outbox.url} --table no_such_box")


def test_relay_of_a_table_that_is_not_there_stops_at_once(outbox: OutboxDB) -> None:
    """relay with a --table typo exits 1 with the init command on every database, instead of
    following the MySQL binlog for a table that never gets a row."""
    relay = subprocess.run(
        [sys.executable, "-m", "choreo", "outbox", "relay", "--db", outbox.url,
         "--table", "no_such_box", "--broker", "memory://relay"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    lines = relay.stderr.strip().splitlines()
    assert (1, 1) == (relay.returncode, len(lines)), relay.stderr
    assert lines[0].endswith(f"run: choreo outbox init --db {outbox.url} --table no_such_box")
