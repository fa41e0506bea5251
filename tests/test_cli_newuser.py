"""Mistakes a new user makes while following the README, each one line that names the thing and
what to do, with the usage/operational exit code the README promises (2 / 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from choreo.cli import app

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    """Run the CLI; its exit code and its one line on stderr."""
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert 1 == len(lines), result.stderr
    return result.exit_code, lines[0]


@pytest.mark.parametrize("command", [["saga", "ls"], ["saga", "owes"], ["saga", "show", "o-1"]])
def test_an_unknown_saga_store_scheme_is_a_usage_error(command: list[str]) -> None:
    """A saga store URL with an unknown scheme exits 2, as the broker and registry URLs do."""
    code, line = invoke(*command, "--store", "mongo://x")
    assert (2, True) == (code, "unknown saga store URL 'mongo://x'; use sqlite:///" in line)


def test_an_unknown_broker_scheme_says_it_is_unknown_and_what_to_use(tmp_path: Path) -> None:
    """A scheme with no close match reads as a sentence: unknown, then the schemes to use."""
    code, line = invoke("topics", "ls", "--broker", "mongo://x")
    expected = "error: broker URL 'mongo://x' has an unknown scheme 'mongo'; use one of amqp://"
    assert (2, True) == (code, line.startswith(expected))


def test_an_unreachable_registry_names_the_fix_once(tmp_path: Path) -> None:
    """The hint to start a registry or set --registry is given once, not twice."""
    schema = tmp_path / "order.json"
    schema.write_text('{"type": "object"}')
    code, line = invoke("schema", "ls", "--registry", "http://127.0.0.1:1")
    assert (1, 1) == (code, line.count("choreo registry serve")), line


def test_an_incompatible_schema_is_one_line_naming_the_break_and_the_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registering a schema that breaks the level prints one line: the subject, the file, the
    level, what breaks (not every earlier schema in full), and the commands that help."""
    monkeypatch.chdir(tmp_path)
    Path("v1.json").write_text(
        '{"type": "object", "properties": {"orderId": {"type": "string"}}}\n'
    )
    Path("v2.json").write_text(
        '{"type": "object", "properties": {"orderId": {"type": "integer"}}}\n'
    )
    registry = f"sqlite:///{tmp_path}/registry.db"
    assert (
        0
        == runner.invoke(
            app,
            ["schema", "register", "o-value", "v1.json", "--type", "json", "--registry", registry],
        ).exit_code
    )
    code, line = invoke(
        "schema", "register", "o-value", "v2.json", "--type", "json", "--registry", registry
    )
    expected = (
        "error: o-value refuses v2.json under BACKWARD compatibility: TYPE_NARROWED "
        "#/properties/orderId/type: type 'string' is no longer accepted; "
        "details: choreo schema check o-value v2.json --type json; "
        "to change the level: choreo schema config o-value --level LEVEL"
    )
    assert (1, expected) == (code, line)


@pytest.mark.rabbitmq
def test_from_beginning_on_rabbitmq_says_to_leave_it_out(rabbitmq_url: str) -> None:
    """The README's --from-beginning on RabbitMQ, which keeps no log: exit 2 and what to do."""
    code, line = invoke(
        "subscribe",
        "orders",
        "--group",
        "billing",
        "--from-beginning",
        "--count",
        "1",
        "--timeout",
        "1s",
        "--broker",
        rabbitmq_url,
    )
    assert (2, True) == (code, "leave it out" in line and "--from-beginning" in line), line


@pytest.mark.parametrize(
    "command", [["saga", "ls"], ["saga", "owes"], ["saga", "show", "o-1"], ["saga", "ack", "o-1"]]
)
def test_a_saga_store_file_that_is_not_there_is_named_and_not_created(
    command: list[str], tmp_path: Path
) -> None:
    """A --store typo is one line naming the store, exit 1; no empty store (or folder) is
    made there, and the listing does not read as 'no saga instances'."""
    store = tmp_path / "typo" / "sagas.db"
    code, line = invoke(*command, "--store", f"sqlite:///{store}")
    assert (1, True) == (code, line.startswith(f"error: no saga store at sqlite:///{store}"))
    assert not store.parent.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["topics", "ls"],
        ["dlq", "ls"],
        ["dlq", "ls", "orders"],
        ["dlq", "show", "orders", "e-1"],
        ["dlq", "replay", "orders"],
        ["dlq", "purge", "orders"],
        ["saga", "discover", "--topic", "orders"],
    ],
)
def test_a_broker_file_that_is_not_there_is_named_and_not_created(
    command: list[str], tmp_path: Path
) -> None:
    """A command that only reads the embedded broker, given a --broker typo, says there is no
    broker there (exit 1) and creates neither the file nor its folder."""
    broker = tmp_path / "typo" / "broker.db"
    code, line = invoke(*command, "--broker", f"sqlite:///{broker}")
    expected = f"error: no broker at sqlite:///{broker} (no such file); check --broker"
    assert (1, True) == (code, line.startswith(expected)), line
    assert not broker.parent.exists()


@pytest.mark.parametrize(
    "command",
    [["schema", "ls"], ["schema", "show", "orders-value"], ["schema", "config"]],
)
def test_a_registry_file_that_is_not_there_is_named_and_not_created(
    command: list[str], tmp_path: Path
) -> None:
    """A command that only reads an embedded registry, given a --registry typo, says there is
    no registry there (exit 1) and creates neither the file nor its folder."""
    registry = tmp_path / "typo" / "registry.db"
    code, line = invoke(*command, "--registry", f"sqlite:///{registry}")
    expected = f"error: no schema registry at sqlite:///{registry} (no such file); check"
    assert (1, True) == (code, line.startswith(expected)), line
    assert not registry.parent.exists()


def test_schema_check_against_a_registry_file_that_is_not_there_creates_nothing(
    tmp_path: Path,
) -> None:
    """schema check reads the registry too: a --registry typo is named, nothing is created."""
    schema = tmp_path / "order.json"
    schema.write_text('{"type": "object"}')
    registry = tmp_path / "typo" / "registry.db"
    code, line = invoke("schema", "check", "o", str(schema), "--registry", f"sqlite:///{registry}")
    assert (1, True) == (
        code,
        line.startswith(f"error: no schema registry at sqlite:///{registry}"),
    )
    assert not registry.parent.exists()


@pytest.mark.parametrize(
    "command",
    [["publish", "orders", "--type", "order.placed"], ["topics", "create", "orders"]],
)
def test_commands_that_write_create_the_embedded_broker(command: list[str], tmp_path: Path) -> None:
    """publish and topics create make the embedded broker's file (and folder) by design, and
    the read-only listings then read it."""
    broker = f"sqlite:///{tmp_path}/new/broker.db"
    created = runner.invoke(app, [*command, "--broker", broker])
    listed = runner.invoke(app, ["topics", "ls", "--output", "json", "--broker", broker])
    assert (0, 0, ["orders"]) == (
        created.exit_code,
        listed.exit_code,
        [t["name"] for t in json.loads(listed.stdout)],
    )


def test_a_bad_choice_reads_without_the_validators_prefix() -> None:
    """A value outside an option's choices names the option and the choices, without the
    'Value error,' of the validator underneath."""
    ran = subprocess.run(
        [sys.executable, "-m", "choreo", "saga", "ls", "--output", "xml", "--store", "memory://"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    code, line = ran.returncode, ran.stderr.strip()
    expected = "saga ls: Invalid value for '--output' / '-o': 'xml' is not one of 'table', 'json';"
    assert (2, True) == (code, expected in line), line
