"""Rich renderings of saga instances for ``choreo saga ls`` and ``choreo saga show``.

Every value that comes from an event or a definition goes in as :class:`rich.text.Text`, never
as a string a console could read as markup: a correlation id ``a[/]b`` is shown as it is.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from saga_monitor.definitions import format_duration
from saga_monitor.model import Instance
from saga_monitor.queries import label

if TYPE_CHECKING:
    from saga_monitor.board import ServiceRow
    from saga_monitor.queries import Note

__all__ = ["STATE_STYLES", "board_table", "instance_table", "notes_text", "relative", "timeline"]

STATE_STYLES = {
    "running": "cyan",
    "completed": "green",
    "compensating": "yellow",
    "compensated": "magenta",
    "failed": "red",
    "stuck": "bold red",
}
ROLE_STYLES = {
    "start": "cyan",
    "step": "green",
    "complete": "bold green",
    "fail": "red",
    "compensation": "magenta",
    "compensated": "bold magenta",
    "unknown": "dim",
}
BAR_WIDTH = 20


def relative(moment: datetime | None, now: datetime) -> str:
    """``3m ago`` / ``in 20s`` for a moment relative to ``now``."""
    if moment is None:
        return "-"
    seconds = (moment - now).total_seconds()
    if abs(seconds) < 0.001:
        return "now"
    text = format_duration(abs(seconds))
    return f"in {text}" if seconds > 0 else f"{text} ago"


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def instance_table(
    instances: list[Instance], now: datetime, rows: list[dict[str, Any]] | None = None
) -> Table:
    """The ``choreo saga ls`` table (``rows``: the listing of :func:`saga_monitor.board.listed`,
    for the owing services, stuck-since, acknowledgements and causes)."""
    table = Table(show_edge=False, header_style="bold")
    columns = ["saga", "correlation id", "state", "started", "expected next", "due"]
    if rows is not None:
        columns += ["owed by", "stuck since"]
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column in ("state", "started"))
    table.add_column("anomalies", overflow="fold")
    if rows is not None:
        table.add_column("ack / cause", overflow="fold")
    for index, item in enumerate(instances):
        due = relative(item.due, now) if item.due else "-"
        if item.state == "stuck" and item.due is not None:
            due = f"overdue {format_duration((now - item.due).total_seconds())}"
        kinds = sorted({a.kind for a in item.anomalies})
        cells: list[Any] = [
            Text(item.saga),
            Text(item.correlation_id),
            _state(item.state),
            relative(item.started, now),
            Text(", ".join(item.expected) or "-"),
            Text(due, style="red" if item.state == "stuck" else ""),
        ]
        if rows is not None:
            extra = rows[index]
            cells += [Text(", ".join(extra["services"]) or "-"), relative(item.stuck_since, now)]
        cells.append(
            Text(f"{len(item.anomalies)} ({', '.join(kinds)})", style="yellow")
            if kinds
            else Text("0", style="dim")
        )
        if rows is not None:
            cells.append(_ack_cell(rows[index]))
        table.add_row(*cells)
    return table


def _ack_cell(row: dict[str, Any]) -> Text:
    text = Text()
    acked = row.get("acknowledged")
    if acked:
        text.append(f"ack {acked['who']}", style="green")
        if acked["note"]:
            text.append(f": {acked['note']}")
    if row.get("cause"):
        text.append(("\n" if acked else "") + str(row["cause"]), style="red")
    return text or Text("-", style="dim")


def _seconds(value: float | None) -> str:
    return "-" if value is None else format_duration(value) if value >= 0.001 else "0s"


def board_table(board: list[ServiceRow]) -> Table:
    """The ``choreo saga owes`` table: one row per service, the most owed first."""
    from saga_monitor.board import percentile

    table = Table(show_edge=False, header_style="bold")
    for column in ("service", "waiting", "stuck", "oldest wait", "awaited", "p50 / p99"):
        table.add_column(column, overflow="fold")
    table.add_column("baseline p50 / p99", overflow="fold")
    for row in board:
        oldest = _seconds(row.oldest_wait)
        if row.oldest:
            oldest += f" ({row.oldest})"
        latency = f"{_seconds(percentile(row.recent, 50))} / {_seconds(percentile(row.recent, 99))}"
        table.add_row(
            Text(row.service, style="bold red" if row.stuck else "bold" if row.waiting else ""),
            str(row.waiting),
            Text(str(row.stuck), style="red" if row.stuck else "dim"),
            Text(oldest),
            Text(", ".join(row.awaited) or "-"),
            Text(latency + (" (slower)" if row.slower else ""), style="red" if row.slower else ""),
            f"{_seconds(percentile(row.baseline, 50))} / {_seconds(percentile(row.baseline, 99))}",
        )
    return table


def notes_text(notes: list[Note], cause: dict[str, Any] | None, instance: Instance) -> Text:
    """The ``choreo saga show`` lines under the timeline: the cause of the wait, the notes (an
    acknowledgement of an earlier stuck episode says so)."""
    text = Text()
    if cause:
        text.append(f"cause: {cause.get('text')}\n", style="bold red")
    for note in notes:
        said = f"{label(note, instance)} by {note.who} at {note.at:%Y-%m-%d %H:%M:%S}Z"
        text.append(said, style="green")
        text.append(f": {note.text}\n" if note.text else "\n")
    return text


def _bar(offset: float, total: float) -> Text:
    position = 0 if total <= 0 else min(BAR_WIDTH - 1, int(offset / total * (BAR_WIDTH - 1)))
    return Text("·" * position + "●" + "·" * (BAR_WIDTH - 1 - position), style="dim")


def timeline(instance: Instance, now: datetime) -> RenderableType:
    """The ``choreo saga show`` view: header, timeline with offsets, expectation, anomalies."""
    entries = sorted(instance.timeline, key=lambda e: e.event.time)
    end = max([e.event.time for e in entries] + ([instance.due] if instance.due else []))
    total = (end - instance.started).total_seconds()
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for column in ("offset", "Δ prev", "event", "role", "source", "", "flags", "trace"):
        table.add_column(column, overflow="fold", no_wrap=column in ("offset", "Δ prev", ""))
    previous = instance.started
    for entry in entries:
        obs = entry.event
        offset = (obs.time - instance.started).total_seconds()
        delta = (obs.time - previous).total_seconds()
        previous = obs.time
        table.add_row(
            f"+{format_duration(offset) if offset else '0s'}",
            format_duration(delta) if delta else "-",
            Text(obs.type, style=ROLE_STYLES.get(entry.role, "")),
            Text(entry.role),
            Text(obs.source),
            _bar(offset, total),
            Text(" ".join(f"⚠ {flag}" for flag in entry.flags), style="bold yellow"),
            Text(obs.trace or "", style="dim"),
        )
    header = Text.assemble(
        (instance.saga, "bold"),
        "  ",
        (instance.correlation_id, "bold"),
        "  ",
        _state(instance.state),
        f"\nstarted {instance.started:%Y-%m-%d %H:%M:%S}Z ({relative(instance.started, now)}), "
        f"{len(instance.timeline)} events",
    )
    parts: list[RenderableType] = [header, table, _expectation(instance, now)]
    if instance.anomalies:
        lines = Text("anomalies:\n", style="bold yellow")
        for anomaly in instance.anomalies:
            lines.append(f"  ⚠ {anomaly.kind}: {anomaly.type} {anomaly.event_id} - ")
            lines.append(f"{anomaly.detail}\n")
        parts.append(lines)
    return Panel(Group(*parts), title="saga", expand=False)


def _expectation(instance: Instance, now: datetime) -> Text:
    if not instance.expected:
        when = f" at {instance.finished:%H:%M:%S}Z" if instance.finished else ""
        return Text(f"finished: {instance.state}{when}", style=STATE_STYLES[instance.state])
    text = Text("expected next: ", style="bold")
    text.append(" or ".join(instance.expected))
    if instance.due is not None:
        text.append(f"  by {instance.due:%Y-%m-%d %H:%M:%S}Z ")
        overdue = (now - instance.due).total_seconds()
        if overdue > 0:
            text.append(f"(overdue by {format_duration(overdue)})", style="bold red")
        else:
            text.append(f"({relative(instance.due, now)})", style="dim")
    return text
