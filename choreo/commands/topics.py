"""``choreo topics ls|create``: list topics with their counts and groups, create one."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from choreo.commands.options import (
    BrokerOption,
    OutputOption,
    check_output,
    check_topics,
    open_bus,
)
from choreo.console import committed, out_console, print_json, run

__all__ = ["topics_app"]

topics_app = typer.Typer(help="List and create topics.", no_args_is_help=True)


@topics_app.command("ls")
def topics_ls(broker: str | None = BrokerOption, output: str = OutputOption) -> None:
    """List topics with their event counts and groups."""
    check_output(output)

    async def go() -> list[Any]:
        async with open_bus(broker, reading=True) as bus:
            return await bus.topics()

    infos = run(go())
    if output == "json":
        print_json(
            [
                {
                    "name": t.name,
                    "messages": t.messages,
                    "partitions": t.partitions,
                    "groups": list(t.groups),
                }
                for t in infos
            ]
        )
        return
    table = Table("topic", "events", "partitions", "groups")
    for info in infos:
        table.add_row(info.name, _num(info.messages), _num(info.partitions), ", ".join(info.groups))
    out_console.print(table)


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


@topics_app.command("create")
def topics_create(
    topic: str = typer.Argument(...),
    partitions: int | None = typer.Option(None, "--partitions", "-p", min=1, max=100_000),
    broker: str | None = BrokerOption,
) -> None:
    """Create a topic (idempotent)."""
    check_topics(topic)

    async def go() -> None:
        async with open_bus(broker) as bus:
            await bus.create_topic(topic, partitions=partitions)

    run(go())
    with committed():
        out_console.print(f"topic {topic} ready")
