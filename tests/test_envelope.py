"""The CloudEvents envelope: structured JSON and the binary bindings, and interop with the
official `cloudevents` SDK in both directions."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cloudevents.core.bindings import http, kafka, rabbitmq
from cloudevents.core.v1.event import CloudEvent

from broker import EnvelopeError, Event
from broker.adapters.kafka import wire as kafka_wire
from broker.context import new_traceparent, new_traceparents
from broker.envelope import (
    AMQP_PREFIXES,
    NATS_PREFIXES,
    format_time,
    from_binary,
    new_event,
    new_id,
    new_ids,
    to_binary,
)


def sample() -> Event:
    return Event(
        type="order.placed",
        source="order-service",
        data={"orderId": "o-1", "amount": 12.5},
        subject="o-1",
        time=datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC),
        extensions={"correlationid": "o-1", "partitionkey": "o-1", "retries": 2, "vip": True},
    )


def test_structured_json_round_trip() -> None:
    """An event written as structured JSON reads back equal."""
    event = sample()
    assert event == Event.from_json(event.to_json())


def test_bytes_data_uses_data_base64() -> None:
    """Binary data is carried as data_base64 in structured mode and read back as bytes."""
    event = Event(type="t", source="s", data=b"\x00\xff", datacontenttype="application/x")
    assert "data_base64" in event.to_dict()
    assert b"\x00\xff" == Event.from_json(event.to_json()).data


@pytest.mark.parametrize("prefix", ["ce_", "cloudEvents_", "ce-"])
def test_binary_round_trip(prefix: str) -> None:
    """Each binding's headers and body read back into the same event (extension types as text)."""
    event = sample()
    headers, body = to_binary(event, prefix)
    assert headers[f"{prefix}id"] == event.id
    assert headers["content-type"] == "application/json"
    back = from_binary(headers, body, (prefix,))
    assert (event.id, event.data, event.time) == (back.id, back.data, back.time)
    assert {"correlationid": "o-1", "partitionkey": "o-1", "retries": "2", "vip": "true"} == (
        back.extensions
    )


def test_amqp_reads_the_colon_prefix_too() -> None:
    """AMQP headers written as cloudEvents:<attr> are read like cloudEvents_<attr>."""
    event = sample()
    headers, body = to_binary(event, "cloudEvents:")
    assert event.id == from_binary(headers, body, AMQP_PREFIXES).id


def test_kafka_key_is_the_partition_key() -> None:
    """The Kafka binding puts partitionkey in the record key and reads it back from there."""
    key, headers, value = kafka_wire.encode_event(sample())
    assert b"o-1" == key
    assert ("ce_type", b"order.placed") in headers
    stripped = [(k, v) for k, v in headers if k != "ce_partitionkey"]
    assert "o-1" == kafka_wire.decode(key, stripped, value).partitionkey


def test_not_a_cloudevent_is_refused_clearly() -> None:
    """Headers without a specversion raise an EnvelopeError naming what is missing."""
    with pytest.raises(EnvelopeError, match="no ce-specversion header"):
        from_binary({"content-type": "application/json"}, b"{}", NATS_PREFIXES)


def test_missing_required_attribute_is_named() -> None:
    """A structured event without a source names the missing attribute."""
    with pytest.raises(EnvelopeError, match="source"):
        Event.from_json(json.dumps({"specversion": "1.0", "id": "1", "type": "t"}))


def test_invalid_extension_name_is_refused() -> None:
    """Extension names must be lower-case alphanumerics."""
    with pytest.raises(EnvelopeError, match="x-order"):
        Event(type="t", source="s", extensions={"x-order": "1"})


def test_structured_json_is_checked_as_the_constructor_checks() -> None:
    """A structured event reads back as Event() builds it, and an extension name Event()
    refuses is refused when read too."""
    event = sample()
    text = event.to_json()
    assert event == Event.from_json(text)
    assert event == Event.from_dict(json.loads(text))
    bad = {**json.loads(text), "x-order": "1"}
    with pytest.raises(EnvelopeError, match="x-order"):
        Event.from_dict(bad)
    with pytest.raises(EnvelopeError, match="RFC 3339"):
        Event.from_dict({**json.loads(text), "time": "yesterday"})


def _outcome(read: Any, doc: Any) -> tuple[str, Any]:
    """What reading ``doc`` gives: the event's fields (extensions in order) or the error."""
    try:
        event = read(doc)
    except EnvelopeError as exc:
        return "error", str(exc)
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    return "event", (fields, list(event.extensions))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"data": '{"a": 1}'},  # JSON data given as a JSON string: decoded
        {"data": "plain"},
        {"data": None, "data_base64": "AAE="},
        {"id": 7, "source": ["s"]},  # made text
        {"type": ""},
        {"specversion": "0.3"},
        {"time": "2026-01-01T00:00:00"},  # naive: UTC
        {"time": "yesterday"},
        {"time": 20260101},  # read as text, then refused
        {"time": ["2026-01-01T00:00:00Z"]},
        {"time": None, "subject": "x", "dataschema": "urn:s"},
        {"zeta": "1", "alpha": None, "beta": 2},  # order kept, None dropped
        {"x-order": "1"},
    ],
)
def test_structured_json_reads_as_from_dict(changes: dict[str, Any]) -> None:
    """``Event.from_json`` builds the common case itself: every document reads (or is refused)
    exactly as ``Event.from_dict`` of its JSON value reads it."""
    doc = {**json.loads(sample().to_json()), **changes}
    text = json.dumps(doc)
    assert _outcome(Event.from_json, text) == _outcome(Event.from_dict, json.loads(text))
    assert _outcome(Event.from_json, text.encode()) == _outcome(Event.from_dict, doc)


def test_structured_json_not_an_object_is_refused() -> None:
    """A JSON value that is no object, or no JSON at all, is refused as before."""
    with pytest.raises(EnvelopeError, match="JSON object"):
        Event.from_json("[1, 2]")
    with pytest.raises(EnvelopeError, match="not a structured CloudEvent"):
        Event.from_json(b"{nope")


def test_ids_are_unique_uuid_shaped_across_chunks() -> None:
    """Event ids are made 256 at a time: thousands in a row are distinct version 4 UUIDs."""
    ids = [new_id() for _ in range(2000)]
    assert len(ids) == len(set(ids))
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)


def test_ids_taken_by_the_list_are_those_new_id_would_give() -> None:
    """A list's ids (new_ids, across chunks of 256) are distinct version 4 UUIDs, and so are
    they together with those new_id gives before and after them."""
    ids = [new_id(), *new_ids(300), *new_ids(0), *new_ids(700), new_id()]
    assert 1002 == len(ids) == len(set(ids))
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)


def test_traces_taken_by_the_list_are_new_traces() -> None:
    """A list's new traces (new_traceparents, across chunks) are valid traceparents, each
    with its own trace id, as new_traceparent's."""
    made = [new_traceparent(), *new_traceparents(300), *new_traceparents(600)]
    assert 901 == len(made)
    assert all(re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", t) for t in made)
    assert len(made) == len({t.split("-")[1] for t in made})


def test_new_traces_are_unique_w3c_traceparents() -> None:
    """New traces are made 256 at a time: each a valid traceparent with its own trace id."""
    made = [new_traceparent() for _ in range(1000)]
    assert all(re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", t) for t in made)
    assert len(made) == len({t.split("-")[1] for t in made})


def test_new_event_builds_what_the_constructor_builds() -> None:
    """new_event (what publish builds) sets every field as Event() does, with a new id and
    the current time, and refuses what Event() refuses."""
    before = datetime.now(UTC)
    built = new_event("t", "s", {"a": 1}, "sub", {"traceparent": "00-x"})
    expected = Event(type="t", source="s", data={"a": 1}, subject="sub", id=built.id,
                     time=built.time, extensions={"traceparent": "00-x"})  # fmt: skip
    assert expected == built
    assert built.time is not None
    assert before <= built.time <= datetime.now(UTC)
    assert built.id != new_event("t", "s").id
    assert {} == new_event("t", "s").extensions
    for args in (("", "s"), ("t", ""), ("t", "s", None, None, {"Bad-Name": "x"})):
        with pytest.raises(EnvelopeError):
            new_event(*args)  # type: ignore[arg-type]


def test_ttl_sets_expiration() -> None:
    """with_ttl stores an absolute RFC 3339 expiration and is_expired follows the clock."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    event = Event(type="t", source="s").with_ttl(30, now=now)
    assert "2026-01-01T00:00:30Z" == event.extensions["expiration"]
    assert not event.is_expired(now)
    assert event.is_expired(datetime(2026, 1, 1, 0, 0, 31, tzinfo=UTC))


def _sdk_event(**extra: object) -> CloudEvent:
    attributes = {"type": "order.placed", "source": "sdk", "id": "sdk-1", **extra}
    return CloudEvent(attributes=attributes, data={"orderId": "o-9"})


def test_sdk_kafka_binary_event_is_read() -> None:
    """A Kafka record the cloudevents SDK writes in binary mode reads as the same event."""
    message = kafka.to_binary_event(_sdk_event(correlationid="c-1", partitionkey="o-9"))
    key = message.key.encode() if isinstance(message.key, str) else message.key
    event = kafka_wire.decode(key, list(message.headers.items()), message.value)
    assert ("sdk-1", "order.placed", {"orderId": "o-9"}) == (event.id, event.type, event.data)
    assert ("c-1", "o-9") == (event.correlationid, event.partitionkey)


def test_sdk_kafka_structured_event_is_read() -> None:
    """A Kafka record the SDK writes in structured mode reads through the content-type switch."""
    message = kafka.to_structured_event(_sdk_event())
    event = kafka_wire.decode(None, list(message.headers.items()), message.value)
    assert ("sdk-1", {"orderId": "o-9"}) == (event.id, event.data)


def test_sdk_http_and_rabbitmq_bindings_are_read() -> None:
    """ce- headers written by the SDK's HTTP and RabbitMQ bindings read as the same event."""
    http_message = http.to_binary_event(_sdk_event())
    rabbit_message = rabbitmq.to_binary_event(_sdk_event())
    rabbit_headers = dict(rabbit_message.headers)
    if rabbit_message.content_type:
        rabbit_headers["content-type"] = rabbit_message.content_type
    via_http = from_binary(http_message.headers, http_message.body, NATS_PREFIXES)
    via_rabbit = from_binary(rabbit_headers, rabbit_message.body, AMQP_PREFIXES)
    assert via_http.id == via_rabbit.id == "sdk-1"
    assert via_http.data == via_rabbit.data == {"orderId": "o-9"}


def test_our_kafka_records_are_read_by_the_sdk() -> None:
    """Kafka records we write are read by the SDK with attributes, key and data intact."""
    event = sample()
    key, headers, value = kafka_wire.encode_event(event)
    sdk_event = kafka.from_binary_event(kafka.KafkaMessage(dict(headers), key, value))
    assert (event.id, event.type, event.source, event.data) == (
        sdk_event.get_id(),
        sdk_event.get_type(),
        sdk_event.get_source(),
        sdk_event.get_data(),
    )
    assert "o-1" == sdk_event.get_extension("correlationid")


def test_our_structured_json_is_read_by_the_sdk() -> None:
    """Our structured-mode JSON is read by the SDK's HTTP binding."""
    event = sample()
    message = http.HTTPMessage(
        {"content-type": "application/cloudevents+json"}, event.to_json().encode()
    )
    sdk_event = http.from_http_event(message)
    assert (event.id, event.data, event.time) == (
        sdk_event.get_id(),
        sdk_event.get_data(),
        sdk_event.get_time(),
    )


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC), "2026-05-04T03:02:01Z"),
        (datetime(2026, 5, 4, 3, 2, 1, 100000, tzinfo=UTC), "2026-05-04T03:02:01.100000Z"),
        (datetime(2026, 5, 4, 3, 2, 1, 7, tzinfo=UTC), "2026-05-04T03:02:01.000007Z"),
        (datetime(999, 1, 2, 0, 0, 0, 999999, tzinfo=UTC), "0999-01-02T00:00:00.999999Z"),
        (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), "9999-12-31T23:59:59Z"),
        (
            datetime(2026, 5, 4, 5, 2, 1, 5, tzinfo=timezone(timedelta(hours=2))),
            "2026-05-04T03:02:01.000005Z",
        ),
    ],
)
def test_format_time_writes_utc_with_z_and_microseconds_when_any(
    moment: datetime, text: str
) -> None:
    """format_time writes RFC 3339 in UTC with a Z, six digits of microseconds when any."""
    assert text == format_time(moment)
