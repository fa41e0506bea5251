"""``choreo saga serve``: the saga web page and its JSON API (FastAPI, server-rendered HTML).

Pages: ``/`` (instances with counts by state and filters), ``/instances/{saga}/{id}`` (a
horizontal timeline like a trace view: steps, gaps, the deadline, compensations in another
colour; the events' data below), ``/sagas`` (each definition as a step graph with live counts).
Pages refresh themselves every ``refresh`` seconds (``?refresh=0`` turns it off). JSON under
``/api/``: ``instances``, ``instances/{saga}/{id}``, ``counts``, ``definitions``.

Every value that comes from an event is HTML-escaped: a payload with ``<script>`` is text. A
correlation id may hold ``/`` (encoded as ``%2F`` or not). A bad request (a limit out of range,
an unknown state, a window too long) is a 4xx with a message, never a 500. With ``auth``
(:mod:`saga_monitor.web_http`) everything but ``/healthz`` needs the credentials.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse

from saga_monitor.definitions import Definitions, SagaDefinition, format_duration, load_definitions
from saga_monitor.model import STATES, Instance, utcnow
from saga_monitor.store import SagaStore, open_saga_store
from saga_monitor.web_http import Auth, AuthMiddleware, SegmentPaths, segment
from saga_monitor.web_timeline import ROLE_COLOURS, timeline_svg

__all__ = ["MAX_LIMIT", "MAX_SINCE_DAYS", "create_app"]

#: The most instances one request lists, and the longest ``since`` window it takes.
MAX_LIMIT = 10_000
MAX_SINCE_DAYS = 36_500
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many instances")]
Refresh = Annotated[int | None, Query(ge=0, le=86_400, description="seconds; 0 turns it off")]

STATE_COLOURS = {
    "running": "#2f80c7",
    "completed": "#2e9e5b",
    "compensating": "#d9a400",
    "compensated": "#a347d1",
    "failed": "#d64545",
    "stuck": "#b3261e",
}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:24px;align-items:center}
header a{color:#cfd8e6;text-decoration:none}header b{font-size:18px}
main{padding:16px 20px}table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e3e6eb;font-size:14px;
vertical-align:top}
th{background:#eef1f5}.badge{display:inline-block;padding:2px 8px;border-radius:10px;color:#fff;
font-size:12px;font-weight:600}.counts a{margin-right:8px;text-decoration:none}
.anom{color:#9a5b00;font-weight:600}pre{white-space:pre-wrap;word-break:break-all;margin:0;
font-size:12px;max-width:560px}form{margin:10px 0}input,select{padding:3px 6px}
.card{background:#fff;border:1px solid #e3e6eb;border-radius:6px;padding:12px;margin:12px 0}
.muted{color:#6b7380}svg text{font-family:system-ui,sans-serif}
"""


def e(value: Any) -> str:
    """HTML-escape anything (the only way values reach the page)."""
    return html.escape("" if value is None else str(value), quote=True)


def _badge(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#6b7380")
    return f'<span class="badge state-{e(state)}" style="background:{colour}">{e(state)}</span>'


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    seconds = (now - moment).total_seconds()
    text = format_duration(abs(seconds)) if abs(seconds) >= 0.001 else "0s"
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def _page(title: str, body: str, refresh: int) -> HTMLResponse:
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh > 0 else ""
    return HTMLResponse(
        f"<!doctype html><html lang=en><head><meta charset=utf-8>{meta}"
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>"
        '<header><b>choreograph sagas</b><a href="/">instances</a><a href="/sagas">sagas</a>'
        '<a href="/api/instances">json</a></header>'
        f"<main>{body}</main></body></html>"
    )


def _link(instance: Instance) -> str:
    return f"/instances/{quote(instance.saga, safe='')}/{quote(instance.correlation_id, safe='')}"


def _counts_html(counts: dict[tuple[str, str], int]) -> str:
    totals = {state: 0 for state in STATES}
    for (_, state), count in counts.items():
        totals[state] = totals.get(state, 0) + count
    links = "".join(
        f'<a href="/?state={e(state)}">{_badge(state)} <b id="count-{e(state)}">{n}</b></a>'
        for state, n in totals.items()
    )
    return f'<div class="counts">{links} <a href="/">all</a></div>'


def _instances_html(instances: list[Instance], now: datetime) -> str:
    rows = []
    for item in instances:
        kinds = sorted({a.kind for a in item.anomalies})
        due = _ago(item.due, now) if item.due else "-"
        if item.due is not None and item.due < now and item.state == "stuck":
            due = f"overdue by {format_duration((now - item.due).total_seconds())}"
        rows.append(
            f'<tr class="instance" data-state="{e(item.state)}"><td>{e(item.saga)}</td>'
            f'<td><a href="{e(_link(item))}">{e(item.correlation_id)}</a></td>'
            f"<td>{_badge(item.state)}</td><td>{e(_ago(item.started, now))}</td>"
            f"<td>{e(_ago(item.updated, now))}</td><td>{e(', '.join(item.expected) or '-')}</td>"
            f"<td>{e(due)}</td>"
            f'<td class="anom">{e(", ".join(kinds))}</td></tr>'
        )
    head = (
        "<tr><th>saga</th><th>correlation id</th><th>state</th><th>started</th><th>updated</th>"
        "<th>expected next</th><th>due</th><th>anomalies</th></tr>"
    )
    return f"<table>{head}{''.join(rows) or '<tr><td colspan=8>none</td></tr>'}</table>"


def _filter_form(saga: str | None, state: str | None, q: str | None, sagas: list[str]) -> str:
    saga_options = "".join(
        f'<option value="{e(n)}"{" selected" if n == saga else ""}>{e(n)}</option>' for n in sagas
    )
    state_options = "".join(
        f'<option value="{e(s)}"{" selected" if s == state else ""}>{e(s)}</option>' for s in STATES
    )
    return (
        '<form method="get" action="/">saga <select name="saga"><option value="">all</option>'
        f'{saga_options}</select> state <select name="state"><option value="">all</option>'
        f'{state_options}</select> correlation id <input name="q" value="{e(q or "")}">'
        ' <button type="submit">filter</button></form>'
    )


def _detail_html(instance: Instance, now: datetime) -> str:
    entries = sorted(instance.timeline, key=lambda x: x.event.time)
    rows = "".join(
        f"<tr><td>+{e(format_duration((x.event.time - instance.started).total_seconds() or 0.0))}"
        f'</td><td style="color:{ROLE_COLOURS.get(x.role, "#555")}">{e(x.event.type)}</td>'
        f"<td>{e(x.role)}</td><td>{e(x.event.source)}</td><td>{e(x.event.id)}</td>"
        f"<td>{e(x.event.causation or '')}</td><td>{e(x.event.topic or '')}</td>"
        f'<td class="anom">{e(" ".join(x.flags))}</td><td>{e(x.event.trace or "")}</td>'
        f"<td><pre>{e(json.dumps(x.event.data, ensure_ascii=False, indent=1))}</pre></td></tr>"
        for x in entries
    )
    anomalies = "".join(
        f"<li><b>{e(a.kind)}</b> {e(a.type)} {e(a.event_id)}: {e(a.detail)}</li>"
        for a in instance.anomalies
    )
    due = ""
    if instance.expected:
        when = ""
        if instance.due is not None:
            late = (now - instance.due).total_seconds()
            rel = f"overdue by {format_duration(late)}" if late > 0 else _ago(instance.due, now)
            when = f" by {instance.due:%Y-%m-%d %H:%M:%S}Z ({rel})"
        due = f"<p>expected next: <b>{e(' or '.join(instance.expected))}</b>{e(when)}</p>"
    return (
        f"<h2>{e(instance.saga)} · {e(instance.correlation_id)} {_badge(instance.state)}</h2>"
        f"<p class=muted>started {e(f'{instance.started:%Y-%m-%d %H:%M:%S}')}Z · "
        f"{len(instance.timeline)} events</p>{due}"
        f'<div class="card">{timeline_svg(instance, now)}</div>'
        + (f'<div class="card anom"><ul>{anomalies}</ul></div>' if anomalies else "")
        + "<table><tr><th>offset</th><th>event</th><th>role</th><th>source</th><th>id</th>"
        "<th>causation</th><th>topic</th><th>flags</th><th>trace</th><th>data</th></tr>"
        f"{rows}</table>"
    )


def step_counts(definition: SagaDefinition, instances: list[Instance]) -> dict[str, dict[str, int]]:
    """Per event type of a saga: how many instances did it, wait for it, are stuck on it."""
    counts: dict[str, dict[str, int]] = {}
    for event_type in definition.event_types():
        counts[event_type] = {"done": 0, "waiting": 0, "stuck": 0}
    for instance in instances:
        for event_type in {x.event.type for x in instance.timeline}:
            if event_type in counts:
                counts[event_type]["done"] += 1
        for event_type in instance.expected:
            if event_type in counts:
                key = "stuck" if instance.state == "stuck" else "waiting"
                counts[event_type][key] += 1
    return counts


def _graph_html(definition: SagaDefinition, instances: list[Instance]) -> str:
    from saga_monitor.web_timeline import definition_svg

    return (
        f'<div class="card"><h3>{e(definition.name)}</h3>'
        f"{definition_svg(definition, step_counts(definition, instances))}</div>"
    )


class _Views:
    """The routes, over one store and (optionally) the definitions."""

    def __init__(self, store: SagaStore, defined: Definitions | None, refresh: int) -> None:
        self.store = store
        self.defined = defined
        self.refresh = refresh

    def query(
        self, saga: str | None, state: str | None, q: str | None, since: str | None, limit: int
    ) -> list[Instance]:
        if state and state not in STATES:
            raise HTTPException(422, f"state must be one of {', '.join(STATES)}")
        _check_text(saga=saga, q=q)
        after = utcnow() - timedelta(seconds=_seconds(since)) if since else None
        return self.store.instances(
            saga=saga or None,
            state=state or None,
            correlation_id=q or None,
            since=after,
            limit=limit,
        )

    def one(self, saga: str, correlation_id: str) -> Instance:
        saga, correlation_id = segment(saga), segment(correlation_id)
        _check_text(saga=saga, correlation_id=correlation_id)
        found = self.store.instances(saga=saga, correlation_id=correlation_id, limit=1)
        if not found:
            raise HTTPException(404, f"no instance of {saga} with correlation id {correlation_id}")
        return found[0]

    async def index(
        self,
        saga: str | None = None,
        state: str | None = None,
        q: str | None = None,
        since: str | None = None,
        limit: Limit = 200,
        refresh: Refresh = None,
    ) -> HTMLResponse:
        found = self.query(saga, state, q, since, limit)
        counts = self.store.counts()
        names = sorted({s for s, _ in counts} | {d.name for d in _sagas(self.defined)})
        body = (
            _counts_html(counts)
            + _filter_form(saga, state, q, names)
            + _instances_html(found, utcnow())
        )
        return _page("saga instances", body, self.refresh if refresh is None else refresh)

    async def instance_page(
        self, saga: str, correlation_id: str, refresh: Refresh = None
    ) -> HTMLResponse:
        found = self.one(saga, correlation_id)
        body = _detail_html(found, utcnow())
        title = f"{found.saga} {found.correlation_id}"
        return _page(title, body, self.refresh if refresh is None else refresh)

    async def sagas_page(self, refresh: Refresh = None) -> HTMLResponse:
        if self.defined is None:
            body = "<p>no saga definitions were given to this server, so there is no graph</p>"
        else:
            body = "".join(
                _graph_html(d, self.store.instances(saga=d.name, limit=100_000))
                for d in self.defined.sagas
            )
        return _page("saga definitions", body, self.refresh if refresh is None else refresh)

    async def api_instances(
        self,
        saga: str | None = None,
        state: str | None = None,
        q: str | None = None,
        since: str | None = None,
        limit: Limit = 200,
    ) -> list[dict[str, Any]]:
        return [i.summary() for i in self.query(saga, state, q, since, limit)]

    async def api_instance(self, saga: str, correlation_id: str) -> dict[str, Any]:
        return self.one(saga, correlation_id).to_dict()

    async def api_counts(self) -> list[dict[str, Any]]:
        return [
            {"saga": saga, "state": state, "count": n}
            for (saga, state), n in sorted(self.store.counts().items())
        ]

    async def api_definitions(self) -> list[dict[str, Any]]:
        return [
            {
                "name": d.name,
                "start": list(d.start),
                "steps": [
                    {"event": s.event, "within": s.within, "compensation": s.compensation}
                    for s in d.steps
                ],
                "complete": list(d.complete),
                "fail": list(d.fail),
                "compensated": list(d.compensated),
                "counts": step_counts(d, self.store.instances(saga=d.name, limit=100_000)),
            }
            for d in _sagas(self.defined)
        ]

    async def healthz(self) -> dict[str, str]:
        return {"status": "ok", "store": self.store.url}


def create_app(
    store: str | SagaStore | None = None,
    *,
    definitions: Definitions | str | Path | None = None,
    refresh: int = 5,
    auth: Auth | None = None,
) -> FastAPI:
    """The web app over a store (URL or object) and, for the graph, the definitions; with
    ``auth``, every path but ``/healthz`` needs the credentials."""
    opened: SagaStore = open_saga_store(store) if store is None or isinstance(store, str) else store
    defined = load_definitions(definitions) if isinstance(definitions, str | Path) else definitions
    views = _Views(opened, defined, refresh)
    app = FastAPI(title="choreograph sagas", docs_url="/api/docs", redoc_url=None)
    app.state.store = opened
    app.add_middleware(SegmentPaths)
    if auth is not None:
        app.add_middleware(AuthMiddleware, auth=auth)
    html_routes: dict[str, Any] = {
        "/": views.index,
        "/instances/{saga}/{correlation_id:path}": views.instance_page,
        "/sagas": views.sagas_page,
    }
    for path, endpoint in html_routes.items():
        app.add_api_route(path, endpoint, methods=["GET"], response_class=HTMLResponse)
    json_routes: dict[str, Any] = {
        "/api/instances": views.api_instances,
        "/api/instances/{saga}/{correlation_id:path}": views.api_instance,
        "/api/counts": views.api_counts,
        "/api/definitions": views.api_definitions,
        "/healthz": views.healthz,
    }
    for path, endpoint in json_routes.items():
        app.add_api_route(path, endpoint, methods=["GET"])
    return app


def _sagas(defined: Definitions | None) -> tuple[SagaDefinition, ...]:
    return defined.sagas if defined is not None else ()


def _seconds(text: str) -> float:
    from saga_monitor.definitions import parse_duration

    try:
        seconds = parse_duration(text, field="since")
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    if seconds is None or seconds > MAX_SINCE_DAYS * 86_400:
        raise HTTPException(422, f"since: {text!r} is longer than {MAX_SINCE_DAYS}d")
    return seconds


def _check_text(**values: str | None) -> None:
    """Refuse a NUL character, which no store can compare (a 422 rather than a 500)."""
    for name, value in values.items():
        if value is not None and "\x00" in value:
            raise HTTPException(422, f"{name} must not contain a NUL character")
