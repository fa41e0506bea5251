"""One self-contained HTML page for an AsyncAPI document: no script, font or style is fetched,
so it works offline. It shows the servers, each channel with its operations, and each message
with its headers and payload schema as tables (JSON Schema and Avro; Protobuf as text), the
raw schema one click away. Every value from the document is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["render_page", "to_yaml"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9;line-height:1.4}
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#cfd8e6}header a{color:#9cc3ff;margin-right:14px}
nav{padding:8px 24px;background:#e9edf3;font-size:14px}nav a{margin-right:14px}
main{padding:8px 24px 40px;max-width:1200px}h2{margin:24px 0 8px;font-size:18px}
.card{background:#fff;border:1px solid #e3e6eb;border-radius:6px;padding:12px 16px;margin:12px 0}
.card h3{margin:0 0 6px;font-size:16px}table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e6eb;font-size:13px;
vertical-align:top}th{background:#eef1f5}code{background:#f0f2f5;padding:1px 4px;border-radius:3px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;
font-weight:600;margin-right:6px}.send{background:#2e7d32}.receive{background:#1565c0}
.muted{color:#6b7380}.req{color:#b3261e;font-weight:600}
pre{background:#f0f2f5;padding:8px;overflow:auto;font-size:12px;margin:6px 0}
summary{cursor:pointer;color:#1565c0;font-size:13px}
"""

_MAX_DEPTH = 6


def e(value: Any) -> str:
    """HTML-escape anything (the only way values reach the page)."""
    return html.escape("" if value is None else str(value), quote=True)


def _text(value: Any) -> str:
    """Escaped text whose `backticked` parts show as code (the document's descriptions are
    CommonMark; only code spans are rendered)."""
    parts = e(value).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: leave the text as it is
        return "`".join(parts)
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_yaml(document: Mapping[str, Any]) -> str:
    """The document as YAML, keys in document order."""
    import yaml

    return str(yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True, width=100))


def _resolve(document: Mapping[str, Any], node: Any) -> Any:
    """Follow a local ``$ref`` (``#/a/b``) through the document; anything else as is."""
    seen = 0
    while isinstance(node, Mapping) and isinstance(node.get("$ref"), str) and seen < 20:
        target: Any = document
        for raw in node["$ref"].lstrip("#").strip("/").split("/"):
            part = raw.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, Mapping) or part not in target:
                return node
            target = target[part]
        node, seen = target, seen + 1
    return node


def _ref_name(node: Any) -> str:
    return node["$ref"].rsplit("/", 1)[1] if isinstance(node, Mapping) and "$ref" in node else ""


def _json_type(schema: Any, document: Mapping[str, Any]) -> str:
    """A short type text: ``string (date-time)``, ``array of Line``, ``integer | null``."""
    name = _ref_name(schema)
    schema = _resolve(document, schema)
    if not isinstance(schema, Mapping):
        return "any"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_json_type(option, document) for option in schema[key])
    kind = schema.get("type", "object" if "properties" in schema else "any")
    text = " | ".join(kind) if isinstance(kind, list) else str(kind)
    if text == "array" and "items" in schema:
        text = f"array of {_json_type(schema['items'], document)}"
    if name and text == "object":
        text = name
    if "format" in schema:
        text += f" ({schema['format']})"
    return text


def _constraints(schema: Mapping[str, Any]) -> str:
    notes = []
    for key in ("const", "enum", "default", "minimum", "maximum", "minLength", "maxLength"):
        if key in schema:
            notes.append(f"{key} {json.dumps(schema[key], ensure_ascii=False)}")
    return ", ".join(notes)


def _json_rows(
    schema: Any, document: Mapping[str, Any], prefix: str = "", depth: int = 0
) -> Iterator[tuple[str, str, bool, str]]:
    """(field path, type, required, notes) for each property, nested objects flattened; the
    parts of an ``allOf`` merge (a later part refines a field, e.g. fixes ``type``)."""
    schema = _resolve(document, schema)
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return
    if "allOf" in schema:
        merged: dict[str, tuple[str, str, bool, str]] = {}
        for part in schema["allOf"]:
            for name, kind, needed, notes in _json_rows(part, document, prefix, depth + 1):
                _, _, was_needed, had = merged.get(name, ("", "", False, ""))
                merged[name] = (name, kind, needed or was_needed, f"{had} {notes}".strip())
        yield from merged.values()
    required = set(schema.get("required") or ())
    for name, prop in (schema.get("properties") or {}).items():
        resolved = _resolve(document, prop)
        notes = _constraints(resolved) if isinstance(resolved, Mapping) else ""
        if isinstance(resolved, Mapping) and resolved.get("description"):
            notes = f"{resolved['description']} {notes}".strip()
        yield prefix + name, _json_type(prop, document), name in required, notes
        inner = resolved.get("items", resolved) if isinstance(resolved, Mapping) else None
        yield from _json_rows(inner, document, f"{prefix}{name}.", depth + 1)


def _avro_type(schema: Any) -> str:
    if isinstance(schema, list):
        return " | ".join(_avro_type(option) for option in schema)
    if isinstance(schema, Mapping):
        kind = schema.get("type")
        if kind == "array":
            return f"array of {_avro_type(schema.get('items'))}"
        if kind == "map":
            return f"map of {_avro_type(schema.get('values'))}"
        if kind in ("record", "enum", "fixed"):
            return str(schema.get("name", kind))
        logical = schema.get("logicalType")
        return f"{kind} ({logical})" if logical else str(kind)
    return str(schema)


def _avro_rows(
    schema: Any, prefix: str = "", depth: int = 0
) -> Iterator[tuple[str, str, bool, str]]:
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return
    for field in schema.get("fields") or ():
        kind = field.get("type")
        optional = isinstance(kind, list) and "null" in kind
        notes = str(field.get("doc") or "")
        if "default" in field:
            notes = f"{notes} default {json.dumps(field['default'])}".strip()
        yield prefix + str(field.get("name")), _avro_type(kind), not optional, notes
        options = kind if isinstance(kind, list) else [kind]
        for option in options:
            if isinstance(option, Mapping) and option.get("type") == "record":
                yield from _avro_rows(option, f"{prefix}{field.get('name')}.", depth + 1)


def _table(rows: Iterator[tuple[str, str, bool, str]]) -> str:
    body = "".join(
        f"<tr><td><code>{e(name)}</code>{' <span class=req>*</span>' if needed else ''}</td>"
        f"<td>{e(kind)}</td><td>{e(notes)}</td></tr>"
        for name, kind, needed, notes in rows
    )
    if not body:
        return "<p class=muted>no fields described</p>"
    return f"<table><tr><th>field</th><th>type</th><th>notes</th></tr>{body}</table>"


def _payload(message: Mapping[str, Any], document: Mapping[str, Any]) -> str:
    if "payload" not in message:
        return "<p class=muted>payload: any data (no schema declared)</p>"
    name = _ref_name(message["payload"])
    schema = _resolve(document, message["payload"])
    shown = f"payload <code>{e(name)}</code>" if name else "payload"
    if isinstance(schema, Mapping) and "schemaFormat" in schema:
        fmt, inner = str(schema["schemaFormat"]), schema.get("schema")
        shown += f" <span class=muted>{e(fmt)}</span>"
        if "avro" in fmt:
            table = _table(_avro_rows(inner))
        elif "protobuf" in fmt:
            table = f"<pre>{e(inner)}</pre>"
        else:
            table = _table(_json_rows(inner, document))
    else:
        table = _table(_json_rows(schema, document))
    raw = json.dumps(schema, indent=2, ensure_ascii=False)
    return (
        f"<p>{shown}</p>{table}<details><summary>raw schema</summary><pre>{e(raw)}</pre></details>"
    )


def _message(key: str, message: Mapping[str, Any], document: Mapping[str, Any]) -> str:
    title = message.get("name") or message.get("title") or key
    summary = f"<p>{_text(message['summary'])}</p>" if message.get("summary") else ""
    content = message.get("contentType", document.get("defaultContentType", ""))
    headers = _table(_json_rows(message.get("headers"), document))
    return (
        f'<div class=card id="message-{e(key)}"><h3>{e(title)}</h3>{summary}'
        f"<p class=muted>content type <code>{e(content)}</code></p>"
        f"{_payload(message, document)}"
        f"<details><summary>headers (CloudEvents attributes)</summary>{headers}</details></div>"
    )


def _operation(name: str, operation: Mapping[str, Any]) -> str:
    action = str(operation.get("action", ""))
    extra = operation.get("x-choreograph") or {}
    who = extra.get("group") or extra.get("source") or ""
    messages = ", ".join(
        f'<a href="#message-{e(_ref_name(m))}">{e(_ref_name(m))}</a>'
        for m in operation.get("messages") or ()
    )
    details = ""
    if extra.get("handler"):
        details = f" <span class=muted>handler <code>{e(extra['handler'])}</code></span>"
    if operation.get("summary"):
        details += f"<br>{e(operation['summary'])}"
    return (
        f"<tr><td><span class='badge {e(action)}'>{e(action)}</span></td>"
        f"<td><code>{e(name)}</code></td><td>{e(who)}{details}</td><td>{messages}</td></tr>"
    )


def _channel(key: str, channel: Mapping[str, Any], document: Mapping[str, Any]) -> str:
    ops = [
        _operation(name, op)
        for name, op in (document.get("operations") or {}).items()
        if _ref_name(op.get("channel")) == key
    ]
    table = (
        "<table><tr><th>action</th><th>operation</th><th>by</th><th>messages</th></tr>"
        + "".join(ops)
        + "</table>"
    )
    return (
        f'<div class=card id="channel-{e(key)}"><h3>{e(channel.get("address", key))}</h3>'
        f"<p class=muted>{_text(channel.get('description', ''))}</p>{table}</div>"
    )


def _servers(document: Mapping[str, Any]) -> str:
    servers = document.get("servers") or {}
    if not servers:
        return "<p class=muted>embedded broker (no server to join)</p>"
    rows = "".join(
        f"<tr><td>{e(name)}</td><td>{e(s.get('protocol'))}</td><td><code>{e(s.get('host'))}"
        f"{e(s.get('pathname', ''))}</code></td><td>{e(s.get('description', ''))}</td></tr>"
        for name, s in servers.items()
    )
    return f"<table><tr><th>name</th><th>protocol</th><th>host</th><th></th></tr>{rows}</table>"


def render_page(document: Mapping[str, Any], *, raw_links: bool = True) -> str:
    """The HTML page of ``document``; ``raw_links`` links ``asyncapi.json``/``.yaml`` beside it."""
    info = document.get("info") or {}
    channels = document.get("channels") or {}
    messages = (document.get("components") or {}).get("messages") or {}
    links = (
        '<p><a href="asyncapi.json">asyncapi.json</a><a href="asyncapi.yaml">asyncapi.yaml</a></p>'
        if raw_links
        else ""
    )
    nav = "".join(
        f'<a href="#channel-{e(k)}">{e(c.get("address", k))}</a>' for k, c in channels.items()
    )
    body = "".join(_channel(k, c, document) for k, c in channels.items())
    cards = "".join(_message(k, m, document) for k, m in messages.items())
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{e(info.get('title'))} · AsyncAPI</title><style>{CSS}</style></head><body>"
        f"<header><h1>{e(info.get('title'))} <span class=muted>{e(info.get('version'))}</span></h1>"
        f"<p>{_text(info.get('description', ''))}</p>"
        f"<p class=muted>AsyncAPI {e(document.get('asyncapi'))}</p>{links}</header>"
        f"<nav>channels: {nav or '<span class=muted>none</span>'}</nav><main>"
        f"<h2>Servers</h2>{_servers(document)}"
        f"<h2>Channels</h2>{body or '<p class=muted>no channels declared</p>'}"
        f"<h2>Messages</h2>{cards}</main></body></html>"
    )
