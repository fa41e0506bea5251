"""Shared command-line plumbing: one-line errors, durations, JSON output.

Every command in :mod:`choreo.commands` uses these so that all commands fail the same way: one
red line on stderr naming the thing and the fix, exit code 1 for an operational failure and 2 for
a usage error (:mod:`choreo.errors` decides which), never a traceback for a user mistake.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from choreo import errors

__all__ = [
    "err_console",
    "fail",
    "out_console",
    "parse_duration",
    "print_json",
    "reported",
    "run",
]

# emoji=False: a ``:name:`` in a message (``app:bus:``, a topic) is text, not an emoji code.
err_console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
out_console = Console(highlight=False, soft_wrap=True, emoji=False)

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def fail(message: str, code: int = errors.EXIT_FAILURE) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    raise typer.Exit(code)


def parse_duration(text: str, *, option: str = "duration") -> float:
    """Seconds from ``100ms``, ``30s``, ``5m``, ``2h``, ``1d`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise typer.BadParameter(
            f"{text!r} is not a duration for {option}; use e.g. 100ms, 30s, 5m, 2h or 1d"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def print_json(value: Any) -> None:
    """Write ``value`` as JSON on stdout (no Rich markup, safe for pipes)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def reported() -> Iterator[None]:
    """Inside, our errors become one line on stderr and their exit code; a bug keeps its
    traceback; Ctrl-C exits 130."""
    try:
        yield
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        code = errors.exit_code(exc)
        if code is None:
            raise
        fail(errors.message(exc), code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; our errors become one line and an exit code."""
    with reported():
        return asyncio.run(coro)
