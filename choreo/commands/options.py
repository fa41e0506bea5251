"""Options and checks shared by the commands: ``--broker``, ``--output``, topic names, ports,
and the metrics server.

The checks run before a command touches a broker, so a usage error never publishes or consumes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer

from broker.bus import Bus
from broker.names import TOPIC_RULE, is_portable_topic
from broker.observability import serve_metrics
from choreo.config import check_url, existing, setting
from choreo.console import fail
from choreo.errors import EXIT_FAILURE, EXIT_USAGE

__all__ = [
    "BrokerOption",
    "Output",
    "OutputChoiceOption",
    "OutputOption",
    "broker_url",
    "check_output",
    "check_topics",
    "open_bus",
    "port_option",
    "start_metrics",
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


def port_option(default: int | None, name: str, help: str) -> Any:
    """A TCP port option: Typer refuses anything outside 1..65535 as a usage error."""
    return typer.Option(default, name, min=1, max=65535, help=help)


def open_bus(broker: str | None, *, reading: bool = False, **options: Any) -> Bus:
    """A Bus on ``--broker``, else the configured or default broker URL. ``reading``: the
    command only reads what is there, so an embedded broker file that does not exist is an
    error (exit 1) rather than a new empty broker."""
    return Bus(broker_url(broker, reading=reading), **options)


def broker_url(broker: str | None, *, reading: bool = False) -> str:
    """The broker URL of ``--broker`` (else configured, else the default); with ``reading``, an
    embedded broker file must exist (see :func:`open_bus`)."""
    url = check_url(setting("broker_url", broker), "the --broker URL")
    if reading:
        existing(url, "broker", _READING_HINT)
    return url


_READING_HINT = (
    "check --broker (or CHOREO_BROKER_URL): give the URL your services publish to; "
    "the embedded broker's file is created by the first choreo publish or subscribe"
)


def check_output(output: str) -> None:
    """Refuse an ``--output`` other than table or json (a usage error)."""
    if output not in ("table", "json"):
        fail(f"--output must be table or json, not {output!r}", EXIT_USAGE)


def check_topics(*topics: str | None, what: str = "topic", portable: bool = False) -> None:
    """Refuse an empty or blank topic name (a usage error); ``None`` is an omitted one. With
    ``portable``, also a name some backend would refuse (a topic choreograph writes to on its
    own account, which must work on every broker: :mod:`broker.names`)."""
    for topic in topics:
        if topic is not None and not topic.strip():
            fail(f"a {what} name cannot be empty; name the topic", EXIT_USAGE)
        if portable and topic is not None and not is_portable_topic(topic):
            fail(
                f"{what} {topic!r} is not a topic name every broker takes; use {TOPIC_RULE}",
                EXIT_USAGE,
            )


def start_metrics(port: int | None, host: str = "127.0.0.1") -> None:
    """Serve Prometheus metrics on ``host:port`` (nothing when ``port`` is None); a port that
    cannot be bound (in use, not allowed) exits 1 with one line, before anything is consumed."""
    if port is None:
        return
    try:
        serve_metrics(port, host=host)
    except OSError as exc:
        fail(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; "
            "choose another --metrics-port",
            EXIT_FAILURE,
        )
