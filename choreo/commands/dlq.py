"""``choreo dlq ls|show|replay|purge``: inspect, replay and purge dead letters."""

from __future__ import annotations

import json
import shlex
import sys

import typer
from rich.table import Table

from broker.envelope import Event
from broker.errors import TopicNotFoundError
from choreo.commands.options import (
    BrokerOption,
    OutputOption,
    check_output,
    check_topics,
    open_bus,
)
from choreo.console import committed, fail, out_console, print_json, run

__all__ = ["dlq_app"]

dlq_app = typer.Typer(help="Inspect, replay and purge dead letters.", no_args_is_help=True)


def _dlq_name(topic: str) -> str:
    # TODO(arch-broker): use broker's dead-letter naming
    return topic if topic.endswith(".dlq") else f"{topic}.dlq"


@dlq_app.command("ls")
def dlq_ls(
    topic: str | None = typer.Argument(None, help="Topic (or its .dlq); all DLQs if omitted."),
    limit: int = typer.Option(100, "--limit", min=1, max=1_000_000),
    broker: str | None = BrokerOption,
    output: str = OutputOption,
) -> None:
    """List dead letters with their reasons."""
    check_output(output)
    check_topics(topic)

    async def go() -> list[Event]:
        async with open_bus(broker) as bus:
            if topic is not None:
                return await bus.dead_letters(_dlq_name(topic), limit=limit)
            # TODO(arch-broker): use broker's dead-letter naming
            names = [t.name for t in await bus.topics() if t.name.endswith(".dlq")]
            return [e for n in names for e in await bus.dead_letters(n, limit=limit)]

    events = run(go())
    if output == "json":
        print_json([e.to_dict() for e in events])
        return
    table = Table("id", "type", "topic", "group", "reason", "attempts", "error", "dead since")
    for e in events:
        x = e.extensions
        table.add_row(
            e.id,
            e.type,
            str(x.get("dlqtopic", "")),
            str(x.get("dlqgroup", "")),
            str(x.get("dlqreason", "")),
            str(x.get("dlqattempts", "")),
            str(x.get("dlqerror", ""))[:60],
            str(x.get("dlqtime", "")),
        )
    out_console.print(table)


@dlq_app.command("show")
def dlq_show(
    topic: str = typer.Argument(...),
    event_id: str = typer.Argument(..., help="The dead letter's event id."),
    broker: str | None = BrokerOption,
) -> None:
    """Print one dead letter in full (structured CloudEvents JSON)."""
    check_topics(topic)

    async def go() -> list[Event]:
        async with open_bus(broker) as bus:
            return await bus.dead_letters(_dlq_name(topic), limit=1_000_000)

    found = [e for e in run(go()) if e.id == event_id]
    if not found:
        fail(
            f"no dead letter {event_id!r} in {_dlq_name(topic)!r}; list them with: "
            f"choreo dlq ls {shlex.quote(topic)}"
        )
    sys.stdout.write(json.dumps(found[0].to_dict(), indent=2, ensure_ascii=False) + "\n")


@dlq_app.command("replay")
def dlq_replay(
    topic: str = typer.Argument(...),
    event_id: list[str] = typer.Option([], "--id", help="Replay only these ids."),
    broker: str | None = BrokerOption,
) -> None:
    """Publish dead letters back to their original topic and remove them from the DLQ."""
    check_topics(topic)

    async def go() -> int:
        async with open_bus(broker) as bus:
            name = _dlq_name(topic)
            present = {e.id for e in await bus.dead_letters(name, limit=1_000_000)}
            if not present:
                raise TopicNotFoundError(f"no dead letters in {name}; see: choreo dlq ls")
            missing = sorted(set(event_id) - present)
            if missing:
                raise TopicNotFoundError(
                    f"no event with id {', '.join(missing)} in {name}; "
                    f"list them with: choreo dlq ls {name.removesuffix('.dlq')}"
                )
            return len(await bus.replay(name, event_id or None))

    replayed = run(go())
    with committed():
        out_console.print(f"replayed {replayed} event(s)")


@dlq_app.command("purge")
def dlq_purge(
    topic: str = typer.Argument(...),
    event_id: list[str] = typer.Option([], "--id", help="Delete only these ids."),
    broker: str | None = BrokerOption,
) -> None:
    """Delete dead letters (all, or the given ids)."""
    check_topics(topic)

    async def go() -> int:
        async with open_bus(broker) as bus:
            return await bus.purge(_dlq_name(topic), event_id or None)

    purged = run(go())
    with committed():
        out_console.print(f"purged {purged} event(s)")
