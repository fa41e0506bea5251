"""The CloudEvents Kafka binding, binary content mode: ``ce_<attr>`` headers (UTF-8), a
``content-type`` header, the data as the record value and ``partitionkey`` as the record key.
Records in structured mode (``content-type: application/cloudevents+json``) are read too."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from broker.envelope import (
    JSON_CONTENT_TYPE,
    KAFKA_PREFIXES,
    Event,
    format_time,
    from_attributes,
    from_binary,
    is_structured,
)
from broker.errors import EnvelopeError
from broker.jsontext import dumps

__all__ = ["decode", "decode_record", "encode_event", "encode_events"]

_PREFIX = KAFKA_PREFIXES[0]
_TEXT_CACHE: dict[str, bytes] = {}
Header = tuple[str, bytes]
#: Per header name, whole headers for values that repeat from event to event (spec version,
#: source, type, content type): one shared tuple each, nothing allocated per event.
_SPECVERSIONS: dict[str, Header] = {}
_SOURCES: dict[str, Header] = {}
_TYPES: dict[str, Header] = {}
_CONTENT_TYPES: dict[str, Header] = {}
#: Data types a JSON event's data is encoded from directly (``Event.data_bytes`` does more).
_JSON_VALUES = frozenset((str, dict, list, int, float, bool))


def _cached(text: str) -> bytes:
    """UTF-8 of attribute values that repeat from event to event (the data schema)."""
    raw = _TEXT_CACHE.get(text)
    if raw is None:
        raw = text.encode()
        if len(_TEXT_CACHE) < 4096:
            _TEXT_CACHE[text] = raw
    return raw


def _header(cache: dict[str, Header], name: str, text: str) -> Header:
    header = (name, text.encode())
    if len(cache) < 4096:
        cache[text] = header
    return header


def encode_event(event: Event) -> tuple[bytes | None, list[Header], bytes]:
    """Key, headers and value of the record for ``event`` (the envelope's binary binding with
    the ``ce_`` prefix, written directly: publishing is CPU-bound in Python)."""
    specversion, source, kind = event.specversion, event.source, event.type
    headers = [
        _SPECVERSIONS.get(specversion) or _header(_SPECVERSIONS, "ce_specversion", specversion),
        ("ce_id", event.id.encode()),
        _SOURCES.get(source) or _header(_SOURCES, "ce_source", source),
        _TYPES.get(kind) or _header(_TYPES, "ce_type", kind),
    ]
    moment = event.time
    if moment is not None:
        headers.append(_TIME[1] if moment is _TIME[0] else _time_header(moment))
    if event.subject is not None:
        headers.append(("ce_subject", event.subject.encode()))
    if event.dataschema is not None:
        headers.append(("ce_dataschema", _cached(event.dataschema)))
    names = _NAMES
    for name, value in event.extensions.items():
        header = names.get(name) or _name(name)
        if value.__class__ is str:
            headers.append((header, value.encode()))
        else:
            headers.append((header, _text(value).encode()))
    content_type = event.datacontenttype
    if content_type is not None:
        headers.append(
            _CONTENT_TYPES.get(content_type)
            or _header(_CONTENT_TYPES, "content-type", content_type)
        )
    key = event.extensions.get("partitionkey")
    data = event.data
    if content_type == JSON_CONTENT_TYPE and data is not None and data.__class__ in _JSON_VALUES:
        body: bytes = dumps(data)  # what data_bytes() gives, without its checks
    else:
        body = event.data_bytes()
    return (None if key is None else str(key).encode()), headers, body


def encode_events(
    events: Sequence[Event], errors: dict[int, Exception]
) -> list[tuple[bytes | None, list[Header], bytes] | None]:
    """:func:`encode_event` of each event of a list (None where its data JSON cannot hold,
    the error in ``errors`` by index). The headers a list's events share (spec version,
    source, type, time, content type: one object each across a list stamped at once) are
    looked up once per run of events sharing them, and a JSON event's data is encoded
    directly: the same headers, in the same order, as :func:`encode_event` writes."""
    records: list[tuple[bytes | None, list[Header], bytes] | None] = []
    append = records.append
    spec = source = kind = moment = content_type = None
    shared: tuple[Header, Header, Header, Header | None, Header | None] | None = None
    names, json_values = _NAMES, _JSON_VALUES
    for index, event in enumerate(events):
        if (
            event.source is not source
            or event.type is not kind
            or event.time is not moment
            or event.specversion is not spec
            or event.datacontenttype is not content_type
            or event.subject is not None
            or event.dataschema is not None
        ):
            try:
                append(encode_event(event))
            except (TypeError, ValueError) as exc:  # data JSON cannot hold, text UTF-8 cannot
                append(None)
                errors[index] = exc
                continue
            if event.subject is None and event.dataschema is None:  # the next may share these
                spec, source, kind = event.specversion, event.source, event.type
                moment, content_type = event.time, event.datacontenttype
                shared = _shared(spec, source, kind, moment, content_type)
            continue
        assert shared is not None
        try:
            append(_encode_shared(event, shared, names, json_values))
        except (TypeError, ValueError) as exc:  # data JSON cannot hold, text UTF-8 cannot
            append(None)
            errors[index] = exc
    return records


def _encode_shared(
    event: Event,
    shared: tuple[Header, Header, Header, Header | None, Header | None],
    names: dict[str, str],
    json_values: frozenset[type],
) -> tuple[bytes | None, list[Header], bytes]:
    """:func:`encode_event` of an event whose shared headers are ``shared``."""
    headers = [shared[0], ("ce_id", event.id.encode()), shared[1], shared[2]]
    if shared[3] is not None:
        headers.append(shared[3])
    extensions = event.extensions
    for name, value in extensions.items():
        header = names.get(name) or _name(name)
        if value.__class__ is str:
            headers.append((header, value.encode()))
        else:
            headers.append((header, _text(value).encode()))
    if shared[4] is not None:
        headers.append(shared[4])
    data = event.data
    if (
        event.datacontenttype == JSON_CONTENT_TYPE
        and data is not None
        and data.__class__ in json_values
    ):
        body: bytes = dumps(data)
    else:
        body = event.data_bytes()
    key = extensions.get("partitionkey")
    return (None if key is None else str(key).encode()), headers, body


def _shared(
    spec: str, source: str, kind: str, moment: datetime | None, content_type: str | None
) -> tuple[Header, Header, Header, Header | None, Header | None]:
    """The headers of these attributes, as :func:`encode_event` writes them."""
    time_header = None
    if moment is not None:
        time_header = _TIME[1] if moment is _TIME[0] else _time_header(moment)
    return (
        _SPECVERSIONS.get(spec) or _header(_SPECVERSIONS, "ce_specversion", spec),
        _SOURCES.get(source) or _header(_SOURCES, "ce_source", source),
        _TYPES.get(kind) or _header(_TYPES, "ce_type", kind),
        time_header,
        None
        if content_type is None
        else _CONTENT_TYPES.get(content_type)
        or _header(_CONTENT_TYPES, "content-type", content_type),
    )


#: The last time header written, by its datetime: a ``publish_many`` list shares one.
_TIME: list[Any] = [None, None]


def _time_header(moment: datetime) -> Header:
    header = ("ce_time", format_time(moment).encode())
    _TIME[:] = moment, header
    return header


_NAMES: dict[str, str] = {}


def _name(extension: str) -> str:
    header = "ce_" + extension
    if len(_NAMES) < 4096:
        _NAMES[extension] = header
    return header


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _read(key: bytes | None, headers: Mapping[str, str], value: bytes | None) -> Event:
    event = from_binary(headers, value or b"", KAFKA_PREFIXES)
    if key is not None and "partitionkey" not in event.extensions:
        event.extensions["partitionkey"] = key.decode("utf-8", "replace")
    return event


def decode(key: bytes | None, headers: Iterable[tuple[str, bytes]], value: bytes | None) -> Event:
    """The event in a record given as key, headers and value (raises EnvelopeError)."""
    return _read(key, {name: raw.decode("utf-8", "replace") for name, raw in headers}, value)


def decode_record(record: Any) -> tuple[Event | None, dict[str, str], EnvelopeError | None]:
    """A consumer record's event (or why there is none) and its headers as text."""
    headers: dict[str, str] = {}
    attrs: dict[str, Any] = {}
    for name, raw in record.headers or ():
        text = raw.decode("utf-8", "replace")
        headers[name] = text
        if name[:3] == "ce_":
            attrs[name[3:]] = text
    # lower-case names and binary mode: the attributes were taken in this pass
    plain = "".join(headers).islower()
    content_type = headers.get("content-type")
    try:
        if plain and not (content_type and is_structured(content_type)):
            event = from_attributes(attrs, content_type, record.value or b"", _PREFIX)
            key = record.key
            if key is not None and "partitionkey" not in event.extensions:
                event.extensions["partitionkey"] = key.decode("utf-8", "replace")
        else:
            event = _read(record.key, headers, record.value)
    except EnvelopeError as exc:
        return None, headers, exc
    return event, headers, None
