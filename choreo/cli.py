"""The ``choreo`` command: mounts the commands of :mod:`choreo.commands` on one Typer app.

Exit codes: 0 success, 1 operational failure, 2 usage error (see :mod:`choreo.errors`).
"""

from __future__ import annotations

import io
import logging
import os
import sys

import typer

from broker.observability import configure_logging
from choreo.commands.asyncapi import asyncapi_app
from choreo.commands.demo import demo
from choreo.commands.dlq import dlq_app
from choreo.commands.outbox import outbox_app
from choreo.commands.pubsub import publish, subscribe
from choreo.commands.registry import registry_app
from choreo.commands.request import request
from choreo.commands.saga import saga_app
from choreo.commands.schema import schema_app
from choreo.commands.topics import topics_app
from choreo.console import print_error
from choreo.errors import EXIT_USAGE

__all__ = ["app", "main"]

app = typer.Typer(
    name="choreo",
    help="choreograph: CloudEvents pub/sub, schema registry, outbox relays and saga monitor.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.command("publish")(publish)
app.command("subscribe")(subscribe)
app.command("request")(request)
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
app.add_typer(schema_app, name="schema")
app.add_typer(registry_app, name="registry")
app.add_typer(outbox_app, name="outbox")
app.add_typer(saga_app, name="saga")
app.add_typer(asyncapi_app, name="asyncapi")
app.command("demo")(demo)

# Client libraries log connection trouble themselves; the CLI reports it as one line of its own.
_CLIENT_LOGGERS = ("aiokafka", "aio_pika", "aiormq", "nats", "pymysqlreplication")


def main() -> None:
    """Console-script entry point."""
    configure_logging()
    if os.environ.get("CHOREO_LOG_LEVEL", "").upper() != "DEBUG":
        for name in _CLIENT_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    for stream in (sys.stdout, sys.stderr):  # a terminal that cannot show a character: \uXXXX
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    _refuse_undecodable(sys.argv[1:])
    raise SystemExit(_run())


def _run() -> int:
    """Run the app; a usage mistake Click finds (a bad value, an unknown option, a missing
    argument) is one line naming the command and what to do, like every other CLI error."""
    try:
        outcome = app(standalone_mode=False)
    except _USAGE_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `choreo saga`: its help was shown
            return EXIT_USAGE
        command = exc.ctx.command_path if exc.ctx is not None else "choreo"
        message = " ".join(exc.format_message().split()).rstrip(".")
        message = message.replace(": Value error, ", ": ")  # Typer's validator, not the user's
        print_error(f"{command}: {message}; see '{command} --help'")
        return EXIT_USAGE
    except _CLICK_EXCEPTION as exc:
        print_error(" ".join(exc.format_message().split()))
        return exc.exit_code
    except typer.Abort:
        print_error("aborted")
        return 1
    return outcome if isinstance(outcome, int) else 0


def _click_class(name: str) -> type[typer.BadParameter]:
    """One of the Click exceptions Typer raises (its own copy of Click in recent versions),
    found through the public ``typer.BadParameter`` rather than a private module."""
    found: type[typer.BadParameter] = next(
        c for c in typer.BadParameter.__mro__ if c.__name__ == name
    )
    return found


_USAGE_ERROR = _click_class("UsageError")
_CLICK_EXCEPTION = _click_class("ClickException")


def _refuse_undecodable(arguments: list[str]) -> None:
    """Exit 2 when an argument is not valid UTF-8 (Python keeps such bytes as lone surrogates,
    which no event, topic or URL can carry)."""
    for position, argument in enumerate(arguments, start=1):
        try:
            argument.encode("utf-8")
        except UnicodeEncodeError:
            shown = argument.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            print_error(f"argument {position} ({shown}) is not valid UTF-8; pass UTF-8 text")
            raise SystemExit(EXIT_USAGE) from None
