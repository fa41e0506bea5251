"""Shared command-line plumbing: one-line errors, durations, JSON output.

Every command in :mod:`choreo.commands` uses these so that all commands fail the same way: one
red line on stderr naming the thing and the fix, exit code 1 for an operational failure and 2 for
a usage error (:mod:`choreo.errors` decides which), never a traceback for a user mistake.

User data is never markup: neither console reads Rich markup or emoji codes, so a string (a
topic, a type, an id, a table cell) is always shown as it is, and ``a[/]b`` can neither crash
the output nor restyle it. Style comes only from :class:`rich.text.Text` objects built here in
the code (``Text.assemble(("error:", "bold red"), " ", message)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console, ConsoleDimensions
from rich.text import Text

from choreo import errors

__all__ = [
    "committed",
    "err_console",
    "fail",
    "out_console",
    "parse_duration",
    "print_error",
    "print_json",
    "reported",
    "run",
    "shown",
    "warn",
]


#: The width of what a command prints to a pipe or a file (see :attr:`_Console.size`).
PIPE_WIDTH = 250


class _Console(Console):
    """A console that reads no markup or emoji codes (``app:bus:`` or a topic is text), and
    whose reaction to a closed pipe (Rich's own: drop the output and exit 1) is only to drop the
    output inside :func:`committed`."""

    def __init__(self, *, stderr: bool = False) -> None:
        super().__init__(stderr=stderr, highlight=False, soft_wrap=True, markup=False, emoji=False)
        self.keep_exit_code = False

    @property
    def size(self) -> ConsoleDimensions:
        """Rich's size, but at least :data:`PIPE_WIDTH` columns wide when writing to a pipe or
        a file with no ``COLUMNS`` set (Rich takes 80 there, or the width of a terminal on
        another stream): no table cell is cut to "…" in what ``| grep`` or ``> file`` gets."""
        size = super().size
        if self._width is None and "COLUMNS" not in self._environ and not self.is_terminal:
            return ConsoleDimensions(max(size.width, PIPE_WIDTH), size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]

    def on_broken_pipe(self) -> None:
        if not self.keep_exit_code:
            super().on_broken_pipe()
        self.quiet = True
        _drop_stdout()


err_console = _Console(stderr=True)
out_console = _Console()

T = TypeVar("T")

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
#: The longest duration an option takes: 100 years (a date that far away is still a date).
MAX_DURATION_DAYS = 36_500


def fail(message: str, code: int = errors.EXIT_FAILURE) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    print_error(message)
    raise typer.Exit(code)


def print_error(message: str) -> None:
    """Print ``error: message`` on stderr (the message is plain text, never markup)."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message))


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr (plain text, never markup)."""
    err_console.print(Text.assemble(("warning:", "bold yellow"), " ", message))


def parse_duration(text: str, *, option: str = "duration") -> float:
    """Seconds from ``100ms``, ``30s``, ``5m``, ``2h``, ``1d`` or a bare number of seconds."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise typer.BadParameter(
            f"{text!r} is not a duration for {option}; use e.g. 100ms, 30s, 5m, 2h or 1d"
        )
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_DURATION_DAYS * _UNIT_SECONDS["d"]:
        raise typer.BadParameter(f"{option} {text!r} is longer than {MAX_DURATION_DAYS}d")
    return seconds


def parse_instant(text: str, *, option: str = "time") -> datetime:
    """An aware datetime from an RFC 3339 time with a zone, e.g. ``2026-12-01T09:00:00Z``."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or moment.utcoffset() is None:
        raise typer.BadParameter(
            f"{text!r} is not a time with a zone for {option}; use RFC 3339, e.g. "
            "2026-12-01T09:00:00Z or 2026-12-01T10:00:00+01:00"
        )
    return moment


def print_json(value: Any) -> None:
    """Write ``value`` as JSON on stdout (no Rich markup, safe for pipes)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def committed() -> Iterator[None]:
    """Around the output that follows a durable change (a publish, a replay, a purge).

    The change is done, so the exit code must say so: a failure to show it (a closed pipe)
    must not turn into an error that makes a retrying script do it twice. Output that cannot
    be written is dropped, and so is anything written to stdout after it.
    """
    out_console.keep_exit_code = True
    try:
        yield
    except (OSError, UnicodeError):
        _drop_stdout()
    finally:
        out_console.keep_exit_code = False


@contextmanager
def shown() -> Iterator[None]:
    """Around a listing (``saga ls``, ``show``, ``owes``): a reader that stops reading (``|
    head -1``) got what it wanted, so the command exits 0, as after :func:`committed` (only
    the writing goes in here, never the work: an error of the work keeps its exit code)."""
    with committed():
        yield


def _drop_stdout() -> None:
    """Send whatever is still written to stdout to the null device (its reader has gone)."""
    with contextlib.suppress(OSError, ValueError):  # not a real file (a test's capture)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


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
