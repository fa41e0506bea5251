"""``choreo saga serve``: the saga web page and its JSON API (FastAPI, server-rendered HTML).

Pages: ``/`` (the live console: a "monitor behind" banner, who owes what per service, the
instances with filters, search and paging, the orphans), ``/instances/{saga}/{id}`` (a
horizontal timeline like a trace view: steps, gaps (long ones collapsed), the deadline,
compensations in another colour; event and arrival times and the events' data below; its
notes and the form that acknowledges it), ``/sagas`` (each definition as a step graph with live
counts; a step opens the instances waiting for it). The console and instance pages patch
themselves every ``refresh`` seconds from ``/partials/...`` (:mod:`saga_monitor.web_console`,
script ``/console.js``) instead of reloading; ``/sagas`` reloads (``?refresh=0`` turns both
off). JSON under ``/api/``: ``instances`` (with an ``X-Total-Count`` header),
``instances/{saga}/{id}``, ``POST notes/{saga}/{id}`` (acknowledge or annotate), ``counts``,
``definitions``, ``board``, ``orphans``, ``monitors``.

Every value that comes from an event is HTML-escaped: a payload with ``<script>`` is text. A
correlation id may hold ``/`` (encoded as ``%2F`` or not). A bad request (a limit out of range,
an unknown state, a window too long) is a 4xx with a message, never a 500: on the pages an HTML
page that says it in one line, in the JSON API ``{"detail": ...}``. With ``auth``
(:mod:`saga_monitor.web_http`) everything but ``/healthz`` needs the credentials.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from saga_monitor import web_console as console
from saga_monitor.board import Owners, ServiceRow, build_board, listed
from saga_monitor.definitions import Definitions, SagaDefinition, format_duration, load_definitions
from saga_monitor.errors import InstanceNotFoundError, SagaConfigError
from saga_monitor.model import ACTIVE, ANOMALY_KINDS, STATES, Instance, utcnow
from saga_monitor.queries import MAX_NOTE, MAX_SEARCH, MAX_WHO, Note, Page, check_note, parse_search
from saga_monitor.queries import Query as StoreQuery
from saga_monitor.store import SagaStore, open_saga_store
from saga_monitor.web_console import badge as _badge
from saga_monitor.web_console import e
from saga_monitor.web_http import Auth, AuthMiddleware, SegmentPaths, segment
from saga_monitor.web_timeline import ROLE_COLOURS, timeline_svg

__all__ = ["MAX_LIMIT", "MAX_OFFSET", "MAX_SINCE_DAYS", "create_app"]

#: The most instances one request lists, the furthest offset, the longest ``since`` window.
MAX_LIMIT = 10_000
MAX_OFFSET = 10_000_000
MAX_SINCE_DAYS = 36_500
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many instances")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="skip this many first")]
Refresh = Annotated[int | None, Query(ge=0, le=86_400, description="seconds; 0 turns it off")]
Text = Annotated[str | None, Query(max_length=MAX_SEARCH)]
Acked = Annotated[Literal["yes", "no", ""] | None, Query(description="acknowledged or not")]
#: How long the board (and the owners it learns) is reused between requests.
BOARD_TTL = 2.0

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
.banner{background:#fff4d6;border:1px solid #d9a400;padding:8px 12px;margin:8px 0;
border-radius:4px;font-weight:600}.cause{color:#b3261e}.acked{color:#1f7a45}
tr.late td:first-child{font-weight:700;color:#b3261e}.pager{margin:6px 0}
.pager a{margin-left:10px}svg a{cursor:pointer}
"""


def _page(title: str, body: str, refresh: int, *, src: str | None = None) -> HTMLResponse:
    """A page; with ``src`` it patches itself from there every ``refresh`` seconds, else it
    reloads itself."""
    meta = (
        f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh > 0 and not src else ""
    )
    live = f' data-src="{e(src)}" data-refresh="{int(refresh)}"' if src else ""
    script = '<script src="/console.js" defer></script>' if src else ""
    return HTMLResponse(
        f"<!doctype html><html lang=en><head><meta charset=utf-8>{meta}"
        f"<title>{e(title)}</title><style>{CSS}</style></head><body{live}>"
        '<header><b>choreograph sagas</b><a href="/">instances</a><a href="/sagas">sagas</a>'
        '<a href="/api/instances">json</a></header>'
        f"<main>{body}</main>{script}</body></html>"
    )


def _is_page(path: str) -> bool:
    """Whether ``path`` is one of the HTML pages (whose errors a browser shows)."""
    return path in ("/", "/sagas") or path.startswith("/instances/")


def _error_page(status: int, message: str) -> HTMLResponse:
    body = f'<p class="banner">{e(message)}</p><p><a href="/">back to the instances</a></p>'
    page = _page(f"{status}: {message}", body, 0)
    page.status_code = status
    return page


async def _http_error(request: Request, exc: Exception) -> Response:
    """An error on a page is an HTML page with its one-line message; elsewhere JSON."""
    assert isinstance(exc, StarletteHTTPException)
    if not _is_page(request.url.path):
        return await http_exception_handler(request, exc)
    return _error_page(exc.status_code, str(exc.detail))


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """A query parameter that fails validation: on a page, one line naming each parameter
    and what it must be; elsewhere FastAPI's JSON."""
    assert isinstance(exc, RequestValidationError)
    if not _is_page(request.url.path):
        return await request_validation_exception_handler(request, exc)
    said = "; ".join(f"{err['loc'][-1]}: {err['msg']}" for err in exc.errors())
    return _error_page(422, said)


def _counts_html(counts: dict[tuple[str, str], int]) -> str:
    totals = {state: 0 for state in STATES}
    for (_, state), count in counts.items():
        totals[state] = totals.get(state, 0) + count
    links = "".join(
        f'<a href="/?state={e(state)}">{_badge(state)} <b id="count-{e(state)}">{n}</b></a>'
        for state, n in totals.items()
    )
    return f'<div class="counts">{links} <a href="/">all</a></div>'


def _detail_html(instance: Instance, now: datetime) -> str:
    entries = sorted(instance.timeline, key=lambda x: x.event.time)
    rows = "".join(
        f"<tr><td>+{e(format_duration((x.event.time - instance.started).total_seconds() or 0.0))}"
        f'</td><td class="time">{x.event.time:%H:%M:%S.%f}'[:-3]
        + f'</td><td class="arrived">{_arrival(x.event.time, x.event.arrived)}</td>'
        f'<td style="color:{ROLE_COLOURS.get(x.role, "#555")}">{e(x.event.type)}</td>'
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
            rel = (
                f"overdue by {format_duration(late)}"
                if late > 0
                else console.ago(instance.due, now)
            )
            when = f" by {instance.due:%Y-%m-%d %H:%M:%S}Z ({rel})"
        due = f"<p>expected next: <b>{e(' or '.join(instance.expected))}</b>{e(when)}</p>"
    stuck = (
        f" · stuck since {instance.stuck_since:%Y-%m-%d %H:%M:%S}Z"
        if instance.state == "stuck" and instance.stuck_since
        else ""
    )
    return (
        f"<h2>{e(instance.saga)} · {e(instance.correlation_id)} {_badge(instance.state)}</h2>"
        f"<p class=muted>started {e(f'{instance.started:%Y-%m-%d %H:%M:%S}')}Z · "
        f"{len(instance.timeline)} events{e(stuck)}</p>{due}"
        f'<div class="card">{timeline_svg(instance, now)}</div>'
        + (f'<div class="card anom"><ul>{anomalies}</ul></div>' if anomalies else "")
        + "<table><tr><th>offset</th><th>event time</th><th>arrived</th><th>event</th>"
        "<th>role</th><th>source</th><th>id</th><th>causation</th><th>topic</th><th>flags</th>"
        f"<th>trace</th><th>data</th></tr>{rows}</table>"
    )


def _arrival(happened: datetime, arrived: datetime | None) -> str:
    """When the monitor received an event, and how long after its own time."""
    if arrived is None:
        return "-"
    delay = (arrived - happened).total_seconds()
    after = f" (+{format_duration(delay)})" if delay >= 0.001 else ""
    return e(f"{arrived:%H:%M:%S.%f}"[:-3] + after)


#: Instances the graphs' counts read: the active ones and this many of the most recent, as
#: the store's step views, streamed (all of them decoded at once took a console process from
#: 130 MB to 660 MB at 200,000 instances, and it kept most of it).
GRAPH_SAMPLE = 100_000
#: The graphs' counts are reused for this many seconds, and after that as long as the store
#: has not changed (:func:`store_marker`): counting the sample took seconds of CPU at 200,000
#: instances, and ``/sagas`` reloads every 5 s (docs/sagas.md, "the step graphs' counts").
GRAPH_TTL = 30.0
#: ... and recomputed after this many seconds even so (an instance can change in a way the
#: marker does not see: an event older than the newest instance's that keeps its state).
GRAPH_STALE = 300.0


def step_counts(
    definition: SagaDefinition, instances: Iterable[Instance]
) -> dict[str, dict[str, int]]:
    """Per event type of a saga: how many instances did it, wait for it, are stuck on it."""
    counts: dict[str, dict[str, int]] = {}
    for event_type in definition.event_types():
        counts[event_type] = {"done": 0, "waiting": 0, "stuck": 0}
    for instance in instances:
        _count_steps(counts, instance)
    return counts


def _count_steps(counts: dict[str, dict[str, int]], instance: Instance) -> None:
    seen = {x.event.type for x in instance.timeline}
    _count_types(counts, seen, instance.expected, instance.state)


def _count_types(
    counts: dict[str, dict[str, int]], seen: set[str], expected: Iterable[str], state: str
) -> None:
    """Count one instance: the event types it saw, those it expects next, in ``state``."""
    for event_type in seen:
        if event_type in counts:
            counts[event_type]["done"] += 1
    key = "stuck" if state == "stuck" else "waiting"
    for event_type in expected:
        if event_type in counts:
            counts[event_type][key] += 1


def graph_counts(
    store: SagaStore, definitions: Sequence[SagaDefinition], *, own: bool = True
) -> list[dict[str, dict[str, int]]]:
    """:func:`step_counts` of each definition over the graphs' sample (``own``: each saga
    counts its own instances only, as the graphs do; else every instance), read as the store's
    :meth:`~saga_monitor.store.SagaStore.step_views` (a SQL store decodes a few fields of each
    document, not the whole instance)."""
    counts = [step_counts(d, ()) for d in definitions]
    by_name: dict[str, list[dict[str, dict[str, int]]]] = {}
    for definition, counted in zip(definitions, counts, strict=True):
        by_name.setdefault(definition.name, []).append(counted)
    states = (*sorted(ACTIVE), "stuck", None)
    for view in store.step_views(states, GRAPH_SAMPLE):
        seen = {entry.type for entry in view.timeline}
        for counted in by_name.get(view.saga, ()) if own else counts:
            _count_types(counted, seen, view.expected_next, view.state)
    return counts


def store_marker(store: SagaStore) -> tuple[Any, ...]:
    """What changes when ``store``'s instances do, cheaply (by index): the counts per saga and
    state, and the most recently updated instance with its time. An instance created, pruned
    or moved to another state changes the counts; one that took a step without changing state
    becomes the most recently updated (the sample's order, newest first, is by that time)."""
    newest = store.search(StoreQuery(limit=1, counted=False)).items
    head = (
        (newest[0].saga, newest[0].correlation_id, newest[0].updated, len(newest[0].timeline))
        if newest
        else None
    )
    return (tuple(sorted(store.counts().items())), head)


class GraphCache:
    """The graphs' counts of one store, recomputed at most every :data:`GRAPH_TTL` seconds and
    only when :func:`store_marker` changed or :data:`GRAPH_STALE` seconds passed (``/sagas``
    and ``/api/definitions`` share them)."""

    def __init__(self, store: SagaStore, definitions: Sequence[SagaDefinition]) -> None:
        self.store = store
        self.definitions = tuple(definitions)
        #: (when computed, when the marker was last read, the marker, the counts)
        self._kept: tuple[float, float, tuple[Any, ...], list[dict[str, dict[str, int]]]] | None
        self._kept = None

    def counts(self) -> list[dict[str, dict[str, int]]]:
        """Each definition's :func:`step_counts` over the sample, as of at most
        :data:`GRAPH_TTL` seconds ago (a change of the store within it waits for the next)."""
        moment = time.monotonic()
        kept = self._kept
        if kept is not None and moment - kept[1] < GRAPH_TTL:
            return kept[3]
        marker = store_marker(self.store)
        if kept is not None and kept[2] == marker and moment - kept[0] < GRAPH_STALE:
            self._kept = (kept[0], moment, marker, kept[3])
            return kept[3]
        counted = graph_counts(self.store, self.definitions, own=True)
        self._kept = (moment, moment, marker, counted)
        return counted


def _graph_html(definition: SagaDefinition, counts: dict[str, dict[str, int]]) -> str:
    from saga_monitor.web_timeline import definition_svg

    return (
        f'<div class="card"><h3>{e(definition.name)}</h3>{definition_svg(definition, counts)}</div>'
    )


def _counted(
    store: SagaStore, query: StoreQuery, counts: dict[tuple[str, str], int] | None
) -> Page:
    """``store``'s page for ``query``, its total taken from ``counts`` (per saga and state)
    where they tell it: the console reads them anyway, and counting a whole store again
    took PostgreSQL 50-70 ms at 200,000 instances."""
    told = dataclasses.replace(query, saga=None, state=None, limit=200, offset=0)
    if counts is None or told != StoreQuery():
        return store.search(query)
    page = store.search(dataclasses.replace(query, counted=False))
    total = sum(
        n
        for (saga, state), n in counts.items()
        if query.saga in (None, saga) and query.state in (None, state)
    )
    return Page(page.items, total, query.offset, query.limit)


class NoteIn(BaseModel):
    """An acknowledgement (``kind`` ack) or a note on an instance."""

    who: str = Field(min_length=1, max_length=MAX_WHO)
    note: str = Field(default="", max_length=MAX_NOTE)
    kind: Literal["ack", "note"] = "ack"


class _Views:
    """The routes, over one store and (optionally) the definitions."""

    def __init__(self, store: SagaStore, defined: Definitions | None, refresh: int) -> None:
        self.store = store
        self.defined = defined
        self.refresh = refresh
        self._board: tuple[float, list[ServiceRow], Owners] | None = None
        self.graphs = GraphCache(store, _sagas(defined))

    def board(self) -> tuple[list[ServiceRow], Owners]:
        """The board and the owners it learned (reused for :data:`BOARD_TTL` seconds)."""
        moment = time.monotonic()
        if self._board is None or moment - self._board[0] > BOARD_TTL:
            board, owners = build_board(self.store, self.defined, utcnow())
            self._board = (moment, board, owners)
        return self._board[1], self._board[2]

    def search(
        self, params: dict[str, Any], counts: dict[tuple[str, str], int] | None = None
    ) -> Page:
        """The page of instances the parameters ask for (a bad one is a 422); with the
        ``counts`` the caller read, a page filtered by saga and state at most takes its total
        from them instead of the store counting again."""
        state, anomaly = params.get("state"), params.get("anomaly")
        if state and state not in STATES:
            raise HTTPException(422, f"state must be one of {', '.join(STATES)}")
        if anomaly and anomaly not in ANOMALY_KINDS:
            raise HTTPException(422, f"anomaly must be one of {', '.join(ANOMALY_KINDS)}")
        _check_text(**{k: params.get(k) for k in ("saga", "q", "service", "awaiting")})
        since = params.get("since")
        after = utcnow() - timedelta(seconds=_seconds(since)) if since else None
        try:
            prefix, field = parse_search(params.get("q"))
        except SagaConfigError as exc:
            raise HTTPException(422, str(exc)) from exc
        awaiting: tuple[str, ...] | None = None
        if params.get("service"):  # the event types the service owes
            awaiting = self.board()[1].types_of(params["service"], set())
        if wanted := params.get("awaiting"):
            awaiting = (wanted,) if awaiting is None else tuple(t for t in awaiting if t == wanted)
        acked = {"yes": True, "no": False}.get(params.get("acknowledged") or "")
        query = StoreQuery(
            saga=params.get("saga") or None,
            state=state or None,
            since=after,
            correlation_prefix=prefix,
            data=field,
            anomaly=anomaly or None,
            awaiting=awaiting,
            acknowledged=acked,
            limit=params.get("limit") or 200,
            offset=params.get("offset") or 0,
        )
        return _counted(self.store, query, counts)

    def one(self, saga: str, correlation_id: str) -> Instance:
        saga, correlation_id = segment(saga), segment(correlation_id)
        _check_text(saga=saga, correlation_id=correlation_id)
        found = self.store.instances(saga=saga, correlation_id=correlation_id, limit=1)
        if not found:
            raise HTTPException(404, f"no instance of {saga} with correlation id {correlation_id}")
        return found[0]

    def fragments(self, params: dict[str, Any]) -> dict[str, str]:
        """The console's live parts for these filters."""
        return self._fragments(params, self.board(), self.store.counts())

    def _fragments(
        self,
        params: dict[str, Any],
        boarded: tuple[list[ServiceRow], Owners],
        counts: dict[tuple[str, str], int],
    ) -> dict[str, str]:
        """:meth:`fragments` from the board and counts the caller read (once per request)."""
        page = self.search(params, counts)
        board, owners = boarded
        now = utcnow()
        return {
            "banner": console.banner_html(self.store.monitors(), now),
            "counts": _counts_html(counts),
            "board": console.board_html(board),
            "list": console.list_html(page, listed(self.store, page.items, owners), now, params),
            "orphans": console.orphans_html(self.store.orphans(limit=100), now),
        }

    async def index(
        self,
        saga: str | None = None,
        state: str | None = None,
        q: Text = None,
        since: str | None = None,
        anomaly: str | None = None,
        service: str | None = None,
        awaiting: str | None = None,
        acknowledged: Acked = None,
        limit: Limit = 200,
        offset: Offset = 0,
        refresh: Refresh = None,
    ) -> HTMLResponse:
        params = dict(locals())
        params.pop("self")
        boarded, counts = self.board(), self.store.counts()
        parts = self._fragments(params, boarded, counts)
        board, owners = boarded
        names = sorted({s for s, _ in counts} | {d.name for d in _sagas(self.defined)})
        services = sorted({row.service for row in board} | set(owners.services(set())))
        body = (
            f'<div id="banner">{parts["banner"]}</div>'
            f'<div id="counts">{parts["counts"]}</div>'
            f'<div id="board">{parts["board"]}</div>'
            + console.filter_form(params, names, services)
            + f'<div id="list">{parts["list"]}</div><div id="orphans">{parts["orphans"]}</div>'
        )
        every = self.refresh if refresh is None else refresh
        return _page("saga instances", body, every, src="/partials/console")

    async def console_parts(
        self,
        saga: str | None = None,
        state: str | None = None,
        q: Text = None,
        since: str | None = None,
        anomaly: str | None = None,
        service: str | None = None,
        awaiting: str | None = None,
        acknowledged: Acked = None,
        limit: Limit = 200,
        offset: Offset = 0,
    ) -> dict[str, str]:
        params = dict(locals())
        params.pop("self")
        return self.fragments(params)

    def instance_parts(self, found: Instance) -> dict[str, str]:
        key = (found.saga, found.correlation_id)
        cause = self.store.causes([key]).get(key) if found.state == "stuck" else None
        notes = self.store.notes([key]).get(key, [])
        return {
            "banner": console.banner_html(self.store.monitors(), utcnow()),
            "detail": _detail_html(found, utcnow()),
            "notes": console.notes_html(notes, cause, found),
        }

    async def instance_page(
        self, saga: str, correlation_id: str, refresh: Refresh = None
    ) -> HTMLResponse:
        found = self.one(saga, correlation_id)
        parts = self.instance_parts(found)
        body = (
            f'<div id="banner">{parts["banner"]}</div><div id="detail">{parts["detail"]}</div>'
            f'<div id="notes">{parts["notes"]}</div>{console.ack_form(found)}'
        )
        title = f"{found.saga} {found.correlation_id}"
        src = f"/partials{console.link(found)}"
        return _page(title, body, self.refresh if refresh is None else refresh, src=src)

    async def instance_fragments(self, saga: str, correlation_id: str) -> dict[str, str]:
        return self.instance_parts(self.one(saga, correlation_id))

    async def sagas_page(self, refresh: Refresh = None) -> HTMLResponse:
        if self.defined is None:
            body = "<p>no saga definitions were given to this server, so there is no graph</p>"
        else:
            sagas = self.defined.sagas
            counted = self.graphs.counts()
            body = "".join(_graph_html(d, c) for d, c in zip(sagas, counted, strict=True))
        return _page("saga definitions", body, self.refresh if refresh is None else refresh)

    async def api_instances(
        self,
        response: Response,
        saga: str | None = None,
        state: str | None = None,
        q: Text = None,
        since: str | None = None,
        anomaly: str | None = None,
        service: str | None = None,
        awaiting: str | None = None,
        acknowledged: Acked = None,
        limit: Limit = 200,
        offset: Offset = 0,
    ) -> list[dict[str, Any]]:
        params = dict(locals())
        params.pop("self")
        params.pop("response")
        page = self.search(params)
        response.headers["X-Total-Count"] = str(page.total)
        if page.more:  # a payload search that stopped counting: at least so many match
            response.headers["X-Total-Is-Lower-Bound"] = "true"
        return listed(self.store, page.items, self.board()[1])

    async def api_instance(self, saga: str, correlation_id: str) -> dict[str, Any]:
        found = self.one(saga, correlation_id)
        key = (found.saga, found.correlation_id)
        cause = self.store.causes([key]).get(key) if found.state == "stuck" else None
        return {
            **found.to_dict(),
            "notes": [n.to_dict() for n in self.store.notes([key]).get(key, [])],
            "cause": cause.get("text") if cause else None,
        }

    async def api_add_note(
        self, saga: str, correlation_id: str, note: NoteIn, response: Response
    ) -> dict[str, Any]:
        found = self.one(saga, correlation_id)
        try:
            check_note(note.who, note.note, note.kind)
            written = Note(
                found.saga, found.correlation_id, note.kind, note.who, utcnow(), note.note
            )
            written = self.store.add_note(written)
        except SagaConfigError as exc:
            raise HTTPException(422, str(exc)) from exc
        except InstanceNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        response.status_code = 201
        return written.to_dict()

    async def api_counts(self) -> list[dict[str, Any]]:
        return [
            {"saga": saga, "state": state, "count": n}
            for (saga, state), n in sorted(self.store.counts().items())
        ]

    async def api_board(self) -> list[dict[str, Any]]:
        return [row.to_dict() for row in self.board()[0]]

    async def api_orphans(self, limit: Limit = 200) -> list[dict[str, Any]]:
        return [
            {
                "saga": saga,
                "correlation_id": corr,
                "type": o.type,
                "source": o.source,
                "id": o.id,
                "time": o.time.isoformat(),
            }
            for saga, corr, o in self.store.orphans(limit=limit)
        ]

    async def api_monitors(self) -> list[dict[str, Any]]:
        now = utcnow()
        return [
            {
                "name": s.name,
                "watermark": s.watermark.isoformat() if s.watermark else None,
                "lag_seconds": s.lag if s.lag != float("inf") else None,
                "updated": s.updated.isoformat(),
                "behind": s.behind(now),
            }
            for s in self.store.monitors()
        ]

    async def api_definitions(self) -> list[dict[str, Any]]:
        sagas = _sagas(self.defined)
        counted = self.graphs.counts() if sagas else []
        return [
            {
                "name": d.name,
                "start": list(d.start),
                "steps": [
                    {
                        "event": s.event,
                        "within": s.within,
                        "compensation": s.compensation,
                        "service": s.service,
                    }
                    for s in d.steps
                ],
                "complete": list(d.complete),
                "fail": list(d.fail),
                "compensated": list(d.compensated),
                "counts": c,
            }
            for d, c in zip(sagas, counted, strict=True)
        ]

    async def script(self) -> Response:
        return Response(console.SCRIPT, media_type="text/javascript")

    async def healthz(self) -> dict[str, str]:
        return {"status": "ok", "store": self.store.url}


def create_app(
    store: str | SagaStore | None = None,
    *,
    definitions: Definitions | str | Path | None = None,
    refresh: int = 5,
    auth: Auth | None = None,
) -> FastAPI:
    """The web app over a store (URL or object) and, for the graph and the owners the steps
    name, the definitions; with ``auth``, every path but ``/healthz`` needs the credentials."""
    opened: SagaStore = open_saga_store(store) if store is None or isinstance(store, str) else store
    defined = load_definitions(definitions) if isinstance(definitions, str | Path) else definitions
    views = _Views(opened, defined, refresh)
    app = FastAPI(title="choreograph sagas", docs_url="/api/docs", redoc_url=None)
    app.state.store = opened
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
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
        "/partials/console": views.console_parts,
        "/partials/instances/{saga}/{correlation_id:path}": views.instance_fragments,
        "/api/instances": views.api_instances,
        "/api/instances/{saga}/{correlation_id:path}": views.api_instance,
        "/api/counts": views.api_counts,
        "/api/board": views.api_board,
        "/api/orphans": views.api_orphans,
        "/api/monitors": views.api_monitors,
        "/api/definitions": views.api_definitions,
        "/healthz": views.healthz,
    }
    app.add_api_route("/console.js", views.script, methods=["GET"], response_class=Response)
    app.add_api_route(
        "/api/notes/{saga}/{correlation_id:path}",
        views.api_add_note,
        methods=["POST"],
        status_code=201,
    )
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
