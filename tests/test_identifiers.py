"""Identifier checks accept the whole name and nothing after it: a trailing newline (which a
``$`` at the end of a regex lets through) is refused everywhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from broker import Event
from broker.context import new_traceparent
from broker.sqlstore import SqlStore
from connectors.dburl import check_identifier
from connectors.errors import OutboxConfigError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("broker", "schemas", "connectors", "saga_monitor", "choreo", "devservers")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_an_extension_name_with_a_newline_is_refused() -> None:
    """Event extensions must be lower-case letters and digits, with no newline after them."""
    with pytest.raises(ValueError, match="extension name"):
        Event(type="t", source="s", extensions={"tenant\n": "x"})


def test_a_traceparent_with_a_newline_starts_a_new_trace() -> None:
    """A traceparent with a trailing newline is not continued (it could split a header)."""
    assert TRACE in new_traceparent(f"00-{TRACE}-00f067aa0ba902b7-01")
    assert TRACE not in new_traceparent(f"00-{TRACE}-00f067aa0ba902b7-01\n")


def test_an_outbox_identifier_with_a_newline_is_refused() -> None:
    """Outbox table and slot names are plain identifiers, without a trailing newline."""
    assert "outbox" == check_identifier("outbox")
    with pytest.raises(OutboxConfigError, match="not a plain identifier"):
        check_identifier("outbox\n")


def test_store_table_prefix_and_schema_with_a_newline_are_refused() -> None:
    """A SQL store's table prefix and PostgreSQL schema are refused before connecting."""
    store = SqlStore("sqlite:///", what="test store", hint="sqlite:///", error=RuntimeError)
    with pytest.raises(RuntimeError, match="table prefix"):
        store.open("reg_\n", ())
    with pytest.raises(RuntimeError, match="not a plain name"):
        SqlStore(
            "postgresql://u@127.0.0.1:1/db?schema=public%0A", what="t", hint="", error=RuntimeError
        )


def _patterns(path: Path) -> list[tuple[int, str]]:
    """(line, pattern) of every string literal passed to re.compile/match/fullmatch/search."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "re"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_no_regex_in_the_code_base_ends_in_a_dollar() -> None:
    """Validators end in \\Z (or use fullmatch): ``$`` also matches before a final newline."""
    ending_in_dollar = [
        f"{path.relative_to(ROOT)}:{line}: {pattern}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, pattern in _patterns(path)
        if re.search(r"(?<!\\)\$\)*\Z", pattern)
    ]
    assert [] == ending_in_dollar
