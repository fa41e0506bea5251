"""``choreo dlq ls|show|replay|purge``: inspect, replay and purge dead letters."""

from __future__ import annotations

import json
import shlex
import sys

import typer
from rich.table import Table

from broker import deadletter
from broker.envelope import Event
from broker.errors import TopicNotFoundError
from choreo.commands.options import (
    BrokerOption,
    OutputOption,
    check_output,
    check_topics,
    open_bus,
)
from choreo.console import committed, fail, out_console, print_json, run, shown, warn

__all__ = ["dlq_app"]

dlq_app = typer.Typer(help="Inspect, replay and purge dead letters.", no_args_is_help=True)


@dlq_app.command("ls")
def dlq_ls(
    topic: str | None = typer.Argument(None, help="Topic (or its DLQ); all DLQs if omitted."),
    limit: int = typer.Option(100, "--limit", min=1, max=1_000_000, help="At most this many."),
    offset: int = typer.Option(0, "--offset", min=0, max=1_000_000, help="Skip this many first."),
    broker: str | None = BrokerOption,
    output: str = OutputOption,
) -> None:
    """List dead letters with their reasons, oldest first (per dead-letter topic)."""
    check_output(output)
    check_topics(topic)

    async def go() -> list[tuple[str, list[Event], bool]]:
        async with open_bus(broker, reading=True) as bus:
            names = (
                [bus.dead_letter_topic_of(topic)]
                if topic is not None
                else await bus.dead_letter_topics()
            )
            pages = []
            for name in names:
                read = await bus.dead_letters(name, limit=offset + limit + 1)
                pages.append((name, read[offset : offset + limit], len(read) > offset + limit))
            return pages

    pages = run(go())
    events = [e for _, page, _ in pages for e in page]
    with shown():
        if output == "json":
            print_json([e.to_dict() for e in events])
        else:
            out_console.print(_table(events))
    for name, page, more in pages:
        if more:
            warn(
                f"{name} holds more than the {len(page)} dead letters shown; "
                f"see the next with --offset {offset + len(page)} (or a larger --limit)"
            )


def _table(events: list[Event]) -> Table:
    """The ``dlq ls`` table: ids whole, to copy into ``dlq show`` or ``replay --id`` (the
    other cells give way on a narrow terminal; ``--output json`` has them all)."""
    width = max((len(e.id) for e in events), default=2)
    table = Table(show_edge=False)
    table.add_column("id", no_wrap=True, min_width=width)
    for column in ("type", "topic", "group", "reason", "attempts", "error", "dead since"):
        table.add_column(column)
    for e in events:
        dead = deadletter.info(e) or deadletter.NOT_DEAD
        table.add_row(
            e.id,
            e.type,
            dead.topic,
            dead.group,
            dead.reason,
            str(dead.attempts),
            dead.error[:60],
            dead.time,
        )
    return table


@dlq_app.command("show")
def dlq_show(
    topic: str = typer.Argument(...),
    event_id: str = typer.Argument(..., help="The dead letter's event id."),
    broker: str | None = BrokerOption,
) -> None:
    """Print one dead letter in full (structured CloudEvents JSON)."""
    check_topics(topic)

    async def go() -> tuple[str, list[Event]]:
        async with open_bus(broker, reading=True) as bus:
            name = bus.dead_letter_topic_of(topic)
            return name, await bus.dead_letters(name, limit=1_000_000)

    name, entries = run(go())
    found = [e for e in entries if e.id == event_id]
    if not found:
        fail(
            f"no dead letter {event_id!r} in {name!r}; list them with: "
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
        async with open_bus(broker, reading=True) as bus:
            name = bus.dead_letter_topic_of(topic)
            present = {e.id for e in await bus.dead_letters(name, limit=1_000_000)}
            if not present:
                raise TopicNotFoundError(f"no dead letters in {name}; see: choreo dlq ls")
            missing = sorted(set(event_id) - present)
            if missing:
                raise TopicNotFoundError(
                    f"no event with id {', '.join(missing)} in {name}; "
                    f"list them with: choreo dlq ls {shlex.quote(topic)}"
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
        async with open_bus(broker, reading=True) as bus:
            try:
                return await bus.purge(bus.dead_letter_topic_of(topic), event_id or None)
            except TopicNotFoundError as exc:
                raise TopicNotFoundError(
                    f"{exc}; nothing was purged; list them with: choreo dlq ls {shlex.quote(topic)}"
                ) from exc

    purged = run(go())
    with committed():
        out_console.print(f"purged {purged} event(s)")
