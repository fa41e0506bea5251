"""Hypothesis fuzzes the CLI's argument parsing: hostile strings (markup, newlines, NUL, unicode,
huge and negative numbers, empty strings, unknown flags) in the arguments of publish, subscribe,
topics, dlq, schema, saga and outbox, run against an embedded broker in a temporary folder.

Whatever the arguments: no traceback, an exit code of 0, 1 or 2, no password in the output, and
a usage error (exit 2) publishes nothing. Commands that serve or run until stopped (``registry
serve``, ``saga serve|monitor``, ``outbox relay``) are left out, and so are values that would
make ``subscribe`` wait for long (a long ``--timeout`` or retry delay is valid input).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import typer.main
import typer.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from typer.testing import CliRunner

from choreo.cli import app

runner = CliRunner()
SECRET = "s3cret"
HOSTILE = (
    "",
    " ",
    "a[/]b",
    "[bold]x",
    "[/]",
    ":smile:",
    "t\n",
    "\n",
    "\x00",
    "a\x00b",
    "über",
    "😀",
    "\u202e",
    "-",
    "--",
    "--nope",
    "-x",
    "x" * 300,
    "${HOME}",
    "'unterminated",
    '{"a": 1}',
    "@-",
    "@/no/such/file",
    "{aggregatetype:d}",
    "%s%n",
)
NUMBERS = ("0", "-1", "1", "2", "99999999999999999999999", "-99999999999999999999", "1e3", "")
# Durations that end quickly, or do not parse: a valid long one would make subscribe wait.
DURATIONS = ("10ms", "0.05s", "0", "-1", "-5s", "1e3", "99999999999999999999999d", "36501d", "[/]")

text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=12))
number = st.one_of(st.sampled_from(NUMBERS), st.integers(-(10**25), 10**25).map(str))
duration = st.one_of(st.sampled_from(DURATIONS), st.sampled_from(HOSTILE))
unknown_flag = st.sampled_from(("--nope", "-z", "--[/]", "--count=", "--type"))


def option(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    """Mostly nothing, else ``name value``."""
    return st.one_of(st.just([]), st.just([]), values.map(lambda value: [name, value]))


def mostly(valid: tuple[str, ...], hostile: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A valid value two times out of three, else a hostile one."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), hostile)


topic = mostly(("t", "orders", "t.dlq"), text)


def command(*parts: Any) -> st.SearchStrategy[list[str]]:
    """An argument list: fixed words, then each part (a strategy of one argument or a list)."""

    def flatten(drawn: tuple[Any, ...]) -> list[str]:
        out: list[str] = []
        for item in drawn:
            out.extend(item if isinstance(item, list) else [item])
        return out

    return st.tuples(*(p if isinstance(p, st.SearchStrategy) else st.just(p) for p in parts)).map(
        flatten
    )


def commands(tmp: Path) -> st.SearchStrategy[list[str]]:
    """The argument lists the fuzz test runs (the broker, registry and stores in ``tmp``)."""
    broker = option("--broker", broker_urls(tmp))  # none: the default, which the test sets
    registry = ["--registry", f"sqlite:///{tmp}/registry.db"]
    store = ["--store", f"sqlite:///{tmp}/sagas.db"]
    db = f"sqlite:///{tmp}/app.db"
    return st.one_of(
        command(
            "publish",
            topic,
            "--type",
            mostly(("order.placed", "a[/]b"), text),
            option("--data", mostly(('{"n": 1}', '"[/]"', "null", '{"a": "\\u0000"}'), text)),
            option("--id", text),
            option("--source", text),
            option("--key", text),
            option("--correlation-id", text),
            option("--ttl", mostly(("30s", "1h"), duration)),
            option("--header", mostly(("tenant=acme", "x=[/]", "y="), text)),
            option("--subject", text),
            option("--output", mostly(("json", "table"), text)),
            broker,
        ),
        command(
            "subscribe",
            # first: a topic of "--" makes every word after it a topic (no timeout: no end)
            "--timeout",
            duration,
            topic,
            option("--group", text),
            "--from-beginning",
            option("--count", mostly(("1", "2"), number)),
            option("--exec", st.sampled_from(("/no/such/cmd", "'bad", "", " ", "/", "true"))),
            option("--max-attempts", mostly(("1", "2"), number)),
            option("--retry-delay", duration),
            option("--metrics-port", st.sampled_from(("0", "-1", "99999", "http", ""))),
            option("--output", mostly(("json", "table"), text)),
            broker,
        ),
        command("topics", "ls", option("--output", text), broker),
        command("topics", "create", topic, option("--partitions", number), broker),
        command("dlq", "ls", st.one_of(st.just([]), topic), option("--limit", number), broker),
        command("dlq", "show", topic, text, broker),
        command("dlq", "replay", topic, option("--id", text), broker),
        command("dlq", "replay", topic, option("--to", text), option("--since", text), broker),
        command("dlq", "purge", topic, option("--id", text), broker),
        command("dlq", "purge", topic, option("--group", text), option("--before", text), broker),
        command("dlq", "groups", topic, option("--by", text), option("--reason", text), broker),
        command("schema", "ls", *registry),
        command("schema", "show", text, option("--version", text), *registry),
        command("schema", "register", text, text, *registry),
        command("schema", "config", text, option("--level", text), *registry),
        command("saga", "ls", option("--saga", text), option("--state", text), *store),
        command("saga", "ls", option("--since", duration), option("--limit", number), *store),
        command("saga", "show", text, option("--saga", text), *store),
        command("saga", "discover", "-t", topic, option("--since", duration), broker),
        command("outbox", "init", "--db", db, option("--table", text), option("--slot", text)),
        command("outbox", "status", "--db", db, option("--table", text)),
        command(st.sampled_from(("publish", "subscribe", "topics", "dlq")), unknown_flag, topic),
        command(st.sampled_from(("schema", "saga", "outbox")), text, unknown_flag),
    )


def broker_urls(tmp: Path) -> st.SearchStrategy[str]:
    """Mostly the embedded broker in ``tmp``; sometimes a URL that cannot work."""
    good = f"sqlite:///{tmp}/b.db"
    bad = (
        f"amqp://guest:{SECRET}@127.0.0.1:notaport/",
        f"amqp://guest:{SECRET}@[bad/",
        "nope://x",
        "kafak://h:1",
        "[/]",
        f"sqlite:///{tmp}/file-not-dir/x/b.db",
    )
    return st.one_of(st.just(good), st.just(good), st.just(good), st.sampled_from(bad))


def events_by_topic(tmp: Path) -> dict[str, int]:
    """Events per topic on the embedded broker in ``tmp`` (none when it was never created)."""
    if not (tmp / "b.db").exists():
        return {}
    result = runner.invoke(app, ["topics", "ls", "-o", "json", "--broker", f"sqlite:///{tmp}/b.db"])
    assert 0 == result.exit_code, result.output
    return {t["name"]: t["messages"] for t in json.loads(result.stdout)}


def test_no_arguments_crash_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hostile argument lists end with exit 0, 1 or 2, one of our lines and no traceback; a
    usage error publishes nothing."""
    set_hypothesis_home_dir(str(tmp_path / ".hypothesis"))
    # CliRunner.invoke rebuilds the Click command tree from the Typer app on every call (3/4 of
    # this test's time); build it once, as one `choreo` process does.
    monkeypatch.setattr(typer.testing, "_get_command", functools.cache(typer.main.get_command))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHOREO_BROKER_URL", f"sqlite:///{tmp_path}/b.db")
    (tmp_path / "file-not-dir").write_text("a file where a folder is expected")
    runner.invoke(app, ["publish", "t", "--type", "seed"])
    seen: dict[str, int] = {}

    @given(args=commands(tmp_path))
    @settings(
        max_examples=500,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(args: list[str]) -> None:
        before = events_by_topic(tmp_path)
        result = runner.invoke(app, args, env={"COLUMNS": "200"})
        shown = f"{args}: exit {result.exit_code}\n{result.output}"
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        assert not crashed, f"{shown}\n{result.exception!r}"
        assert "Traceback" not in result.output, shown
        assert result.exit_code in (0, 1, 2), shown
        assert SECRET not in result.output, shown
        if result.exit_code == 2:
            assert before == events_by_topic(tmp_path), shown
        seen[str(result.exit_code)] = seen.get(str(result.exit_code), 0) + 1

    fuzz()
    assert {"0", "1", "2"} == set(seen), seen  # the fuzz reached successes and both failures
