"""Routing like Debezium's outbox event router: topic template, key, id, type, headers as
extensions, correlation id, and dead letters for rows that cannot become events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker import Bus, Event
from connectors import OutboxConfigError, OutboxRow, Router
from connectors.relay import Relay
from connectors.runtime import build_source
from tests.connectors.conftest import OutboxDB
from tests.connectors.relaying import collecting, eventually, memory_broker, order_rows

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def row(**changes: object) -> OutboxRow:
    base: dict[str, object] = {
        "id": "6f1c0d6e-0000-4000-8000-000000000001",
        "aggregatetype": "order",
        "aggregateid": "42",
        "type": "order.placed",
        "payload": '{"total": 10, "order": {"id": "o-42"}}',
        "headers": None,
        "created_at": CREATED,
    }
    base.update(changes)
    return OutboxRow(**base)  # type: ignore[arg-type]


def test_default_route_maps_the_debezium_columns() -> None:
    """Topic outbox.event.<aggregatetype>, key aggregateid, id/type/time from the row."""
    routed = Router(source="choreo-outbox/shop").route_row(row())
    event = routed.event
    assert ("outbox.event.order", False) == (routed.topic, routed.dead)
    assert ("6f1c0d6e-0000-4000-8000-000000000001", "order.placed") == (event.id, event.type)
    assert ("choreo-outbox/shop", "42", CREATED) == (event.source, event.partitionkey, event.time)
    assert {"total": 10, "order": {"id": "o-42"}} == event.data


def test_topic_template_and_route_table() -> None:
    """A template formats aggregatetype/aggregateid/type; a route table sends unknown types to
    the DLQ as unroutable."""
    assert "shop.order.order.placed" == Router(route="shop.{aggregatetype}.{type}").topic_for(row())
    table = Router(routes={"order": "orders"})
    assert "orders" == table.route_row(row()).topic
    dead = table.route_row(row(aggregatetype="invoice"))
    assert ("outbox.dlq", "unroutable") == (dead.topic, dead.event.extensions["dlqreason"])


def test_invalid_templates_are_refused_up_front() -> None:
    """An unknown field in the template is a configuration error naming the valid fields."""
    with pytest.raises(OutboxConfigError, match=r"\{aggregatetype\}, \{aggregateid\} and \{type\}"):
        Router(route="outbox.{tenant}")


def test_headers_become_extensions_with_valid_names_only() -> None:
    """Headers with valid CloudEvents extension names are carried; others are dropped."""
    headers = '{"Tenant": "acme", "x-trace": "no", "id": "no", "retries": 2, "flag": true}'
    event = Router().route_row(row(headers=headers)).event
    assert {"tenant": "acme", "retries": 2, "flag": True, "partitionkey": "42"} == event.extensions


def test_correlation_id_from_header_else_payload_field() -> None:
    """The correlation header wins; without it the configured payload path is used."""
    router = Router(correlation_field="order.id")
    assert "o-42" == router.route_row(row()).event.correlationid
    with_header = router.route_row(row(headers={"correlationid": "c-1"})).event
    assert "c-1" == with_header.correlationid


@pytest.mark.parametrize(
    ("changes", "reason", "error"),
    [
        ({"payload": "{oops"}, "undecodable", "payload of outbox row"),
        ({"payload": b"\xff\xfe"}, "undecodable", "payload of outbox row"),
        ({"headers": "[1, 2]"}, "undecodable", "not a JSON object"),
        ({"aggregatetype": "has space"}, "unroutable", "not a valid topic name"),
    ],
)
def test_rows_that_cannot_become_events_are_dead_letters(
    changes: dict[str, object], reason: str, error: str
) -> None:
    """Bad rows become DLQ events with dlqreason/dlqerror and the raw payload kept."""
    routed = Router().route_row(row(**changes))
    extensions = routed.event.extensions
    assert ("outbox.dlq", True, reason) == (routed.topic, routed.dead, extensions["dlqreason"])
    assert error in str(extensions["dlqerror"])
    assert "outbox-relay" == extensions["dlqgroup"]


def test_text_and_bytes_payload_formats() -> None:
    """Non-JSON payloads can be carried as text/plain or application/octet-stream."""
    text = Router(payload_format="text").route_row(row(payload="hello")).event
    raw = Router(payload_format="bytes").route_row(row(payload=b"\x00\x01")).event
    assert ("text/plain", "hello") == (text.datacontenttype, text.data)
    assert ("application/octet-stream", b"\x00\x01") == (raw.datacontenttype, raw.data)


class RefusingCodec:
    """A payload codec (as a schema registry binding) that refuses totals over 100."""

    async def encode(self, topic: str, event: Event) -> Event:
        if event.data["total"] > 100:
            raise ValueError(f"{topic}: total {event.data['total']} exceeds the schema maximum")
        return event

    async def decode(self, topic: str, event: Event) -> Event:
        return event


async def test_codec_refusal_dead_letters_as_schema_mismatch(tmp_path: Path) -> None:
    """With a codec on the relay's bus, a payload it refuses goes to the DLQ, the rest flows."""
    outbox = OutboxDB("sqlite", tmp_path)
    ids = outbox.write(
        [{**r, "payload": {"total": t}} for r, t in zip(order_rows(2), (5, 500), strict=False)]
    )
    broker = memory_broker()
    source = build_source(outbox.url, table=outbox.table)
    relay = Relay(source, Bus(broker, codec=RefusingCodec()), Router(), idle_timeout=0.1)
    async with collecting(broker, "outbox.event.order", "outbox.dlq") as got:
        task = asyncio.create_task(relay.run())
        await eventually(lambda: len(got["outbox.dlq"].events) >= 1, what="the dead letter")
        relay.stop()
        await task
    dead = got["outbox.dlq"].events[0]
    assert [ids[0]] == got["outbox.event.order"].ids
    assert (ids[1], "schema-mismatch") == (dead.id, dead.extensions["dlqreason"])
