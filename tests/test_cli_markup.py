"""User data is never Rich markup: names, types, ids, sources, sagas and correlation ids that look
like markup (``a[/]b``, ``[bold]``, ``:smile:``) are printed as they are by every command, and a
publish that succeeded exits 0 whatever happens to its output."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker import Event
from choreo.cli import app
from saga_monitor import Correlator, open_saga_store, parse_definitions
from tests.test_cli import choreo_into_a_closed_pipe

runner = CliRunner()
HOSTILE = ("a[/]b", "[bold red]x[/bold red]", "[link=http://evil]y", ":smile:[/]")
SAGA = "[/]saga"


@pytest.fixture
def broker(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/broker.db"


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=stdin, env={"COLUMNS": "400"})
    return result.exit_code, result.stdout, result.stderr


def publish(broker: str, topic: str, name: str) -> tuple[int, str, str]:
    return invoke(
        "publish",
        topic,
        "--type",
        name,
        "--id",
        name,
        "--source",
        name,
        "--correlation-id",
        name,
        "--data",
        json.dumps(name),
        "--broker",
        broker,
    )


def topic_counts(broker: str) -> dict[str, int]:
    code, out, err = invoke("topics", "ls", "--output", "json", "--broker", broker)
    assert 0 == code, err
    return {t["name"]: t["messages"] for t in json.loads(out)}


@pytest.mark.parametrize("name", HOSTILE)
def test_publish_prints_hostile_names_as_text_and_stores_once(broker: str, name: str) -> None:
    """A publish whose topic, type and id look like markup exits 0, says so literally, once."""
    code, out, err = publish(broker, name, name)
    assert (0, "") == (code, err)
    assert f"published {name} {name} to {name}" == out.strip()
    assert {name: 1} == topic_counts(broker)


@pytest.mark.parametrize("name", HOSTILE)
def test_listings_show_hostile_names_as_text(broker: str, name: str) -> None:
    """topics ls, subscribe (and its line on a failed handler), dlq ls and dlq show print
    markup-like names as they are."""
    assert 0 == publish(broker, name, name)[0]
    listed = invoke("topics", "ls", "--broker", broker)
    assert (0, True) == (listed[0], name in listed[1]), listed
    read = invoke(
        "subscribe", name, "--from-beginning", "--count", "1", "--timeout", "20s",
        "--exec", "false", "--max-attempts", "1", "--broker", broker,
    )  # fmt: skip
    assert (1, True) == (read[0], f"dead-letter topic {name}.dlq;" in read[2]), read
    dead = invoke("dlq", "ls", "--broker", broker)
    assert (0, True) == (dead[0], name in dead[1]), dead
    shown = invoke("dlq", "show", name, name, "--broker", broker)
    assert (0, name) == (shown[0], json.loads(shown[1])["type"]), shown
    missing = invoke("dlq", "show", name, f"{name}-nope", "--broker", broker)
    assert (1, True) == (missing[0], f"no dead letter {name + '-nope'!r}" in missing[2]), missing


def test_subscribe_table_prints_hostile_events_as_text(broker: str) -> None:
    """The default subscribe output shows a markup-like type, id, source and data literally."""
    name = HOSTILE[0]
    assert 0 == publish(broker, "t", name)[0]
    code, out, err = invoke(
        "subscribe", "t", "--from-beginning", "--count", "1", "--timeout", "20s", "--broker", broker
    )
    assert (0, "") == (code, err)
    assert f"{name} {name} {name} {json.dumps(name)}" in out


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """A saga store with one instance of a saga named ``[/]saga``, correlation id ``a[/]b``."""
    definitions = parse_definitions(
        f"sagas:\n  - name: '{SAGA}'\n    start: ['[bold]placed']\n    complete: [done]\n"
    )
    url = f"sqlite:///{tmp_path}/sagas.db"
    store = open_saga_store(url)
    event = Event(
        type="[bold]placed",
        source=":smile:[/]",
        data={"note": "[/]"},
        extensions={"correlationid": HOSTILE[0]},
    )
    Correlator(definitions).apply(store, event, topic="t", now=datetime.now(UTC))
    store.close()
    return url


def test_saga_ls_and_show_print_hostile_names_as_text(store_url: str) -> None:
    """saga ls and saga show print a markup-like saga, correlation id, type and source."""
    listed = invoke("saga", "ls", "--store", store_url)
    assert (0, True, True) == (listed[0], SAGA in listed[1], HOSTILE[0] in listed[1]), listed
    shown = invoke("saga", "show", HOSTILE[0], "--store", store_url)
    assert 0 == shown[0], shown
    assert all(text in shown[1] for text in (SAGA, HOSTILE[0], "[bold]placed", ":smile:[/]"))
    missing = invoke("saga", "show", "[/]nope", "--store", store_url)
    assert (1, True) == (missing[0], "'[/]nope'" in missing[2]), missing


@pytest.mark.parametrize("output", ["table", "json"])
def test_a_publish_whose_output_cannot_be_written_still_exits_0(
    tmp_path: Path, broker: str, output: str
) -> None:
    """The event is stored before anything is printed: a closed stdout does not make it exit 1
    (which would make a retrying script publish twice)."""
    args = ["publish", "t", "--type", "x", "--output", output, "--broker", broker]
    result = choreo_into_a_closed_pipe(*args, cwd=tmp_path)
    assert (0, "") == (result.returncode, result.stderr)
    assert {"t": 1} == topic_counts(broker)
