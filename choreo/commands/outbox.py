"""``choreo outbox``: create the outbox, run a relay, show its status.

choreo outbox init   --db URL [--table T] [--slot NAME] [--payload-type json|text|bytes]
choreo outbox relay  --db URL --broker URL [--slot NAME] [--table T] [--route TEMPLATE]
                     [--metrics-port N]
choreo outbox status --db URL [--table T] [--slot NAME] [--output table|json]
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from choreo.commands.options import check_topics, port_option, start_metrics
from choreo.config import check_url, setting
from choreo.console import fail, out_console, print_json, run
from choreo.errors import EXIT_USAGE
from connectors.outbox_table import DEFAULT_SLOT, DEFAULT_TABLE
from connectors.routing import DEFAULT_DLQ_TOPIC, DEFAULT_ROUTE

__all__ = ["outbox_app"]

outbox_app = typer.Typer(
    help="Transactional outbox: create the table, relay committed events, show lag.",
    no_args_is_help=True,
)

DbOption = typer.Option(
    ...,
    "--db",
    envvar="CHOREO_OUTBOX_DB",
    help="postgresql://..., mysql://user@host:3306/db or sqlite:///app.db",
)
TableOption = typer.Option(DEFAULT_TABLE, "--table", help="Outbox table name.")
SlotOption = typer.Option(DEFAULT_SLOT, "--slot", help="PostgreSQL replication slot.")
NameOption = typer.Option(None, "--name", help="Relay name (MySQL/SQLite position key).")


@outbox_app.command("init")
def init(
    db: str = DbOption,
    table: str = TableOption,
    slot: str = SlotOption,
    payload_type: str = typer.Option("json", "--payload-type", help="json, text or bytes."),
) -> None:
    """Create the outbox table and what CDC needs (publication and slot on PostgreSQL)."""
    from connectors.outbox_table import init_outbox

    if payload_type not in ("json", "text", "bytes"):
        fail(f"--payload-type {payload_type!r} is not json, text or bytes", EXIT_USAGE)

    async def go() -> Any:
        return init_outbox(check_url(db, "the --db URL"), table, slot=slot, payload=payload_type)  # type: ignore[arg-type]

    report = run(go())
    out_console.print(f"outbox ready on {report.database}: " + ", ".join(report.created))


@outbox_app.command("relay")
def relay(
    db: str = DbOption,
    broker: str | None = typer.Option(None, "--broker", "-b", help="Broker URL."),
    slot: str = SlotOption,
    table: str = TableOption,
    name: str | None = NameOption,
    route: str = typer.Option(DEFAULT_ROUTE, "--route", help="Topic template."),
    source: str | None = typer.Option(None, "--source", help="CloudEvents source."),
    dlq_topic: str = typer.Option(DEFAULT_DLQ_TOPIC, "--dlq-topic", help="Topic for bad rows."),
    payload_format: str = typer.Option("json", "--payload-format", help="json, text or bytes."),
    correlation_field: str | None = typer.Option(
        None, "--correlation-field", help="Payload path of the correlation id, e.g. orderId."
    ),
    binary: bool = typer.Option(False, "--binary", help="pgoutput binary tuple data."),
    resume: str = typer.Option(
        "position", "--resume", help="MySQL: resume by binlog position or by (MariaDB) gtid."
    ),
    metrics_port: int | None = port_option(None, "--metrics-port", "Serve /metrics."),
) -> None:
    """Stream committed outbox rows to the broker until SIGTERM (Ctrl-C)."""
    from connectors.runtime import build_relay, run_relay

    check_topics(dlq_topic, what="--dlq-topic")
    if payload_format not in ("json", "text", "bytes"):
        fail(f"--payload-format {payload_format!r} is not json, text or bytes", EXIT_USAGE)
    if resume not in ("position", "gtid"):
        fail(f"--resume {resume!r} is not position or gtid", EXIT_USAGE)

    broker_url = setting("broker_url", broker)

    async def go() -> Any:
        relay = build_relay(
            check_url(db, "the --db URL"),
            broker_url,
            table=table,
            slot=slot,
            name=name,
            route=route,
            source=source,
            dlq_topic=dlq_topic,
            payload_format=payload_format,  # type: ignore[arg-type]
            correlation_field=correlation_field,
            binary=binary,
            resume=resume,  # type: ignore[arg-type]
        )
        start_metrics(metrics_port)
        return await run_relay(relay)

    stats = run(go())
    out_console.print(
        f"relay stopped: {stats.relayed} relayed, {stats.dead_lettered} dead-lettered, "
        f"{stats.publish_errors} publish retries"
    )


@outbox_app.command("status")
def status(
    db: str = DbOption,
    table: str = TableOption,
    slot: str = SlotOption,
    name: str | None = NameOption,
    output: str = typer.Option("table", "--output", "-o", help="table or json."),
) -> None:
    """Show the relay's position, lag in events and seconds, and slot health."""
    from connectors.runtime import outbox_status

    if output not in ("table", "json"):
        fail(f"--output {output!r} is not table or json", EXIT_USAGE)

    async def go() -> dict[str, Any]:
        return outbox_status(check_url(db, "the --db URL"), table=table, slot=slot, name=name)

    info = run(go())
    if output == "json":
        print_json(info)
        return
    grid = Table(show_header=False, box=None)
    for key, value in info.items():
        grid.add_row(Text(key, style="bold"), "-" if value is None else str(value))
    out_console.print(grid)
