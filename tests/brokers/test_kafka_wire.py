"""Reading Kafka records: the one-pass decode of the common record and the long way for the
rest give the same events, and the same errors, as the binding read header by header."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord

from broker import Event
from broker.adapters.kafka import wire
from broker.adapters.kit import event_time
from broker.deadletter import dead_letter
from broker.envelope import new_event
from broker.errors import EnvelopeError


def record(
    headers: list[tuple[str, bytes | None]], value: bytes | None, key: bytes | None = None
) -> Any:
    return ConsumerRecord("t", 0, 7, 0, 0, key, value, None, -1, -1, tuple(headers))


def encoded(event: Event) -> Any:
    key, headers, value = wire.encode_event(event)
    return record(list(headers), value, key)


def long_way(rec: Any) -> Event:
    return wire.decode(rec.key, rec.headers, rec.value)


def sample() -> Event:
    return Event(
        type="order.placed",
        source="order-service",
        data={"orderId": "o-1"},
        subject="o-1",
        dataschema="urn:s",
        time=datetime(2026, 5, 4, 3, 2, 1, 5, tzinfo=UTC),
        extensions={"correlationid": "o-1", "partitionkey": "o-1", "vip": True},
    )


@pytest.mark.parametrize(
    "event",
    [
        sample(),
        new_event("a", "b", "text"),
        new_event("a", "b", None),
        Event(type="a", source="b", data=b"\x00\x01", datacontenttype="application/octet-stream"),
        Event(type="a", source="b", data="plain", datacontenttype="text/plain"),
        Event(type="a", source="b", data=1, time=None, datacontenttype=None),
        dead_letter(sample(), reason="handler-error", error="E", attempts=3, topic="t", group="g"),
    ],
)
def test_one_pass_decode_equals_the_long_way(event: Event) -> None:
    """A record choreograph wrote decodes to what the header-by-header reading gives."""
    rec = encoded(event)
    assert (long_way(rec), None) == wire.decode_record(rec)


def test_integer_extensions_come_back_as_integers() -> None:
    """The attempts of a dead letter are an integer again after the one-pass decode."""
    dead = dead_letter(
        sample(), reason="handler-error", error="E", attempts=3, topic="t", group="g"
    )
    event, _ = wire.decode_record(encoded(dead))
    assert event is not None
    assert 3 == event.extensions["dlqattempts"]


def test_the_record_key_becomes_the_partition_key() -> None:
    """A record key fills in a missing partitionkey extension."""
    rec = record(
        [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s"), ("ce_type", b"t")],
        b"{}",
        key=b"k-1",
    )
    event, _ = wire.decode_record(rec)
    assert event is not None
    assert "k-1" == event.partitionkey


BASE = [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s"), ("ce_type", b"t")]
JSON = ("content-type", b"application/json")


@pytest.mark.parametrize(
    "headers",
    [
        [*BASE, ("CE_SUBJECT", b"upper"), ("Content-Type", b"application/json")],
        [*BASE, ("ce_note", "caf\u00e9".encode("latin-1"))],
        [*BASE, ("ce_note", None)],
        [*BASE, ("x-other", b"kept out"), ("ce_data", b"ignored"), ("ce_datacontenttype", b"x")],
        [*BASE, ("ce_newextension1", b"v")],
        [*BASE, ("ce_time", b"2026-01-02T03:04:05"), ("content-type", b"application/json")],
    ],
)
def test_records_read_the_long_way_decode_as_the_binding_says(
    headers: list[tuple[str, bytes | None]],
) -> None:
    """Mixed-case names, text that is not UTF-8, a header without a value, headers that carry
    no attribute, a first-seen extension and a naive time decode as read header by header."""
    rec = record(headers, b'{"a": 1}')
    assert (long_way(rec), None) == wire.decode_record(rec)


def test_structured_records_are_read_whole() -> None:
    """A record in structured mode is read from its value."""
    event = sample()
    rec = record([("content-type", b"application/cloudevents+json")], event.to_json().encode())
    assert (event, None) == wire.decode_record(rec)


@pytest.mark.parametrize(
    ("headers", "value", "says"),
    [
        (BASE[1:], b"{}", "specversion"),
        ([("ce_specversion", b"0.3"), *BASE[1:]], b"{}", "specversion"),
        (BASE[:2], b"{}", "source"),
        ([*BASE, ("ce_Bad_Name", b"x")], b"{}", "invalid"),
        ([*BASE, ("ce_time", b"yesterday")], b"{}", "RFC 3339"),
        ([*BASE, ("content-type", b"application/json")], b"{not json", "JSON"),
    ],
)
def test_what_does_not_decode_says_why(
    headers: list[tuple[str, bytes | None]], value: bytes, says: str
) -> None:
    """A record that is not a valid CloudEvent gives no event and the binding's error."""
    event, error = wire.decode_record(record(headers, value))
    assert event is None
    assert isinstance(error, EnvelopeError)
    assert says in str(error)
    with pytest.raises(EnvelopeError, match=says):
        wire.decode(None, headers, value)


def test_headers_are_text_when_asked() -> None:
    """A record's headers as text, values that are not UTF-8 replaced, no value as empty."""
    rec = record([("a", b"x"), ("b", b"\xff"), ("c", None)], b"")
    assert {"a": "x", "b": "\ufffd", "c": ""} == wire.record_headers(rec)


@pytest.mark.parametrize(
    ("rec", "from_header"),
    [
        (encoded(sample()), True),
        (encoded(Event(type="a", source="b", data=1, time=None)), False),
        (encoded(Event(type="a", source="b", data="x", datacontenttype="text/plain")), True),
        (record([*BASE, ("ce_time", b"2026-01-02T03:04:05"), JSON], b"{}"), True),
        (record([*BASE, ("ce_time", b"2026-01-02T03:04:05+02:00"), JSON], b"{}"), True),
        (record([*BASE, ("ce_time", b"2026-01-02T03:04:05Z")], b"{}"), False),
        (record([*BASE, ("ce_time", b""), JSON], b"{}"), False),
        (record([*BASE, ("CE_TIME", b"2026-01-02T03:04:05Z")], b"{}"), False),
        (record([*BASE, ("Content-Type", b"application/json")], b"{}"), False),
        (
            record(
                [("content-type", b"application/cloudevents+json")], sample().to_json().encode()
            ),
            False,
        ),
    ],
)
def test_a_records_time_read_from_its_header_is_its_events(rec: Any, from_header: bool) -> None:
    """The time a batch read merges a record by, read from its headers alone, is the time of
    the event it decodes to; None (decode it) where only decoding tells."""
    event, error = wire.decode_record(rec)
    assert error is None
    expected = event_time(event) if from_header else None
    assert expected == wire.record_time(rec)


def test_an_undecodable_records_time_is_its_headers() -> None:
    """A record that does not decode is merged by the time its header gives."""
    rec = record([*BASE[1:], ("ce_time", b"2026-01-02T03:04:05Z"), JSON], b"{}")
    assert wire.decode_record(rec)[0] is None
    assert datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp() == wire.record_time(rec)
