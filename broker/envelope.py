"""The CloudEvents 1.0 envelope and its protocol bindings.

:class:`Event` is what every part of choreograph passes around. It encodes to the structured
JSON format (:meth:`Event.to_json`) and to the binary content mode of each protocol binding:

* Kafka: headers ``ce_<attr>``, a ``content-type`` header, message key = ``partitionkey``;
* AMQP 0-9-1: application headers ``cloudEvents_<attr>`` (``cloudEvents:`` is read too),
  ``content-type`` and ``message-id`` properties;
* NATS: headers ``ce-<attr>``, ``Nats-Msg-Id`` = ``id``.

The adapters map :func:`to_binary` / :func:`from_binary` onto their client's message type.
A message whose ``content-type`` is ``application/cloudevents+json`` is read in structured mode.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import itertools
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from broker import jsontext
from broker.errors import EnvelopeError

__all__ = [
    "AMQP_PREFIXES",
    "KAFKA_PREFIXES",
    "NATS_PREFIXES",
    "Event",
    "binary_event",
    "format_time",
    "from_attributes",
    "from_binary",
    "is_json_content_type",
    "is_structured",
    "new_event",
    "new_id",
    "new_ids",
    "parse_time",
    "stamped_event",
    "to_binary",
]

SPECVERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
JSON_CONTENT_TYPE = "application/json"

KAFKA_PREFIXES = ("ce_",)
AMQP_PREFIXES = ("cloudEvents_", "cloudEvents:", "ce-")  # ce-: the Knative RabbitMQ binding
NATS_PREFIXES = ("ce-",)

# Context attributes with a meaning of their own; anything else is an extension.
_OPTIONAL_ATTRIBUTES = ("time", "subject", "datacontenttype", "dataschema")
_CORE_ATTRIBUTES = frozenset(("id", "source", "type", "specversion", *_OPTIONAL_ATTRIBUTES))
_NOT_EXTENSIONS = _CORE_ATTRIBUTES | {"data", "data_base64"}
_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,40}\Z")
_valid_names: set[str] = set()
#: Extensions the core writes as integers (binary bindings carry every value as text): the
#: modules that define them register them with :func:`integer_extension`.
_INTEGER_EXTENSIONS: set[str] = set()


def integer_extension(name: str) -> None:
    """Read extension ``name`` back as an integer from binary bindings (where it is text)."""
    _INTEGER_EXTENSIONS.add(name)


#: The last two hex digits of an id, in order: a chunk of ids is a head and each of these.
_LOW_DIGITS = tuple(f"{n:02x}" for n in range(256))


def _id_stream() -> tuple[str, Iterator[int]]:
    """A random 60-bit prefix (``xxxxxxxx-xxxx-4xxx-``) and a counter of chunks of 256 ids
    from a random start."""
    bits = int.from_bytes(os.urandom(16), "big")
    prefix = f"{bits >> 68:015x}"
    start = (bits & ((1 << 54) - 1)) >> 8  # 2**62 - 2**54 ids to go before passing 62 bits
    return f"{prefix[:8]}-{prefix[8:12]}-4{prefix[12:]}-", itertools.count(start)


_id_prefix, _id_chunks = _id_stream()
#: What is left of the chunk of ids being handed out.
_ids: Iterator[str] = iter(())


def _new_id_stream() -> None:
    global _id_prefix, _id_chunks, _ids
    _id_prefix, _id_chunks = _id_stream()
    _ids = iter(())


os.register_at_fork(after_in_child=_new_id_stream)


def _id_chunk() -> Iterator[str]:
    """The next 256 ids: a counter value's digits but the last two, then each of those."""
    n = next(_id_chunks) << 8  # ``next`` is atomic: threads never share a chunk
    head = "%s%04x-%010x" % (_id_prefix, 0x8000 | (n >> 48), (n >> 8) & 0xFFFFFFFFFF)  # noqa: UP031
    return iter([head + low for low in _LOW_DIGITS])


def new_id() -> str:
    """An event id shaped as a version 4 UUID, about 10x cheaper than ``str(uuid.uuid4())``.

    Uniqueness, not secrecy, is what an event id needs: 60 random bits chosen per process (and
    again in a forked child) followed by a 62-bit counter that starts at a random value. Ids
    are made 256 at a time (one string concatenation each) and handed out in counter order.
    """
    global _ids
    found = next(_ids, None)
    if found is None:
        _ids = chunk = _id_chunk()
        found = next(chunk)
    return found


def new_ids(count: int) -> list[str]:
    """``count`` new ids, as :func:`new_id` hands them out (a ``publish_many`` list takes
    them at once)."""
    global _ids
    found = list(itertools.islice(_ids, count))
    while len(found) < count:
        _ids = chunk = _id_chunk()
        found += itertools.islice(chunk, count - len(found))
    return found


def check_extension_names(names: Iterable[str]) -> None:
    """Raise EnvelopeError for a name that is not a valid CloudEvents extension name."""
    for name in names:
        if name in _valid_names:
            continue
        if not _EXTENSION_NAME.match(name) or name in _CORE_ATTRIBUTES or name == "data":
            raise EnvelopeError(
                f"extension name {name!r} is invalid: use lower-case letters and digits "
                "only, and not a core attribute name"
            )
        if len(_valid_names) < 10_000:
            _valid_names.add(name)


ExtensionValue = str | int | bool


#: RFC 3339 text of an aware UTC datetime, as format_time writes it (a ``Z``, microseconds when
#: there are any), in one C call: about a third of the instructions of a Python formatter.
_utc_text = msgspec.to_builtins
#: The last datetime formatted and its text: the events of one ``publish_many`` share their
#: time object, so the list is formatted once.
_last_moment: datetime | None = None
_last_text = ""


def format_time(moment: datetime) -> str:
    """Render an aware datetime as RFC 3339 in UTC with a ``Z`` suffix (microseconds when
    there are any)."""
    global _last_moment, _last_text
    if moment is _last_moment:
        return _last_text
    if moment.tzinfo is not UTC:
        text = moment.astimezone(UTC).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    utc: str = _utc_text(moment)
    _last_moment, _last_text = moment, utc
    return utc


_from_iso = datetime.fromisoformat


def _parse_time(text: Any) -> datetime:
    """:func:`parse_time` of an attribute's value (text, or anything ``str`` makes text of)."""
    if text.__class__ is not str:
        text = str(text)
    try:
        moment = _from_iso(text)
    except ValueError as exc:
        raise EnvelopeError(f"{text!r} is not an RFC 3339 timestamp") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp; a naive one is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise EnvelopeError(f"{text!r} is not an RFC 3339 timestamp") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_JSON_TYPES: dict[str | None, bool] = {None: True, JSON_CONTENT_TYPE: True}


def is_json_content_type(content_type: str | None) -> bool:
    """Whether data with this content type is carried as JSON (``None`` means JSON)."""
    known = _JSON_TYPES.get(content_type)
    if known is not None:
        return known
    assert content_type is not None
    media = content_type.split(";", 1)[0].strip().lower()
    found = media == JSON_CONTENT_TYPE or media.endswith("+json") or media == "text/json"
    if len(_JSON_TYPES) < 1024:
        _JSON_TYPES[content_type] = found
    return found


@dataclasses.dataclass(slots=True)
class Event:
    """One CloudEvent: context attributes, extensions and data.

    ``data`` is any JSON value when ``datacontenttype`` is JSON (the default), else ``bytes``
    (or ``str`` for ``text/*``). Extensions are lower-case alphanumeric names with string,
    integer or boolean values.
    """

    type: str
    source: str
    data: Any = None
    id: str = dataclasses.field(default_factory=new_id)
    time: datetime | None = dataclasses.field(default_factory=functools.partial(datetime.now, UTC))
    subject: str | None = None
    datacontenttype: str | None = JSON_CONTENT_TYPE
    dataschema: str | None = None
    specversion: str = SPECVERSION
    extensions: dict[str, ExtensionValue] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if (
            self.type.__class__ is not str
            or self.source.__class__ is not str
            or not self.type
            or not self.source
            or not self.id
        ):
            self._check_required()
        if self.extensions and not _valid_names.issuperset(self.extensions):
            check_extension_names(self.extensions)

    def _check_required(self) -> None:
        if not self.type or not isinstance(self.type, str):
            raise EnvelopeError("a CloudEvent needs a non-empty 'type' attribute")
        if not self.source or not isinstance(self.source, str):
            raise EnvelopeError("a CloudEvent needs a non-empty 'source' attribute")
        if not self.id:
            raise EnvelopeError("a CloudEvent needs a non-empty 'id' attribute")

    # -- well-known extensions -------------------------------------------------------------

    @property
    def correlationid(self) -> str | None:
        """The ``correlationid`` extension: the business transaction this event belongs to."""
        return _str_or_none(self.extensions.get("correlationid"))

    @property
    def causationid(self) -> str | None:
        """The ``causationid`` extension: the id of the event that caused this one."""
        return _str_or_none(self.extensions.get("causationid"))

    @property
    def traceparent(self) -> str | None:
        """The W3C ``traceparent`` of the distributed-tracing extension."""
        return _str_or_none(self.extensions.get("traceparent"))

    @property
    def partitionkey(self) -> str | None:
        """The ``partitionkey`` extension: events with one key keep their order."""
        return _str_or_none(self.extensions.get("partitionkey"))

    @property
    def expiration(self) -> datetime | None:
        """The absolute expiry time (``expiration`` extension), if the event has a TTL."""
        raw = self.extensions.get("expiration")
        return parse_time(str(raw)) if raw is not None else None

    def is_expired(self, now: datetime | None = None) -> bool:
        """Whether the event's ``expiration`` lies in the past."""
        expiry = self.expiration
        return expiry is not None and expiry <= (now or datetime.now(UTC))

    def with_ttl(self, ttl: float | timedelta, now: datetime | None = None) -> Event:
        """A copy that expires ``ttl`` (seconds or a timedelta) from ``now``."""
        delta = ttl if isinstance(ttl, timedelta) else timedelta(seconds=ttl)
        if delta <= timedelta(0):
            raise EnvelopeError(f"a TTL must be positive, got {delta.total_seconds()}s")
        expiry = (now or datetime.now(UTC)) + delta
        return self.with_extensions(expiration=format_time(expiry))

    def with_extensions(self, **values: ExtensionValue | None) -> Event:
        """A copy with extensions set (a ``None`` value removes the extension)."""
        extensions = dict(self.extensions)
        for name, value in values.items():
            if value is None:
                extensions.pop(name, None)
            else:
                extensions[name] = value
        return dataclasses.replace(self, extensions=extensions)

    def replace(self, **changes: Any) -> Event:
        """A copy with some attributes changed."""
        return dataclasses.replace(self, **changes)

    # -- data ------------------------------------------------------------------------------

    def data_bytes(self) -> bytes:
        """The data as bytes, encoded according to ``datacontenttype``."""
        data = self.data
        if isinstance(data, bytes | bytearray | memoryview):
            return bytes(data)
        if data is None:
            return b""
        if is_json_content_type(self.datacontenttype):
            return jsontext.dumps(data)
        if isinstance(data, str):
            return data.encode()
        raise EnvelopeError(
            f"event {self.id}: data of type {type(data).__name__} cannot be sent as "
            f"{self.datacontenttype!r}; pass bytes or use a JSON content type"
        )

    # -- structured mode -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The structured-mode JSON object (extensions as top-level members)."""
        out: dict[str, Any] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        if self.time is not None:
            out["time"] = format_time(self.time)
        for name in ("subject", "datacontenttype", "dataschema"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.extensions)
        data = self.data
        if isinstance(data, bytes | bytearray | memoryview):
            out["data_base64"] = base64.b64encode(bytes(data)).decode()
        elif data is not None:
            out["data"] = data
        return out

    def to_json(self) -> str:
        """The structured-mode JSON text."""
        return jsontext.dumps_text(self.to_dict())

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Event:
        """Read a structured-mode JSON object."""
        if obj.__class__ is not dict and not isinstance(obj, Mapping):
            raise EnvelopeError("a structured CloudEvent must be a JSON object")
        specversion = obj.get("specversion")
        if specversion != SPECVERSION:
            raise EnvelopeError(f"unsupported CloudEvents specversion {specversion!r}; need 1.0")
        data: Any = obj.get("data")
        if "data_base64" in obj:
            data = base64.b64decode(obj["data_base64"])
        elif data.__class__ is str and is_json_content_type(obj.get("datacontenttype")):
            data = _maybe_json(data)
        return _build(obj, data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        """Read structured-mode JSON text.

        The common case (a JSON object, spec version 1.0, text ``id``, ``source`` and ``type``,
        no ``data_base64`` and no data given as a JSON string) is built here in one frame:
        this runs once per consumed structured event (the saga monitor's catch-up reads
        thousands), where the calls of :meth:`from_dict` were a third of the decode. Anything
        else goes through :meth:`from_dict`, which says what is wrong."""
        try:
            obj = _strict_json(text)
        except _JSONError:  # what msgspec refuses and json.loads may accept (or refuse)
            try:
                obj = jsontext.loads(text)
            except (ValueError, UnicodeDecodeError) as exc:
                raise EnvelopeError(f"not a structured CloudEvent: {exc}") from exc
        if obj.__class__ is dict:
            get = obj.get
            kind, source, event_id, data = get("type"), get("source"), get("id"), get("data")
            if (
                kind.__class__ is str
                and source.__class__ is str
                and event_id.__class__ is str
                and kind
                and source
                and event_id
                and data.__class__ is not str
                and get("specversion") == SPECVERSION
                and "data_base64" not in obj
            ):
                extensions = _extensions_of(obj)
                moment = get("time")
                if moment:  # as _parse_time reads it
                    try:
                        moment = _from_iso(moment)  # refuses what is not text, as not RFC 3339
                    except (TypeError, ValueError):
                        moment = _parse_time(obj["time"])  # says what is wrong, or reads str()
                    if moment.tzinfo is None:
                        moment = moment.replace(tzinfo=UTC)
                else:
                    moment = None
                return _built(
                    kind,
                    source,
                    event_id,
                    data,
                    moment,
                    get("subject"),
                    get("datacontenttype"),
                    get("dataschema"),
                    SPECVERSION,
                    extensions,
                )
        return cls.from_dict(obj)


_new_object = object.__new__
_now = datetime.now
#: Strict JSON only (msgspec), raising :data:`_JSONError` where :func:`jsontext.loads` would
#: try the standard library: the hot paths call it first and ``jsontext.loads`` only then.
_strict_json = _json_value = jsontext.loads_strict
_JSONError = jsontext.StrictJSONError


def new_event(
    type: str,
    source: str,
    data: Any = None,
    subject: str | None = None,
    extensions: dict[str, ExtensionValue] | None = None,
    time: datetime | None = None,
) -> Event:
    """``Event(type=..., source=..., data=..., subject=..., extensions=...)`` with a new id,
    ``time`` (default: the current time) and JSON data, built without the dataclass machinery:
    this is what every publish builds, so it is on the hot path. The same checks apply."""
    if time is None:
        time = _now(UTC)
    if (
        type.__class__ is not str
        or source.__class__ is not str
        or not type
        or not source
        or (extensions and not _valid_names.issuperset(extensions))
    ):
        return Event(
            type=type,
            source=source,
            data=data,
            time=time,
            subject=subject,
            extensions=extensions or {},
        )
    return _built(
        type,
        source,
        new_id(),
        data,
        time,
        subject,
        JSON_CONTENT_TYPE,
        None,
        SPECVERSION,
        {} if extensions is None else extensions,
    )


def stamped_event(
    type: str,
    source: str,
    data: Any,
    subject: str | None,
    extensions: dict[str, ExtensionValue],
    time: datetime,
    id: str,
) -> Event:
    """A JSON event from parts the caller has checked: a non-empty ``type`` and ``source``
    (str), extensions whose names are valid (the core's own: ``partitionkey``,
    ``traceparent``...). What :func:`new_event` builds, without its checks and its calls:
    ``publish_many`` stamps a whole list with it."""
    return _built(
        type, source, id, data, time, subject, JSON_CONTENT_TYPE, None, SPECVERSION, extensions
    )


def _built(
    type: str,
    source: str,
    id: str,
    data: Any,
    time: datetime | None,
    subject: str | None,
    datacontenttype: str | None,
    dataschema: str | None,
    specversion: str,
    extensions: dict[str, ExtensionValue],
) -> Event:
    """The Event with exactly these fields, without ``__init__``'s checks and defaults: for
    the hot paths that made or checked every value already (stamping, decoding)."""
    event = _new_object(Event)
    event.type = type
    event.source = source
    event.id = id
    event.data = data
    event.time = time
    event.subject = subject
    event.datacontenttype = datacontenttype
    event.dataschema = dataschema
    event.specversion = specversion
    event.extensions = extensions
    return event


def _str_or_none(value: ExtensionValue | None) -> str | None:
    return None if value is None else str(value)


def _maybe_json(text: str) -> Any:
    try:
        return jsontext.loads(text)
    except ValueError:
        return text


def _extensions_of(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The extensions of a structured event's attributes (every member that is not a core
    attribute nor None), their names checked as ``Event(...)`` checks them."""
    extensions = {
        name: value
        for name, value in attrs.items()
        if name not in _NOT_EXTENSIONS and value is not None
    }
    if extensions and not _valid_names.issuperset(extensions):
        check_extension_names(extensions)
    return extensions


def _build(attrs: Mapping[str, Any], data: Any) -> Event:
    """Build an Event from attribute strings, validating the required ones (and the
    extension names, as ``Event(...)`` would), without the dataclass machinery: this runs
    once per decoded structured event (the saga monitor's catch-up reads thousands)."""
    get = attrs.get
    event_id, source, kind = get("id"), get("source"), get("type")
    if not (event_id and source and kind):
        missing = [name for name in ("id", "source", "type") if not get(name)]
        raise EnvelopeError(f"not a CloudEvent: missing required attribute(s) {', '.join(missing)}")
    time_text = get("time")
    extensions = _extensions_of(attrs)
    return _assemble(
        kind,
        source,
        event_id,
        data,
        time_text,
        get("subject"),
        get("datacontenttype"),
        get("dataschema"),
        get("specversion") or SPECVERSION,
        extensions,
    )


def _from_owned(attrs: dict[str, Any], data: Any) -> Event:
    """:func:`_build` for attribute texts the caller hands over (a binary binding's headers):
    the core attributes are taken out of ``attrs`` and what remains are the extensions, with
    no second dictionary and no dataclass machinery: this runs once per consumed event."""
    pop = attrs.pop
    event_id, source, kind = pop("id", None), pop("source", None), pop("type", None)
    if not (event_id and source and kind):
        attrs.update(id=event_id, source=source, type=kind)
        return _build(attrs, data)  # names what is missing
    time_text = pop("time", None)
    specversion = pop("specversion", None) or SPECVERSION
    subject, content_type = pop("subject", None), pop("datacontenttype", None)
    dataschema = pop("dataschema", None)
    if "data" in attrs or "data_base64" in attrs:
        attrs.pop("data", None)
        attrs.pop("data_base64", None)
    if attrs:
        if None in attrs.values():
            for name in [name for name, value in attrs.items() if value is None]:
                del attrs[name]
        if not _valid_names.issuperset(attrs):
            check_extension_names(attrs)
    return _assemble(
        kind,
        source,
        event_id,
        data,
        time_text,
        subject,
        content_type,
        dataschema,
        specversion,
        attrs,
    )


def _assemble(
    kind: Any,
    source: Any,
    event_id: Any,
    data: Any,
    time_text: str | None,
    subject: str | None,
    content_type: str | None,
    dataschema: str | None,
    specversion: Any,
    extensions: dict[str, Any],
) -> Event:
    """The decoded Event from checked attribute values (core attributes made text)."""
    return _built(
        kind if kind.__class__ is str else str(kind),
        source if source.__class__ is str else str(source),
        event_id if event_id.__class__ is str else str(event_id),
        data,
        _parse_time(time_text) if time_text else None,
        subject,
        content_type,
        dataschema,
        specversion if specversion.__class__ is str else str(specversion),
        extensions,
    )


# -- binary content mode ------------------------------------------------------------------------


_BINARY_NAMES: dict[str, tuple[str, ...]] = {}


def _binary_names(prefix: str) -> tuple[str, ...]:
    names = _BINARY_NAMES.get(prefix)
    if names is None:
        attributes = ("specversion", "id", "source", "type", "time", "subject", "dataschema")
        names = _BINARY_NAMES[prefix] = tuple(prefix + name for name in attributes)
    return names


def to_binary(event: Event, prefix: str) -> tuple[dict[str, str], bytes]:
    """Headers (``<prefix><attr>`` plus ``content-type``) and body for binary content mode."""
    specversion, id_, source, type_, time_, subject, dataschema = _binary_names(prefix)
    headers = {
        specversion: event.specversion,
        id_: event.id,
        source: event.source,
        type_: event.type,
    }
    if event.time is not None:
        headers[time_] = format_time(event.time)
    if event.subject is not None:
        headers[subject] = event.subject
    if event.dataschema is not None:
        headers[dataschema] = event.dataschema
    for name, value in event.extensions.items():
        headers[prefix + name] = value if value.__class__ is str else _header_text(value)
    if event.datacontenttype is not None:
        headers["content-type"] = event.datacontenttype
    return headers, event.data_bytes()


_LOWERED: dict[tuple[str, ...], tuple[tuple[str, int], ...]] = {}
_STRUCTURED: dict[str, bool] = {}


def _lowered(prefixes: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    found = _LOWERED.get(prefixes)
    if found is None:
        found = _LOWERED[prefixes] = tuple((p.lower(), len(p)) for p in prefixes)
    return found


def is_structured(content_type: str) -> bool:
    """Whether a message with this content type is in structured mode (the whole event as
    ``application/cloudevents+json``)."""
    return _structured(content_type)


def _structured(content_type: str) -> bool:
    found = _STRUCTURED.get(content_type)
    if found is None:
        media = content_type.split(";", 1)[0].strip().lower()
        found = media == STRUCTURED_CONTENT_TYPE
        if len(_STRUCTURED) < 1024:
            _STRUCTURED[content_type] = found
    return found


def from_binary(headers: Mapping[str, str], body: bytes, prefixes: Iterable[str]) -> Event:
    """Read a binary- or structured-mode message from its headers and body."""
    content_type = headers.get("content-type") or _header(headers, "content-type")
    if content_type and _structured(content_type):
        return Event.from_json(body)
    prefixes = prefixes if isinstance(prefixes, tuple) else tuple(prefixes)
    lowered = _lowered(prefixes)
    if len(lowered) == 1:  # one binding prefix: Kafka, NATS
        prefix, size = lowered[0]
        attrs: dict[str, Any] = {
            key[size:]: value
            for key, value in zip(map(str.lower, headers), headers.values(), strict=True)
            if key.startswith(prefix)
        }
    else:
        attrs = {}
        for name, value in headers.items():
            key = name.lower()
            for prefix, size in lowered:
                if key.startswith(prefix):
                    attrs[key[size:]] = value
                    break
    return from_attributes(attrs, content_type, body, prefixes[0])


def from_attributes(
    attrs: dict[str, Any], content_type: str | None, body: bytes, prefix: str
) -> Event:
    """The binary-mode event whose context attributes a binding already took from its headers
    (``prefix`` removed, names lower-case) and whose content type is not structured mode."""
    specversion = attrs.get("specversion")
    if specversion is None:
        raise EnvelopeError(
            f"not a CloudEvent: no {prefix}specversion header and content-type "
            f"{content_type!r} is not {STRUCTURED_CONTENT_TYPE}"
        )
    if specversion != SPECVERSION:
        raise EnvelopeError(f"unsupported CloudEvents specversion {specversion!r}")
    attrs["datacontenttype"] = content_type
    if not _INTEGER_EXTENSIONS.isdisjoint(attrs):  # the extensions the core writes as integers
        _integers(attrs)
    return _from_owned(attrs, _decode_data(body, content_type))


def binary_event(attrs: dict[str, Any], body: bytes | None) -> Event | None:
    """The binary-mode event whose attribute texts a binding took from its headers in one pass
    (names without the prefix, ``datacontenttype`` from the content type, nothing else), when
    it needs only the checks every event passes: spec version 1.0, the required attributes,
    extension names seen before. None otherwise: the caller then goes the long way
    (:func:`from_attributes`), which says what is wrong. ``attrs`` is taken over (the
    extensions are what is left of it). This runs once per consumed event."""
    pop = attrs.pop
    if pop("specversion", None) != SPECVERSION:
        return None
    event_id, source, kind = pop("id", None), pop("source", None), pop("type", None)
    if not (event_id and source and kind):
        return None
    time_text = pop("time", None)
    content_type = pop("datacontenttype", None)
    subject, dataschema = pop("subject", None), pop("dataschema", None)
    if attrs:
        if not _valid_names.issuperset(attrs):
            return None
        if not _INTEGER_EXTENSIONS.isdisjoint(attrs):
            _integers(attrs)
    if not body:
        data = None
    elif content_type == JSON_CONTENT_TYPE:
        try:
            data = _json_value(body)
        except _JSONError:  # what msgspec refuses and json.loads may accept (or refuse)
            data = _decode_data(body, content_type)
    else:
        data = _decode_data(body, content_type)
    moment = None
    if time_text:
        try:  # _parse_time's common case in place; anything else goes through it
            moment = _from_iso(time_text)
        except ValueError:
            moment = _parse_time(time_text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return _built(
        kind, source, event_id, data, moment, subject, content_type, dataschema, SPECVERSION, attrs
    )


def _integers(attrs: dict[str, Any]) -> None:
    """Read the extensions the core writes as integers back as integers (in place)."""
    for name in _INTEGER_EXTENSIONS.intersection(attrs):
        value = attrs[name]
        if value is not None and str(value).isdigit():
            attrs[name] = int(value)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if key.lower() == name:
                return candidate
    return value


def _header_text(value: ExtensionValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _decode_data(body: bytes, content_type: str | None) -> Any:
    if not body:
        return None
    if is_json_content_type(content_type):
        try:
            return jsontext.loads(body)
        except ValueError as exc:
            if content_type is None:  # no content type and not JSON: keep the bytes
                return body
            raise EnvelopeError(f"data is not valid JSON for {content_type!r}: {exc}") from exc
    if content_type and content_type.lower().startswith("text/"):
        return body.decode(errors="replace")
    return body
