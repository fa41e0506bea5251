"""Inline SVG for the web page: an instance's trace-like timeline and a definition's step graph.

The timeline's time axis is linear except for long gaps: a gap more than four times the
median gap between the instance's moments is collapsed (drawn short, growing with the log of
its length) and marked with its real length, so a long wait does not squash every earlier step
into one pixel. A step of the graph links to the console, filtered on the instances waiting
for it.

Every text that comes from an event or a definition is HTML-escaped before it is placed.
"""

from __future__ import annotations

import html
import itertools
import math
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from saga_monitor.definitions import SagaDefinition, format_duration
from saga_monitor.model import ACTIVE, Instance

__all__ = ["ROLE_COLOURS", "TimeScale", "definition_svg", "timeline_svg"]

ROLE_COLOURS = {
    "start": "#2f80c7",
    "step": "#2e9e5b",
    "complete": "#1f7a45",
    "fail": "#d64545",
    "compensation": "#a347d1",
    "compensated": "#7b2fa6",
    "unknown": "#8a8f98",
}
WAITING = "#b8c0cc"
STUCK = "#d64545"
LABEL_WIDTH = 250
CHART_WIDTH = 620
ROW = 26
TOP = 30


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


class TimeScale:
    """Seconds after ``start`` to a position in [0, 1], long gaps collapsed (module docstring)."""

    def __init__(self, start: datetime, moments: list[datetime]) -> None:
        self.start = start
        points = sorted({0.0, *(max(0.0, (m - start).total_seconds()) for m in moments)})
        gaps = sorted(b - a for a, b in itertools.pairwise(points) if b > a)
        cap = max(gaps[(len(gaps) - 1) // 2] * 4 if gaps else 1.0, 0.001)
        #: (from, to, drawn from, drawn width, collapsed) per gap, in seconds.
        self.segments: list[tuple[float, float, float, float, bool]] = []
        drawn = 0.0
        for a, b in itertools.pairwise(points):
            real = b - a
            width = real if real <= cap else cap * (1 + math.log10(real / cap))
            self.segments.append((a, b, drawn, width, real > cap))
            drawn += width
        self.total = drawn or 0.001
        self.span = points[-1]

    def position(self, moment: datetime) -> float:
        """Where ``moment`` is drawn, from 0 (the start) to 1 (the end)."""
        seconds = (moment - self.start).total_seconds()
        for a, b, drawn, width, _ in self.segments:
            if seconds <= b:
                inside = 0.0 if b == a else max(0.0, seconds - a) / (b - a)
                return (drawn + inside * width) / self.total
        return 1.0

    def seconds_at(self, fraction: float) -> float:
        """The seconds after the start drawn at ``fraction`` (the axis labels)."""
        target = fraction * self.total
        for a, b, drawn, width, _ in self.segments:
            if target <= drawn + width:
                return a + (b - a) * ((target - drawn) / width if width else 0.0)
        return self.span

    def collapsed(self) -> list[tuple[float, float, float]]:
        """(from, to, real seconds) of each collapsed gap, as fractions of the width."""
        return [
            (drawn / self.total, (drawn + width) / self.total, b - a)
            for a, b, drawn, width, folded in self.segments
            if folded
        ]


def timeline_svg(instance: Instance, now: datetime) -> str:
    """A horizontal timeline: one row per event, bars for the gaps, the deadline, the wait."""
    entries = sorted(instance.timeline, key=lambda x: x.event.time)
    start = instance.started
    ends = [x.event.time for x in entries]
    active = instance.phase in ACTIVE
    if instance.due is not None:
        ends.append(instance.due)
    if active:
        ends.append(now)
    scale = TimeScale(start, ends)

    def x(moment: datetime) -> float:
        return LABEL_WIDTH + scale.position(moment) * CHART_WIDTH

    rows = len(entries) + (1 if active else 0)
    height = TOP + rows * ROW + 24
    parts = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" '
        f'width="{LABEL_WIDTH + CHART_WIDTH + 80}" height="{height}" role="img" '
        f'aria-label="timeline of {e(instance.correlation_id)}">',
        *_axis(scale, height),
    ]
    previous = start
    for row, entry in enumerate(entries):
        y = TOP + row * ROW
        obs = entry.event
        colour = ROLE_COLOURS.get(entry.role, "#555")
        left, right = x(previous), x(obs.time)
        flags = "".join(f" ⚠{flag}" for flag in entry.flags)
        tip = f"{obs.type} at +{format_duration((obs.time - start).total_seconds() or 0.0)}"
        parts.append(
            f'<g class="row role-{e(entry.role)}"><title>{e(tip)} from {e(obs.source)} '
            f"id {e(obs.id)}{e(flags)}</title>"
            f'<text x="6" y="{y + 16}" font-size="12" fill="{colour}">{e(obs.type)}'
            f'<tspan fill="#9a5b00" font-weight="bold">{e(flags)}</tspan></text>'
            f'<rect class="bar bar-{e(entry.role)}" x="{left:.1f}" y="{y + 6}" '
            f'width="{max(right - left, 4):.1f}" height="12" rx="3" fill="{colour}" />'
            f'<circle cx="{right:.1f}" cy="{y + 12}" r="4" fill="{colour}" /></g>'
        )
        if entry.role in ("start", "step", "complete", "fail", "compensation", "compensated"):
            previous = obs.time
    if active:
        y = TOP + len(entries) * ROW
        stuck = instance.state == "stuck"
        colour = STUCK if stuck else WAITING
        label = f"{'stuck: ' if stuck else ''}waiting for {' or '.join(instance.expected) or '?'}"
        parts.append(
            f'<g class="row waiting"><text x="6" y="{y + 16}" font-size="12" '
            f'fill="{colour}">{e(label)}</text><rect class="bar bar-waiting" x="{x(previous):.1f}" '
            f'y="{y + 6}" width="{max(x(now) - x(previous), 4):.1f}" height="12" rx="3" '
            f'fill="{colour}" fill-opacity="0.55" stroke="{colour}" stroke-dasharray="4 2" /></g>'
        )
    if instance.due is not None:
        dx = x(instance.due)
        parts.append(
            f'<g class="deadline"><line x1="{dx:.1f}" y1="{TOP - 8}" x2="{dx:.1f}" '
            f'y2="{height - 16}" stroke="{STUCK}" stroke-width="2" stroke-dasharray="5 3" />'
            f'<text x="{dx - 22:.1f}" y="{height - 4}" font-size="11" fill="{STUCK}">'
            "deadline</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _axis(scale: TimeScale, height: int) -> list[str]:
    out = []
    folds = scale.collapsed()
    for i in range(5):
        px = LABEL_WIDTH + CHART_WIDTH * i / 4
        seconds = scale.seconds_at(i / 4)
        label = f"+{format_duration(seconds)}" if i and seconds >= 0.001 else "0"
        out.append(
            f'<line x1="{px:.1f}" y1="{TOP - 4}" x2="{px:.1f}" y2="{height - 16}" '
            f'stroke="#e3e6eb" /><text x="{px + 2:.1f}" y="{TOP - 16}" font-size="10" '
            f'fill="#6b7380">{e(label) if not folds else ""}</text>'
        )
    for left, right, seconds in folds:
        x1, x2 = LABEL_WIDTH + left * CHART_WIDTH, LABEL_WIDTH + right * CHART_WIDTH
        mid = (x1 + x2) / 2
        out.append(
            f'<g class="collapsed"><title>a gap of {e(format_duration(seconds))}, drawn short'
            f'</title><rect x="{x1:.1f}" y="{TOP - 4}" width="{max(x2 - x1, 1):.1f}" '
            f'height="{height - 12 - TOP}" fill="#f1f3f6" />'
            f'<path d="M{mid - 4:.1f},{TOP - 10} l4,-6 l4,6" stroke="#8a8f98" fill="none" />'
            f'<text x="{mid - 14:.1f}" y="{TOP - 16}" font-size="10" fill="#6b7380">'
            f"≈{e(format_duration(seconds))}</text></g>"
        )
    return out


BOX_W = 180
BOX_H = 52
GAP = 36


def _box(
    x: float, y: float, title: str, counts: dict[str, int], colour: str, saga: str = ""
) -> str:
    done, waiting, stuck = counts.get("done", 0), counts.get("waiting", 0), counts.get("stuck", 0)
    stuck_text = (
        f' · <tspan fill="{STUCK}" font-weight="bold">{stuck} stuck</tspan>' if stuck else ""
    )
    href = "/?" + urlencode({"saga": saga, "awaiting": title})
    return (
        f'<a class="step-link" href="{e(href)}"><g class="node" data-event="{e(title)}">'
        f"<title>instances of {e(saga)} waiting for {e(title)}</title>"
        f'<rect x="{x}" y="{y}" width="{BOX_W}" '
        f'height="{BOX_H}" rx="6" fill="#fff" stroke="{colour}" stroke-width="2" />'
        f'<text x="{x + 8}" y="{y + 20}" font-size="12" font-weight="bold" fill="{colour}">'
        f'{e(title)}</text><text x="{x + 8}" y="{y + 40}" font-size="11" fill="#3b4250">'
        f"{done} seen · {waiting} waiting{stuck_text}</text></g></a>"
    )


def _arrow(x1: float, y1: float, x2: float, y2: float, colour: str = "#8a8f98") -> str:
    return (
        f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{colour}" stroke-width="1.5" '
        'marker-end="url(#arrow)" />'
    )


def definition_svg(definition: SagaDefinition, counts: dict[str, dict[str, int]]) -> str:
    """The saga as a graph: start -> steps -> complete; compensations and failures below."""
    main = [*definition.start[:1], *(s.event for s in definition.steps)]
    extra_complete = [c for c in definition.complete if c not in main]
    main += extra_complete
    lower = [*definition.fail, *definition.compensated]
    width = max(len(main), len(lower), 1) * (BOX_W + GAP) + 20
    parts = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="300">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#8a8f98" /></marker>'
        "</defs>"
    ]
    for i, event_type in enumerate(main):
        x = 10 + i * (BOX_W + GAP)
        role = "start" if i == 0 else ("complete" if event_type in definition.complete else "step")
        colour = ROLE_COLOURS[role]
        parts.append(_box(x, 10, event_type, counts.get(event_type, {}), colour, definition.name))
        if i:
            parts.append(_arrow(x - GAP, 10 + BOX_H / 2, x - 2, 10 + BOX_H / 2))
        step = next((s for s in definition.steps if s.event == event_type), None)
        if step is not None and step.within:
            parts.append(
                f'<text x="{x - GAP + 2}" y="{6 + BOX_H / 2}" font-size="10" fill="#6b7380">'
                f"{e(format_duration(step.within))}</text>"
            )
        if step is not None and step.compensation:
            comp = step.compensation
            colour = ROLE_COLOURS["compensation"]
            parts.append(_box(x, 120, comp, counts.get(comp, {}), colour, definition.name))
            parts.append(_arrow(x + BOX_W / 2, 120, x + BOX_W / 2, 12 + BOX_H, "#a347d1"))
    for i, event_type in enumerate(lower):
        x = 10 + i * (BOX_W + GAP)
        role = "fail" if event_type in definition.fail else "compensated"
        colour = ROLE_COLOURS[role]
        parts.append(_box(x, 230, event_type, counts.get(event_type, {}), colour, definition.name))
    parts.append("</svg>")
    return "".join(parts)
