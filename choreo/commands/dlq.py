"""``choreo dlq ls|groups|show|replay|purge``: inspect, group, replay and purge dead letters.

Choosing nothing is not an error: ``ls``, ``groups``, ``replay`` and ``purge`` exit 0 when no
dead letter is there or matches the filters (``replay`` and ``purge`` say so on stderr).
Naming something that is not there (an ``--id``, a ``--group``) exits 1 and changes nothing."""

from __future__ import annotations

import functools
import inspect
import json
import shlex
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import typer
from rich.table import Table

from broker import DeadLetterGroup, DeadLetterSelection, deadletter
from broker.envelope import Event
from broker.errors import TopicNotFoundError
from choreo.commands.options import (
    BrokerOption,
    OutputOption,
    check_output,
    check_topics,
    open_bus,
)
from choreo.console import (
    committed,
    fail,
    out_console,
    parse_duration,
    parse_instant,
    print_json,
    run,
    shown,
    warn,
)

__all__ = ["dlq_app"]

T = TypeVar("T")
L = TypeVar("L")

dlq_app = typer.Typer(help="Inspect, group, replay and purge dead letters.", no_args_is_help=True)

_TypeOption = typer.Option(None, "--type", help="Only dead letters of this event type.")
_ReasonOption = typer.Option(
    None,
    "--reason",
    help="Only those whose reason or error (the columns of dlq ls) contains this text.",
)
_SourceOption = typer.Option(None, "--source", help="Only events of this CloudEvents source.")
_SinceOption = typer.Option(
    None, "--since", help="Only those dead-lettered at or after this time (RFC 3339, or 2h ago)."
)
_BeforeOption = typer.Option(
    None, "--before", help="Only those dead-lettered before this time (RFC 3339, or 2h ago)."
)
_GroupOption = typer.Option(None, "--group", help="Only this group (an id from dlq groups).")
_ByOption = typer.Option(
    [],
    "--by",
    help=f"Group by these ({', '.join(deadletter.GROUP_KEYS)}; repeat or comma-separate); "
    f"default {','.join(deadletter.DEFAULT_GROUPING)}.",
)


def _grouping(by: list[str]) -> tuple[str, ...]:
    """The ``--by`` keys, checked (a usage error names the known ones)."""
    keys = tuple(key.strip() for item in by for key in item.split(",") if key.strip())
    unknown = [key for key in keys if key not in deadletter.GROUP_KEYS]
    if unknown:
        raise typer.BadParameter(
            f"cannot group by {', '.join(unknown)}; use {', '.join(deadletter.GROUP_KEYS)}",
            param_hint="--by",
        )
    return keys or deadletter.DEFAULT_GROUPING


def _moment(text: str | None, option: str) -> datetime | None:
    """A ``--since``/``--before`` time: RFC 3339 with a zone, or a duration ago (``2h``)."""
    if text is None:
        return None
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text, option=option))
    except typer.BadParameter:
        pass
    try:
        return parse_instant(text, option=option)
    except typer.BadParameter:
        raise typer.BadParameter(
            f"{text!r} is not a time for {option}; use RFC 3339 with a zone "
            "(2026-12-01T09:00:00Z) or a duration ago (30m, 2h, 1d)"
        ) from None


def _selection(
    type_: str | None = _TypeOption,
    reason: str | None = _ReasonOption,
    source: str | None = _SourceOption,
    since: str | None = _SinceOption,
    before: str | None = _BeforeOption,
    group: str | None = _GroupOption,
    by: list[str] = _ByOption,
) -> DeadLetterSelection:
    """The dead letters the filter options choose: these options are every ``dlq`` command's
    that chooses (:func:`_filtered`)."""
    return DeadLetterSelection(
        type=type_,
        reason=reason,
        source=source,
        since=_moment(since, "--since"),
        before=_moment(before, "--before"),
        group=group,
        by=_grouping(by),
    )


#: What a command gets as ``where`` without filters (:func:`_filtered` always passes one).
_EVERYTHING = DeadLetterSelection()
_FILTERS = inspect.signature(_selection, eval_str=True).parameters


def _filtered(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` taking the options of :func:`_selection` (placed before its ``--broker``)
    instead of its ``where`` parameter, which it gets built from them: one declaration of
    the filters for every command, as a Click decorator adds options."""
    own = inspect.signature(command, eval_str=True).parameters

    @functools.wraps(command)
    def run_filtered(**options: Any) -> None:
        where = _selection(**{name: options.pop(name) for name in _FILTERS})
        command(where=where, **options)

    head = [p for name, p in own.items() if name not in ("where", "broker", "output")]
    tail = [p for name, p in own.items() if name in ("broker", "output")]
    run_filtered.__signature__ = inspect.Signature([*head, *_FILTERS.values(), *tail])  # type: ignore[attr-defined]
    return run_filtered


@dlq_app.command("ls")
@_filtered
def dlq_ls(
    topic: str | None = typer.Argument(None, help="Topic (or its DLQ); all DLQs if omitted."),
    limit: int = typer.Option(100, "--limit", min=1, max=1_000_000, help="At most this many."),
    offset: int = typer.Option(0, "--offset", min=0, max=1_000_000, help="Skip this many first."),
    where: DeadLetterSelection = _EVERYTHING,
    broker: str | None = BrokerOption,
    output: str = OutputOption,
) -> None:
    """List dead letters with their reasons, oldest first (per dead-letter topic); with
    filters, only those that match."""
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
                read = await _in_group(
                    bus.dead_letters(name, limit=offset + limit + 1, where=where), topic
                )
                if read is not None:
                    pages.append((name, read[offset : offset + limit], len(read) > offset + limit))
            return _found_group(pages, where, topic)

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


@dlq_app.command("groups")
@_filtered
def dlq_groups(
    topic: str | None = typer.Argument(None, help="Topic (or its DLQ); all DLQs if omitted."),
    where: DeadLetterSelection = _EVERYTHING,
    broker: str | None = BrokerOption,
    output: str = OutputOption,
) -> None:
    """Group dead letters (by reason, exception type and event type unless --by says), the
    largest group first: replay or purge a whole group with --group ID."""
    check_output(output)
    check_topics(topic)

    async def go() -> list[tuple[str, DeadLetterGroup]]:
        async with open_bus(broker, reading=True) as bus:
            names = (
                [bus.dead_letter_topic_of(topic)]
                if topic is not None
                else await bus.dead_letter_topics()
            )
            found: list[tuple[str, list[DeadLetterGroup]]] = []
            for name in names:
                rows = await _in_group(
                    bus.dead_letter_groups(name, by=where.by, where=where), topic
                )
                if rows is not None:
                    found.append((name, rows))
            return [(name, row) for name, rows in _found_group(found, where, topic) for row in rows]

    found = run(go())
    with shown():
        if output == "json":
            print_json([_group_json(name, row) for name, row in found])
        else:
            out_console.print(_groups_table(found, where.by, every_dlq=topic is None))


def _group_json(name: str, row: DeadLetterGroup) -> dict[str, object]:
    return {
        "dlq": name,
        "group": row.id,
        "key": dict(row.key),
        "count": row.count,
        "first": row.first,
        "last": row.last,
        "example": row.example,
    }


def _groups_table(
    found: list[tuple[str, DeadLetterGroup]], by: tuple[str, ...], *, every_dlq: bool
) -> Table:
    """The ``dlq groups`` table: group ids and example ids whole (they are copied); the DLQ
    of each group when it lists every DLQ."""
    table = Table(show_edge=False)
    table.add_column("group", no_wrap=True)
    if every_dlq:
        table.add_column("dlq")
    table.add_column("count", justify="right")
    for key in by:
        table.add_column(key)
    for column in ("first", "last"):
        table.add_column(column)
    table.add_column("example id", no_wrap=True)
    for name, row in found:
        where = [name] if every_dlq else []
        values = [value for _, value in row.key]
        table.add_row(row.id, *where, str(row.count), *values, row.first, row.last, row.example)
    return table


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
@_filtered
def dlq_replay(
    topic: str = typer.Argument(...),
    event_id: list[str] = typer.Option([], "--id", help="Replay only these ids."),
    to: str | None = typer.Option(
        None, "--to", help="Publish to this topic instead of each one's original topic."
    ),
    where: DeadLetterSelection = _EVERYTHING,
    broker: str | None = BrokerOption,
) -> None:
    """Publish dead letters (all, or those --id and the filters choose) back to their original
    topic (or --to TOPIC) and remove them, and only them, from the DLQ."""
    check_topics(topic, to)

    async def go() -> tuple[str, int]:
        async with open_bus(broker, reading=True) as bus:
            name = bus.dead_letter_topic_of(topic)
            replayed = await _listed_on_error(
                topic, bus.replay(name, event_id or None, where=where, to=to), "replayed", where
            )
            return name, len(replayed)

    name, replayed = run(go())
    with committed():
        out_console.print(f"replayed {replayed} event(s)")
    if not replayed:
        warn(f"{_nothing(name, where)}; nothing was replayed")


async def _in_group(work: Awaitable[T], topic: str | None) -> T | None:
    """``work`` (a listing of one DLQ); None when listing every DLQ (no ``topic``) and this
    one has no dead letter in the ``--group`` asked for."""
    try:
        return await work
    except TopicNotFoundError:
        if topic is not None:
            raise
        return None


def _found_group(found: list[L], where: DeadLetterSelection, topic: str | None) -> list[L]:
    """``found``, the listings of every DLQ; an error when ``--group`` is in none of them."""
    if topic is None and where.group is not None and not found:
        raise TopicNotFoundError(f"no group {where.group} in any dead-letter topic")
    return found


async def _listed_on_error(
    topic: str, work: Awaitable[T], done: str, where: DeadLetterSelection
) -> T:
    """``work``, with a missing id or group error saying that nothing was ``done`` and where
    to list them (an error that says what was done already is left as it is)."""
    try:
        return await work
    except TopicNotFoundError as exc:
        if "nothing was" in str(exc):
            raise
        listing = "groups" if where.group is not None else "ls"
        raise TopicNotFoundError(
            f"{exc}; nothing was {done}; list them with: choreo dlq {listing} {shlex.quote(topic)}"
        ) from exc


@dlq_app.command("purge")
@_filtered
def dlq_purge(
    topic: str = typer.Argument(...),
    event_id: list[str] = typer.Option([], "--id", help="Delete only these ids."),
    where: DeadLetterSelection = _EVERYTHING,
    broker: str | None = BrokerOption,
) -> None:
    """Delete dead letters (all, or those --id and the filters choose)."""
    check_topics(topic)

    async def go() -> tuple[str, int]:
        async with open_bus(broker, reading=True) as bus:
            name = bus.dead_letter_topic_of(topic)
            purged = await _listed_on_error(
                topic, bus.purge(name, event_id or None, where=where), "purged", where
            )
            return name, purged

    name, purged = run(go())
    with committed():
        out_console.print(f"purged {purged} event(s)")
    if not purged:
        warn(f"{_nothing(name, where)}; nothing was purged")


def _nothing(name: str, where: DeadLetterSelection) -> str:
    """What was found when nothing was chosen."""
    if where.everything:
        return f"no dead letters in {name}"
    return f"no dead letters in {name} match {where.describe()}"
