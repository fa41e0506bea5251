"""Options shared by the commands: the broker commands' ``--broker`` and ``--output``, and the
``--output`` choice of the registry and saga commands."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer

from broker.bus import Bus
from choreo.config import setting
from choreo.console import fail
from choreo.errors import EXIT_USAGE

__all__ = [
    "BrokerOption",
    "Output",
    "OutputChoiceOption",
    "OutputOption",
    "check_output",
    "open_bus",
]

BrokerOption = typer.Option(
    None, "--broker", "-b", help="Broker URL (env CHOREO_BROKER_URL; default the embedded SQLite)."
)
OutputOption = typer.Option("table", "--output", "-o", help="table or json.")


class Output(StrEnum):
    """How listings are printed (a choice Typer checks itself)."""

    table = "table"
    json = "json"


OutputChoiceOption = typer.Option(Output.table, "--output", "-o", help="table or json.")


def open_bus(broker: str | None, **options: Any) -> Bus:
    """A Bus on ``--broker``, else the configured or default broker URL."""
    return Bus(setting("broker_url", broker), **options)


def check_output(output: str) -> None:
    """Refuse an ``--output`` other than table or json (a usage error)."""
    if output not in ("table", "json"):
        fail(f"--output must be table or json, not {output!r}", EXIT_USAGE)
