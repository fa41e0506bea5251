"""The ``choreo`` command: mounts each package's commands on one Typer app.

Exit codes: 0 success, 1 operational failure, 2 usage error.
"""

from __future__ import annotations

import importlib
import logging
import os

import typer

from broker import cli as broker_cli
from broker.observability import configure_logging

__all__ = ["app", "main"]

app = typer.Typer(
    name="choreo",
    help="choreograph: CloudEvents pub/sub, schema registry, outbox relays and saga monitor.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.command("publish")(broker_cli.publish)
app.command("subscribe")(broker_cli.subscribe)
app.add_typer(broker_cli.topics_app, name="topics")
app.add_typer(broker_cli.dlq_app, name="dlq")

# Sub-applications of the other packages: (module, attribute, command name).
_MOUNTS = (
    ("schemas.cli", "schema_app", "schema"),
    ("schemas.cli", "registry_app", "registry"),
    ("connectors.cli", "outbox_app", "outbox"),
    ("saga_monitor.cli", "saga_app", "saga"),
)

for _module, _attribute, _name in _MOUNTS:
    try:
        _sub = getattr(importlib.import_module(_module), _attribute)
    except ModuleNotFoundError as _exc:  # a package still being built: leave it out
        if _exc.name != _module:
            raise
        continue
    app.add_typer(_sub, name=_name)


@app.command("demo")
def demo(
    broker: str | None = typer.Option(
        None, "--broker", "-b", help="Broker URL (default embedded)."
    ),
    orders: int = typer.Option(200, "--orders", "-n", help="How many orders to run."),
    workdir: str = typer.Option(".choreo/demo", "--dir", help="Where the demo keeps its files."),
) -> None:
    """Run an order-fulfilment choreography end to end and show what happened."""
    from choreo.demo import run_demo

    run_demo(broker=broker, orders=orders, workdir=workdir)


# Client libraries log connection trouble themselves; the CLI reports it as one line of its own.
_CLIENT_LOGGERS = ("aiokafka", "aio_pika", "aiormq", "nats", "pymysqlreplication")


def main() -> None:
    """Console-script entry point."""
    configure_logging()
    if os.environ.get("CHOREO_LOG_LEVEL", "").upper() != "DEBUG":
        for name in _CLIENT_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    app()
