"""Saga discovery: infer a definition from the events that actually flow.

Events are grouped by correlation id into traces (ordered by event time). From the traces:
the variants (distinct paths) with counts, the directly-follows graph with counts and p50/p95
durations, the start and end types, the main path (the most travelled way from the most
common start to the most common end), failure branches (where traces leave the main path),
compensations (the events after a failure, paired with the step they undo) and deadlines (twice
the observed p95, rounded up). The result is a draft YAML with the evidence as comments.

Given definitions, it also reports drift: each trace is replayed through the real state machine
and the anomalies (unknown types, out-of-order steps, ...) are counted per path.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from broker.envelope import Event
from saga_monitor.correlator import Correlator
from saga_monitor.definitions import (
    Correlation,
    Definitions,
    format_duration,
    load_definitions,
    parse_definitions,
)
from saga_monitor.errors import DefinitionError
from saga_monitor.model import utcnow
from saga_monitor.store import MemoryStore

__all__ = ["Discovery", "discover", "discover_from_broker", "render_report"]

_NICE = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def nice_deadline(p95: float) -> float:
    """Twice ``p95`` rounded up to a round duration (at least 1 s)."""
    wanted = max(1.0, 2 * p95)
    return next((n for n in _NICE if n >= wanted), math.ceil(wanted / 86400) * 86400.0)


@dataclasses.dataclass
class Edge:
    """One directly-follows relation: how often b came right after a, and how long it took."""

    source: str
    target: str
    count: int
    p50: float
    p95: float


@dataclasses.dataclass
class Discovery:
    """What the traffic shows; ``yaml`` is the proposed definition."""

    name: str
    correlation: str
    topics: list[str]
    events: int
    traces: int
    uncorrelated: int
    variants: list[tuple[int, list[str]]]
    edges: list[Edge]
    starts: Counter[str]
    ends: Counter[str]
    main_path: list[str]
    fail: Counter[str]
    compensations: dict[str, str]
    compensated: Counter[str]
    within: dict[str, float]
    deadline: float | None
    yaml: str = ""
    drift: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it rebuilds a Counter from its (key, count) pairs, which
        # counts the pairs ({("order.placed", 200): 1}), and JSON cannot have tuple keys.
        out = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        for name, value in out.items():
            if isinstance(value, Counter):
                out[name] = dict(value)
        out["edges"] = [dataclasses.asdict(edge) for edge in self.edges]
        out["variants"] = [{"count": n, "path": path} for n, path in self.variants]
        return out


def _traces(
    events: Iterable[tuple[str, Event]], correlation: Correlation
) -> tuple[dict[str, list[tuple[str, Event]]], int]:
    traces: dict[str, list[tuple[str, Event]]] = defaultdict(list)
    uncorrelated = 0
    for topic, event in events:
        key = correlation.extract(event)
        if key is None:
            uncorrelated += 1
            continue
        traces[key].append((topic, event))
    for trace in traces.values():
        trace.sort(key=lambda item: item[1].time or datetime.min)
    return traces, uncorrelated


def _edges(traces: Iterable[list[tuple[str, Event]]]) -> list[Edge]:
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    for trace in traces:
        for (_, a), (_, b) in itertools.pairwise(trace):
            seconds = (b.time - a.time).total_seconds() if a.time and b.time else 0.0
            durations[(a.type, b.type)].append(max(0.0, seconds))
    edges = [
        Edge(a, b, len(values), percentile(values, 0.5), percentile(values, 0.95))
        for (a, b), values in durations.items()
    ]
    return sorted(edges, key=lambda e: (-e.count, e.source, e.target))


def _main_path(edges: list[Edge], start: str, end: str | None) -> list[str]:
    """Follow the most frequent successor from ``start`` until ``end`` (no revisits)."""
    path = [start]
    while path[-1] != end:
        options = [e for e in edges if e.source == path[-1] and e.target not in path]
        if not options:
            break
        path.append(max(options, key=lambda e: e.count).target)
    return path


def discover(
    events: Iterable[tuple[str, Event]],
    *,
    correlation: str = "correlationid",
    name: str = "discovered-saga",
    definitions: Definitions | None = None,
) -> Discovery:
    """Infer a saga from ``(topic, event)`` pairs; optionally measure drift from definitions."""
    pairs = list(events)
    traces, uncorrelated = _traces(pairs, Correlation.parse(correlation))
    sequences = [[e.type for _, e in trace] for trace in traces.values()]
    variants = Counter(tuple(s) for s in sequences)
    edges = _edges(traces.values())
    starts = Counter(s[0] for s in sequences)
    ends = Counter(s[-1] for s in sequences)
    start = starts.most_common(1)[0][0] if starts else ""
    main = _main_path(edges, start, ends.most_common(1)[0][0] if ends else None) if start else []
    fail, compensated, after_fail = _branches(sequences, main)
    found = Discovery(
        name=name,
        correlation=correlation,
        topics=list(dict.fromkeys(topic for topic, _ in pairs)),
        events=len(pairs),
        traces=len(traces),
        uncorrelated=uncorrelated,
        variants=[(n, list(v)) for v, n in variants.most_common()],
        edges=edges,
        starts=starts,
        ends=ends,
        main_path=main,
        fail=fail,
        compensations=_pair_compensations(after_fail, main),
        compensated=compensated,
        within={},
        deadline=None,
    )
    _timings(found, traces.values())
    found.yaml = _draft_yaml(found)
    if definitions is not None:
        found.drift = drift(pairs, definitions)
    return found


def _branches(
    sequences: list[list[str]], main: list[str]
) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """Failure events (where a trace leaves the main path), compensated ends, compensations."""
    fail: Counter[str] = Counter()
    compensated: Counter[str] = Counter()
    after: Counter[str] = Counter()
    main_set = set(main)
    for sequence in sequences:
        off = next((i for i, t in enumerate(sequence) if t not in main_set), None)
        if off is None or off == 0:
            continue
        fail[sequence[off]] += 1
        tail = [t for t in sequence[off + 1 :] if t not in main_set]
        if tail:
            compensated[tail[-1]] += 1
            after.update(dict.fromkeys(tail[:-1], 1))
    for event_type in list(compensated):
        if event_type in fail:
            del compensated[event_type]
    return fail, compensated, after


def _pair_compensations(after_fail: Counter[str], main: list[str]) -> dict[str, str]:
    """Pair each compensating event with the main-path step of the same domain (prefix)."""
    pairs: dict[str, str] = {}
    for compensation in after_fail:
        domain = compensation.split(".", 1)[0]
        for step in main[1:]:
            if step.split(".", 1)[0] == domain and step not in pairs:
                pairs[step] = compensation
                break
    return pairs


def _timings(found: Discovery, traces: Iterable[list[tuple[str, Event]]]) -> None:
    step_durations: dict[str, list[float]] = defaultdict(list)
    totals: list[float] = []
    for trace in traces:
        times = {e.type: e.time for _, e in trace if e.time}
        if trace[0][1].time and trace[-1][1].time:
            totals.append((trace[-1][1].time - trace[0][1].time).total_seconds())
        for previous, step in zip(found.main_path, found.main_path[1:], strict=False):
            if previous in times and step in times:
                step_durations[step].append((times[step] - times[previous]).total_seconds())
    found.within = {
        step: nice_deadline(percentile(values, 0.95)) for step, values in step_durations.items()
    }
    found.deadline = nice_deadline(percentile(totals, 0.95)) if totals else None


def _draft_yaml(found: Discovery) -> str:
    edge = {(e.source, e.target): e for e in found.edges}
    lines = [
        f"# discovered from {found.events} events in {found.traces} correlation ids "
        f"on {', '.join(found.topics) or '-'}",
        "# paths (most common first):",
        *(f"#   {n:>6}  {' > '.join(path)}" for n, path in found.variants[:10]),
        f"topics: [{', '.join(found.topics)}]",
        "sagas:",
        f"  - name: {found.name}",
        f"    correlation: {found.correlation}",
        f"    start: [{found.main_path[0] if found.main_path else ''}]"
        f"  # {found.starts.most_common(1)[0][1] if found.starts else 0} of {found.traces}",
        "    steps:",
    ]
    for previous, step in zip(found.main_path, found.main_path[1:], strict=False):
        stats = edge.get((previous, step))
        note = (
            f"  # {stats.count}x after {previous}, p50 {format_duration(stats.p50)}, "
            f"p95 {format_duration(stats.p95)}"
            if stats
            else ""
        )
        lines.append(f"      - event: {step}{note}")
        if step in found.within:
            lines.append(f"        within: {format_duration(found.within[step])}")
        if step in found.compensations:
            lines.append(f"        compensation: {found.compensations[step]}")
    if found.main_path[1:]:
        lines.append(f"    complete: [{found.main_path[-1]}]  # {found.ends[found.main_path[-1]]}")
    else:
        lines[-1] = "    steps: []"
    for key, counter in (("fail", found.fail), ("compensated", found.compensated)):
        if counter:
            names = ", ".join(t for t, _ in counter.most_common())
            counts = ", ".join(str(n) for _, n in counter.most_common())
            lines.append(f"    {key}: [{names}]  # {counts}")
    if found.deadline:
        lines.append(f"    deadline: {format_duration(found.deadline)}  # 2x p95 of whole traces")
    text = "\n".join(lines) + "\n"
    try:
        parse_definitions(text, file="<discovered>")
    except DefinitionError as exc:
        text += f"# note: this draft needs editing before use: {exc}\n"
    return text


def drift(pairs: list[tuple[str, Event]], definitions: Definitions) -> dict[str, Any]:
    """Replay the traffic through the definitions: states and anomalies, by kind and path."""
    store = MemoryStore()
    correlator = Correlator(definitions)
    now = utcnow()
    for topic, event in sorted(pairs, key=lambda p: p[1].time or now):
        correlator.apply(store, event, topic=topic, now=now)
    unknown: Counter[str] = Counter()
    anomalies: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    known = set().union(*(s.event_types() for s in definitions.sagas))
    for _, event in pairs:
        if event.type not in known:
            unknown[event.type] += 1
    for instance in store.data.values():
        kinds = sorted({a.kind for a in instance.anomalies})
        anomalies.update(a.kind for a in instance.anomalies)
        if kinds:
            path = " > ".join(e.event.type for e in sorted(instance.timeline, key=_time))
            paths[f"{path}  [{', '.join(kinds)}]"] += 1
    orphans = Counter(obs.type for _, _, obs in store.orphans())
    anomalies.update({"orphan": sum(orphans.values())} if orphans else {})
    return {
        "states": dict(Counter(i.state for i in store.data.values())),
        "unknown_types": dict(unknown.most_common()),
        "anomalies": dict(anomalies.most_common()),
        "new_paths": [{"count": n, "path": p} for p, n in paths.most_common(20)],
        "uncorrelated": correlator.uncorrelated,
    }


def _time(entry: Any) -> datetime:
    moment: datetime = entry.event.time
    return moment


async def discover_from_broker(
    broker_url: str,
    topics: Sequence[str],
    *,
    since: float | None = None,
    limit: int = 100_000,
    correlation: str = "correlationid",
    name: str = "discovered-saga",
    definitions: Path | None = None,
) -> Discovery:
    """Read the retained events of ``topics`` (without consuming them) and :func:`discover`."""
    from broker import Bus

    defined = load_definitions(definitions) if definitions else None
    cutoff = utcnow() - timedelta(seconds=since) if since else None
    pairs: list[tuple[str, Event]] = []
    async with Bus(broker_url, source="choreo-saga-discover") as bus:
        for topic in topics:
            for event in await bus.browse(topic, limit=limit):
                if cutoff is None or (event.time is not None and event.time >= cutoff):
                    pairs.append((topic, event))
    return discover(pairs, correlation=correlation, name=name, definitions=defined)


def render_report(found: Discovery) -> str:
    """The human report: the draft YAML (evidence in comments), the graph, and any drift."""
    lines = [found.yaml.rstrip("\n"), "", "# directly-follows graph (count, p50, p95):"]
    for e in found.edges[:30]:
        lines.append(
            f"#   {e.source} -> {e.target}  {e.count}  {format_duration(e.p50) if e.p50 else '0'}"
            f"  {format_duration(e.p95) if e.p95 else '0'}"
        )
    if found.uncorrelated:
        lines.append(f"# {found.uncorrelated} event(s) had no correlation id and were skipped")
    if found.drift:
        d = found.drift
        lines += ["", "# drift against the given definitions:", f"#   states: {d['states']}"]
        lines.append(f"#   unknown types: {d['unknown_types'] or 'none'}")
        lines.append(f"#   anomalies: {d['anomalies'] or 'none'}")
        lines += [f"#   {p['count']:>6}  {p['path']}" for p in d["new_paths"]]
    return "\n".join(lines)
