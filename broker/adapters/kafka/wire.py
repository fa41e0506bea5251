"""The CloudEvents Kafka binding, binary content mode: ``ce_<attr>`` headers (UTF-8), a
``content-type`` header, the data as the record value and ``partitionkey`` as the record key.
Records in structured mode (``content-type: application/cloudevents+json``) are read too."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from broker.envelope import (
    JSON_CONTENT_TYPE,
    KAFKA_PREFIXES,
    Event,
    binary_event,
    format_time,
    from_binary,
    is_structured,
)
from broker.errors import EnvelopeError
from broker.jsontext import dumps

__all__ = [
    "decode",
    "decode_record",
    "encode_event",
    "encode_events",
    "iter_records",
    "record_headers",
    "record_key",
    "record_time",
]

_PREFIX = KAFKA_PREFIXES[0]
_TEXT_CACHE: dict[str, bytes] = {}
Header = tuple[str, bytes]
#: Per header name, whole headers for values that repeat from event to event (spec version,
#: source, type, content type): one shared tuple each, nothing allocated per event.
_SPECVERSIONS: dict[str, Header] = {}
_SOURCES: dict[str, Header] = {}
_TYPES: dict[str, Header] = {}
_CONTENT_TYPES: dict[str, Header] = {}
#: A header not set yet.
_UNSET: Header = ("", b"")
#: No data yet (``None`` is data).
_NOTHING = object()
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
    the error in ``errors`` by index): :func:`iter_records` kept in a list."""
    records: list[tuple[bytes | None, list[Header], bytes] | None] = [None] * len(events)
    for index, record in iter_records(events, range(len(events)), errors):
        records[index] = record
    return records


def iter_records(
    events: Sequence[Event], indices: Iterable[int], errors: dict[int, Exception]
) -> Iterator[tuple[int, tuple[bytes | None, list[Header], bytes]]]:
    """The index and :func:`encode_event` record of each event of ``events`` at ``indices``,
    one at a time (an event whose data JSON cannot hold is skipped, its error in ``errors``
    by index). Taken one by one and appended to a record batch, a record is freed as soon as
    it is appended: a list of them would keep about four objects per event alive through
    the call, which the cyclic garbage collector then walks again and again (0.7 us per
    event of a 500-event ``publish_many``, a fifth of its CPU). The headers a list's events
    share (spec version, source, type, time, content type: one object each across a list
    stamped at once) are looked up once per run of events sharing them, and a JSON event's
    data is encoded directly: the same headers, in the same order, as :func:`encode_event`
    writes. The rest of a run's event is encoded here, not in a function of its own (a call
    per event is a fifth of this loop's time).

    Values a list's events share (one traceparent per call, one key, one payload object)
    are encoded once: extension values are immutable, and a data object the caller changes
    while the list is encoded (the publisher lets its sender run between two record
    batches) is written as it was when first encoded."""
    spec = source = kind = moment = content_type = None
    spec_h = source_h = type_h = _UNSET  # (set by the first event: it starts a run)
    time_h: Header | None = None
    content_h: Header | None = None
    json_run = False
    names, json_values = _NAMES, _JSON_VALUES
    seen: dict[str, tuple[object, Header]] = {}  # per extension: the last value, its header
    last_data: Any = _NOTHING
    last_body = b""
    for index in indices:
        event = events[index]
        if (
            event.source is not source
            or event.type is not kind
            or event.time is not moment
            or event.specversion is not spec
            or event.datacontenttype is not content_type
            or event.subject is not None
            or event.dataschema is not None
        ):
            found = _run_start(event, index, errors)
            if found is None:
                continue
            record, run = found
            if run is not None:  # the next events may share these headers
                spec, source, kind, moment, content_type = run[0]
                spec_h, source_h, type_h, time_h, content_h = run[1]
                json_run = content_type == JSON_CONTENT_TYPE
                last_data, last_body = _NOTHING, b""  # a body is reused in one run only
            yield index, record
            continue
        try:
            if time_h is None:
                headers = [spec_h, ("ce_id", event.id.encode()), source_h, type_h]
            else:
                headers = [spec_h, ("ce_id", event.id.encode()), source_h, type_h, time_h]
            extensions = event.extensions
            for name, value in extensions.items():
                before = seen.get(name)
                if before is None or before[0] is not value:
                    text = value.encode() if value.__class__ is str else _text(value).encode()
                    before = seen[name] = (value, (names.get(name) or _name(name), text))
                headers.append(before[1])
            if content_h is not None:
                headers.append(content_h)
            data = event.data
            if data is not last_data:
                if json_run and data is not None and data.__class__ in json_values:
                    last_data, last_body = data, dumps(data)
                else:
                    last_data, last_body = _NOTHING, event.data_bytes()
            key = extensions.get("partitionkey")
            raw_key = None if key is None else str(key).encode()
        except (TypeError, ValueError) as exc:  # data JSON cannot hold, text UTF-8 cannot
            errors[index] = exc
            continue
        yield index, (raw_key, headers, last_body)


_Run = tuple[
    tuple[str, str, str, datetime | None, str | None],
    tuple[Header, Header, Header, Header | None, Header | None],
]


def _run_start(
    event: Event, index: int, errors: dict[int, Exception]
) -> tuple[tuple[bytes | None, list[Header], bytes], _Run | None] | None:
    """The record of an event that starts a run in :func:`iter_records`, and the attributes
    and headers the next events of the run may share with it (None when it has a subject or
    data schema: no run starts); None when it cannot be encoded (its error in ``errors``)."""
    try:
        record = encode_event(event)
    except (TypeError, ValueError) as exc:  # data JSON cannot hold, text UTF-8 cannot
        errors[index] = exc
        return None
    if event.subject is not None or event.dataschema is not None:
        return record, None
    attributes = (
        event.specversion,
        event.source,
        event.type,
        event.time,
        event.datacontenttype,
    )
    return record, (attributes, _shared(*attributes))


def record_key(event: Event) -> bytes | None:
    """The record key of ``event``, as :func:`encode_event` writes it (its ``partitionkey``;
    raises ValueError when that text is not UTF-8)."""
    key = event.extensions.get("partitionkey")
    return None if key is None else str(key).encode()


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


def decode(
    key: bytes | None, headers: Iterable[tuple[str, bytes | None]], value: bytes | None
) -> Event:
    """The event in a record given as key, headers and value (raises EnvelopeError)."""
    return _read(key, {name: _text_of(raw) for name, raw in headers}, value)


#: Per header name, the key its text gets in :func:`decode_record`'s attributes: the
#: attribute name (``ce_`` removed; ``datacontenttype`` for ``content-type``), ``"-"`` for a
#: header that is no attribute, ``"CE_"`` for a binding header not in lower case.
_KEYS: dict[str, str] = {}
_IGNORED = "-"
_MIXED_CASE = "CE_"


def _key(name: str) -> str:
    lowered = name.lower()
    if lowered != name and (lowered.startswith(_PREFIX) or lowered == "content-type"):
        key = _MIXED_CASE  # read the long way, as the binding's names are case-insensitive
    elif name == "content-type":
        key = "datacontenttype"
    elif name.startswith(_PREFIX):
        key = sys.intern(name[len(_PREFIX) :])
        if key in _NOT_ATTRIBUTES:
            key = _IGNORED
    else:
        key = _IGNORED
    if len(_KEYS) < 4096:
        _KEYS[name] = key
    return key


#: ``ce_`` headers that carry no attribute (the data travels as the record value).
_NOT_ATTRIBUTES = frozenset(("data", "data_base64", "datacontenttype"))


def decode_record(record: Any) -> tuple[Event | None, EnvelopeError | None]:
    """A consumer record's event, or why there is none.

    The common record (lower-case names, binary mode, attributes that need only the checks
    every event passes) is read in one pass over its headers, each text stored under its
    attribute's name; anything else the long way (:func:`decode`)."""
    keys = _KEYS
    try:
        try:  # every name seen before (a subscript is cheaper than a get() call)
            attrs = {keys[name]: raw.decode() for name, raw in record.headers or ()}
        except KeyError:
            attrs = {(keys.get(n) or _key(n)): raw.decode() for n, raw in record.headers or ()}
    except (UnicodeDecodeError, AttributeError):
        return _decoded_long(record)
    if _MIXED_CASE in attrs:
        return _decoded_long(record)
    attrs.pop(_IGNORED, None)
    content_type = attrs.get("datacontenttype")
    try:
        if (
            content_type is not None
            and content_type != JSON_CONTENT_TYPE
            and is_structured(content_type)
        ):
            event = Event.from_json(record.value or b"")
        else:
            found = binary_event(attrs, record.value)
            if found is None:
                return _decoded_long(record)
            event = found
    except EnvelopeError as exc:
        return None, exc
    key = record.key
    if key is not None and "partitionkey" not in event.extensions:
        event.extensions["partitionkey"] = key.decode("utf-8", "replace")
    return event, None


#: The last time header :func:`record_time` read, and its time (``publish_many`` gives a
#: list's events one time: consecutive records of a partition often share it).
_LAST_TIME: list[tuple[bytes | None, float]] = [(None, 0.0)]  # swapped whole: thread-safe


def record_time(record: Any) -> float | None:
    """The time of a record's event in seconds since the epoch (``event_time`` of what
    :func:`decode_record` gives), read from its ``ce_time`` and ``content-type`` headers
    alone; None where only decoding tells: no ``ce_time`` or ``content-type`` header (a
    mixed-case one, say), structured mode, a time that is not ISO 8601 text.

    A record that does not decode at all gets the time of its header here (decoded, it
    has no event, hence no time)."""
    headers = dict(record.headers or ())  # the last of a name counts, as in decode_record
    found = headers.get("ce_time")
    content_type = headers.get("content-type")
    if not found or content_type is None:
        return None
    if content_type != _JSON_BYTES and _structured_bytes(content_type):
        return None
    last = _LAST_TIME[0]
    if found == last[0]:
        return last[1]
    try:
        moment = _from_iso(found.decode())
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = moment.timestamp()
    _LAST_TIME[0] = (found, seconds)
    return seconds


def _structured_bytes(raw: bytes) -> bool:
    """Whether a content-type header says structured mode (or is not text)."""
    try:
        return is_structured(raw.decode())
    except (UnicodeDecodeError, AttributeError):
        return True


_JSON_BYTES = JSON_CONTENT_TYPE.encode()
_from_iso = datetime.fromisoformat


def _decoded_long(record: Any) -> tuple[Event | None, EnvelopeError | None]:
    try:
        return _read(record.key, record_headers(record), record.value), None
    except EnvelopeError as exc:
        return None, exc


def record_headers(record: Any) -> dict[str, str]:
    """A consumer record's headers as text."""
    return {name: _text_of(raw) for name, raw in record.headers or ()}


def _text_of(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode("utf-8", "replace")
