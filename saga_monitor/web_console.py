"""The live console's HTML fragments and its script (the routes are in :mod:`saga_monitor.web`).

The console page is rendered whole once; afterwards its script fetches ``/partials/console``
with the filter form's values every ``refresh`` seconds (and as the operator types, pages or
filters) and patches the fragments in place: the banner, the board, the list with its pager,
the orphans. Nothing reloads, so what is typed in the filter, the focus and the scroll survive.
An instance page patches its detail and notes the same way; its form acknowledges or annotates
the instance through ``POST /api/notes/{saga}/{id}``.

Every value that comes from an event, a note or a definition is HTML-escaped.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from saga_monitor.board import ServiceRow, percentile
from saga_monitor.definitions import format_duration
from saga_monitor.model import ANOMALY_KINDS, STATES, Instance
from saga_monitor.queries import Note, Page, label
from saga_monitor.store import MonitorStatus

__all__ = [
    "SCRIPT",
    "banner_html",
    "board_html",
    "filter_form",
    "list_html",
    "notes_html",
    "orphans_html",
]

STATE_COLOURS = {
    "running": "#2f80c7",
    "completed": "#2e9e5b",
    "compensating": "#d9a400",
    "compensated": "#a347d1",
    "failed": "#d64545",
    "stuck": "#b3261e",
}


def e(value: Any) -> str:
    """HTML-escape anything (the only way values reach the page)."""
    return html.escape("" if value is None else str(value), quote=True)


def badge(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#6b7380")
    return f'<span class="badge state-{e(state)}" style="background:{colour}">{e(state)}</span>'


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    seconds = (now - moment).total_seconds()
    text = format_duration(abs(seconds)) if abs(seconds) >= 0.001 else "0s"
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def link(instance: Instance) -> str:
    return f"/instances/{quote(instance.saga, safe='')}/{quote(instance.correlation_id, safe='')}"


def _options(values: list[str] | tuple[str, ...], chosen: str | None) -> str:
    return "".join(
        f'<option value="{e(v)}"{" selected" if v == chosen else ""}>{e(v)}</option>'
        for v in values
    )


def filter_form(params: dict[str, Any], sagas: list[str], services: list[str]) -> str:
    """The filters: saga, state, anomaly, service, acknowledged, search; offset and limit ride
    along hidden (the pager sets the offset)."""

    def select(name: str, label: str, values: list[str] | tuple[str, ...]) -> str:
        return (
            f'<label>{label} <select name="{name}"><option value="">all</option>'
            f"{_options(values, params.get(name))}</select></label> "
        )

    acked = {"yes": "acknowledged", "no": "not acknowledged"}
    acked_options = "".join(
        f'<option value="{k}"{" selected" if params.get("acknowledged") == k else ""}>{v}</option>'
        for k, v in acked.items()
    )
    return (
        '<form id="filters" method="get" action="/">'
        + select("saga", "saga", sagas)
        + select("state", "state", STATES)
        + select("anomaly", "anomaly", ANOMALY_KINDS)
        + select("service", "owed by", services)
        + '<label>ack <select name="acknowledged"><option value="">all</option>'
        f"{acked_options}</select></label> "
        '<label>search <input id="q" name="q" size="34" autocomplete="off" '
        'placeholder="correlation-id prefix or data.customer=customer-10" '
        f'value="{e(params.get("q") or "")}"></label>'
        f'<input type="hidden" name="awaiting" value="{e(params.get("awaiting") or "")}">'
        f'<input type="hidden" name="since" value="{e(params.get("since") or "")}">'
        f'<input type="hidden" name="offset" value="{int(params.get("offset") or 0)}">'
        f'<input type="hidden" name="limit" value="{int(params.get("limit") or 200)}">'
        ' <button type="submit">filter</button></form>'
    )


def banner_html(statuses: list[MonitorStatus], now: datetime) -> str:
    """ "monitor … behind by …" for each group whose verdicts trail the clock (issue 11)."""
    warnings = [
        (w, "runs again" if s.stopped else "catches up")
        for s in statuses
        if "/" not in s.name and (w := s.behind(now)) is not None
    ]
    return "".join(
        f'<div class="banner">{e(w)}: verdicts wait until it {until}</div>' for w, until in warnings
    )


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return format_duration(value) if value >= 0.001 else "0s"


def _spread(values: list[float]) -> str:
    return f"{_seconds(percentile(values, 50))} / {_seconds(percentile(values, 99))}"


def board_html(board: list[ServiceRow]) -> str:
    """Who owes what: one row per service; a service's name filters the list to it."""
    if not board:
        return ""
    rows = []
    for row in board:
        oldest = _seconds(row.oldest_wait)
        if row.oldest:
            oldest += f" ({row.oldest})"
        recent = f"{_seconds(percentile(row.recent, 50))} / {_seconds(percentile(row.recent, 99))}"
        base = (
            f"{_seconds(percentile(row.baseline, 50))} / {_seconds(percentile(row.baseline, 99))}"
        )
        slow = ' <b class="anom">slower</b>' if row.slower else ""
        href = "/?" + urlencode({"service": row.service})
        rows.append(
            f'<tr class="service{" late" if row.stuck else ""}" data-service="{e(row.service)}">'
            f'<td><a href="{e(href)}" data-filter="service" data-value="{e(row.service)}">'
            f"{e(row.service)}</a></td><td>{row.waiting}</td>"
            f'<td class="{"anom" if row.stuck else ""}">{row.stuck}</td><td>{e(oldest)}</td>'
            f"<td>{e(', '.join(row.awaited) or '-')}</td><td>{e(recent)}{slow}</td>"
            f"<td>{e(base)}</td></tr>"
        )
    return (
        '<div class="card"><h3>who owes what</h3><table class="board"><tr><th>service</th>'
        "<th>waiting</th><th>stuck</th><th>oldest wait</th><th>awaited</th>"
        "<th>step latency p50 / p99</th><th>baseline p50 / p99</th></tr>"
        f"{''.join(rows)}</table></div>"
    )


def _ack_cell(row: dict[str, Any]) -> str:
    parts = []
    acked = row.get("acknowledged")
    if acked:
        parts.append(
            f'<span class="acked" title="{e(acked["at"])}">ack {e(acked["who"])}'
            f"{': ' + e(acked['note']) if acked['note'] else ''}</span>"
        )
    if row.get("cause"):
        parts.append(f'<div class="cause">{e(row["cause"])}</div>')
    return "".join(parts) or "-"


def list_html(
    page: Page, rows: list[dict[str, Any]], now: datetime, params: dict[str, Any] | None = None
) -> str:
    """The instances of one page, with the stuck-since column, and the pager with totals (its
    links keep the other ``params``, for a browser without the script)."""
    body = []
    for item, row in zip(page.items, rows, strict=True):
        kinds = sorted({a.kind for a in item.anomalies})
        due = ago(item.due, now) if item.due else "-"
        if item.due is not None and item.due < now and item.state == "stuck":
            due = f"overdue by {format_duration((now - item.due).total_seconds())}"
        body.append(
            f'<tr class="instance" data-state="{e(item.state)}" '
            f'data-id="{e(item.correlation_id)}"><td>{e(item.saga)}</td>'
            f'<td><a href="{e(link(item))}">{e(item.correlation_id)}</a></td>'
            f"<td>{badge(item.state)}</td><td>{e(ago(item.started, now))}</td>"
            f"<td>{e(ago(item.updated, now))}</td><td>{e(', '.join(item.expected) or '-')}</td>"
            f"<td>{e(', '.join(row['services']) or '-')}</td><td>{e(due)}</td>"
            f'<td class="stuck-since">{e(ago(item.stuck_since, now))}</td>'
            f'<td class="anom">{e(", ".join(kinds))}</td><td class="ack">{_ack_cell(row)}</td>'
            "</tr>"
        )
    head = (
        "<tr><th>saga</th><th>correlation id</th><th>state</th><th>started</th><th>updated</th>"
        "<th>expected next</th><th>owed by</th><th>due</th><th>stuck since</th>"
        "<th>anomalies</th><th>ack / cause</th></tr>"
    )
    empty = "<tr><td colspan=11>none</td></tr>"
    return f"{_pager(page, params or {})}<table>{head}{''.join(body) or empty}</table>"


def _pager(page: Page, params: dict[str, Any]) -> str:
    first, last = page.offset + 1, page.offset + len(page.items)
    shown = f"{first}-{last}" if page.items else "none"
    kept = {k: v for k, v in params.items() if v not in (None, "") and k != "offset"}

    def href(offset: int) -> str:
        return e("/?" + urlencode({**kept, "offset": offset}))

    links = []
    if page.offset > 0:
        back = max(0, page.offset - page.limit)
        links.append(f'<a class="prev" href="{href(back)}" data-offset="{back}">previous</a>')
    if last < page.total or (page.more and page.items):
        links.append(f'<a class="next" href="{href(last)}" data-offset="{last}">next</a>')
    return (
        f'<p class="pager"><span class="showing">{shown} of '
        f'<b class="total">{page.total_text()}</b></span> {" ".join(links)}</p>'
    )


def orphans_html(orphans: list[tuple[str, str, Any]], now: datetime) -> str:
    """Events of a saga whose start was not seen (yet)."""
    if not orphans:
        return ""
    rows = "".join(
        f'<tr class="orphan"><td>{e(saga)}</td><td>{e(corr)}</td><td>{e(obs.type)}</td>'
        f"<td>{e(obs.source)}</td><td>{e(obs.id)}</td><td>{e(ago(obs.time, now))}</td></tr>"
        for saga, corr, obs in orphans
    )
    return (
        f'<div class="card"><h3>orphans ({len(orphans)})</h3><table><tr><th>saga</th>'
        "<th>correlation id</th><th>event</th><th>source</th><th>id</th><th>time</th></tr>"
        f"{rows}</table></div>"
    )


def notes_html(notes: list[Note], cause: dict[str, Any] | None, instance: Instance) -> str:
    """An instance's cause of wait and its acknowledgements and notes, oldest first (an
    acknowledgement of an earlier stuck episode says so)."""
    parts = []
    if cause:
        parts.append(f'<p class="cause">cause: {e(cause.get("text"))}</p>')
    for note in notes:
        parts.append(
            f'<li class="note note-{e(note.kind)}"><b>{e(label(note, instance))}</b> by '
            f'<span class="who">{e(note.who)}</span> at {note.at:%Y-%m-%d %H:%M:%S}Z'
            f'{": " if note.text else ""}<span class="text">{e(note.text)}</span></li>'
        )
    return "".join(parts[:1] if cause else []) + (
        f"<ul>{''.join(parts[1:] if cause else parts)}</ul>" if notes else ""
    )


def ack_form(instance: Instance) -> str:
    """Acknowledge or annotate the instance (who, note), sent by the script."""
    action = "/api/notes" + link(instance).removeprefix("/instances")
    return (
        f'<form id="ack" class="card" data-action="{e(action)}"><b>acknowledge</b> '
        '<label>who <input name="who" required maxlength="200"></label> '
        '<label>note <input name="note" size="50" maxlength="2000"></label> '
        '<button type="submit" name="kind" value="ack">acknowledge</button> '
        '<button type="submit" name="kind" value="note">add note</button> '
        '<span id="ack-status" class="muted"></span></form>'
    )


SCRIPT = """
(function () {
  const body = document.body;
  const every = Number(body.dataset.refresh || 0);
  const form = document.getElementById('filters');
  let seq = 0, debounce = null, last = new Date();
  const live = document.createElement('div');
  live.id = 'live-status';
  live.className = 'banner';
  live.hidden = true;
  document.querySelector('main').prepend(live);
  function stale(why) {
    live.textContent = 'not updated since ' + last.toLocaleTimeString() + ': ' + why;
    live.hidden = false;
  }
  function params() {
    const p = new URLSearchParams(form ? new FormData(form) : undefined);
    for (const [k, v] of [...p]) { if (!v) p.delete(k); }
    return p;
  }
  async function update() {
    const mine = ++seq;
    let r;
    try {
      r = await fetch(body.dataset.src + (form ? '?' + params().toString() : ''),
                      {headers: {Accept: 'application/json'}, credentials: 'same-origin'});
    } catch (err) {
      if (mine === seq) { stale('the server does not answer'); }
      return;
    }
    if (mine !== seq) { return; }
    if (!r.ok) {
      let why = 'HTTP ' + r.status;
      try {
        const detail = (await r.json()).detail;
        why = typeof detail === 'string' ? detail : JSON.stringify(detail);
      } catch (err) { /* not JSON: the status says it */ }
      if (mine === seq) { stale(why); }
      return;
    }
    const parts = await r.json();
    for (const [id, markup] of Object.entries(parts)) {
      const el = document.getElementById(id);
      if (el) { el.innerHTML = markup; }
    }
    last = new Date();
    live.hidden = true;
    body.dataset.updates = String(Number(body.dataset.updates || 0) + 1);
  }
  function changed(resetOffset) {
    if (resetOffset) { form.elements.offset.value = '0'; }
    history.replaceState(null, '', '/?' + params().toString());
    update();
  }
  if (form) {
    form.addEventListener('input', () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => changed(true), 250);
    });
    form.addEventListener('submit', (ev) => { ev.preventDefault(); changed(true); });
    document.addEventListener('click', (ev) => {
      const a = ev.target.closest('a[data-offset], a[data-filter]');
      if (!a) { return; }
      ev.preventDefault();
      if (a.dataset.filter) {
        form.elements[a.dataset.filter].value = a.dataset.value;
        changed(true);
      } else {
        form.elements.offset.value = a.dataset.offset;
        changed(false);
      }
    });
  }
  const ack = document.getElementById('ack');
  if (ack) {
    ack.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const kind = (ev.submitter && ev.submitter.value) || 'ack';
      const note = {who: ack.elements.who.value, note: ack.elements.note.value, kind: kind};
      const r = await fetch(ack.dataset.action, {
        method: 'POST', credentials: 'same-origin',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify(note)});
      const status = document.getElementById('ack-status');
      if (r.ok) {
        ack.elements.note.value = '';
        status.textContent = kind === 'ack' ? 'acknowledged' : 'noted';
        update();
      } else {
        const detail = (await r.json()).detail;
        status.textContent = 'not saved: ' +
          (typeof detail === 'string' ? detail : JSON.stringify(detail));
      }
    });
  }
  if (every > 0) { setInterval(update, every * 1000); }
})();
"""
