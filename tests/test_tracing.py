"""OpenTelemetry spans beyond the contract suite: expiry, the global provider, no provider,
request/reply, and the outbox relay continuing the writer's trace."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext

from broker import Bus, Event
from broker.envelope import format_time
from connectors import Relay, add_event, init_outbox
from connectors.routing import Router
from connectors.runtime import build_source
from tests.helpers import Collector, eventually


@pytest.fixture
def exported() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A tracer provider of the test's own, exporting finished spans to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An embedded broker URL."""
    if request.param == "memory":
        return f"memory://tracing-{uuid.uuid4().hex}"
    return f"sqlite:///{tmp_path}/broker.db?poll_interval=0.01"


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


async def test_an_expired_event_is_a_span_event(
    url: str, exported: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """An event whose TTL passed before handling gets a CONSUMER span with an ``expired``
    event (then ``dead-lettered``), and the handler is not called."""
    provider, exporter = exported
    async with Bus(url, tracer_provider=provider) as bus:
        handled = Collector()
        await bus.subscribe("orders", handled, group="billing")
        past = format_time(datetime.now(UTC) - timedelta(seconds=1))
        stale = Event(type="order.placed", source="s", extensions={"expiration": past})
        await bus.publish_event("orders", stale)
        await eventually(lambda: bool(_named(exporter, "process orders")), what="the span")
    [span] = _named(exporter, "process orders")
    assert ["expired", "dead-lettered"] == [event.name for event in span.events]
    assert ("expired", []) == (dict(span.events[1].attributes or {})["reason"], handled.events)


async def test_a_reply_is_in_the_trace_of_its_request(
    url: str, exported: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """The request's PRODUCER span, the responder's CONSUMER span and the reply share a trace."""
    provider, exporter = exported
    async with Bus(url, tracer_provider=provider) as bus:

        async def answer(event: Event) -> int:
            return 42

        await bus.subscribe("questions", answer, group="oracle")
        reply = await bus.request("questions", type="ask", timeout=30)
    [request] = _named(exporter, "send questions")
    [handling] = _named(exporter, "process questions")
    assert request.context is not None
    assert handling.context is not None
    trace_id = f"{request.context.trace_id:032x}"
    assert (trace_id, trace_id) == (f"{handling.context.trace_id:032x}", reply.traceparent[3:35])


def _run(code: str, tmp_path: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == result.returncode, result.stderr
    return result.stdout.strip()


_ROUND_TRIP = """
    import asyncio
    from broker import Bus

    async def main() -> None:
        async with Bus("memory://spans") as bus:
            done = asyncio.Event()

            async def handle(event) -> None:
                done.set()

            await bus.subscribe("orders", handle, group="billing")
            await bus.publish("orders", type="order.placed")
            await asyncio.wait_for(done.wait(), 10)
"""


def test_the_global_provider_is_used_without_configuration(tmp_path: Path) -> None:
    """With ``trace.set_tracer_provider`` called before the bus starts, spans are recorded."""
    code = f"""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    {textwrap.indent(textwrap.dedent(_ROUND_TRIP), "    ").strip()}
    asyncio.run(main())
    print(sorted(span.name for span in exporter.get_finished_spans()))
    """
    assert "['process orders', 'send orders']" == _run(code, tmp_path)


def test_without_a_provider_nothing_is_traced(tmp_path: Path) -> None:
    """Without a provider the bus holds no tracer, events still carry a traceparent, and no
    span is ever started (the API's proxy tracer is never asked for one)."""
    code = f"""
    from opentelemetry import trace
    {textwrap.indent(textwrap.dedent(_ROUND_TRIP), "    ").strip()}
    asked = []
    trace.ProxyTracerProvider.get_tracer = lambda *a, **k: asked.append(a)
    asyncio.run(main())
    print(type(trace.get_tracer_provider()).__name__, len(asked))
    """
    assert "ProxyTracerProvider 0" == _run(code, tmp_path)


async def test_the_outbox_relay_continues_the_writers_trace(
    tmp_path: Path, exported: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """A row written inside a span carries its traceparent; the relay's publish is a child of
    that span and the consumer's span a child of the relay's: one trace end to end."""
    provider, exporter = exported
    database = f"sqlite:///{tmp_path}/app.db"
    init_outbox(database)
    with (
        provider.get_tracer("app").start_as_current_span("place order") as placing,
        sqlite3.connect(tmp_path / "app.db") as conn,
    ):
        add_event(conn, aggregatetype="order", aggregateid="o-1", type="order.placed")
    broker = f"memory://outbox-{uuid.uuid4().hex}"
    topic = "outbox.event.order"
    got = Collector()
    relay = Relay(
        build_source(database),
        Bus(broker, source="relay", tracer_provider=provider),
        Router(source="shop"),
        idle_timeout=0.2,
    )
    async with Bus(broker, tracer_provider=provider) as bus:
        await bus.subscribe(topic, got, group="billing", from_beginning=True)
        running = asyncio.create_task(relay.run())
        try:
            await eventually(lambda: bool(_named(exporter, f"process {topic}")), what="the span")
        finally:
            relay.stop()
            await running
    [relayed] = _named(exporter, f"send {topic}")
    [handled] = _named(exporter, f"process {topic}")
    assert _ids(placing.get_span_context()) == _ids(relayed.parent)
    assert _ids(relayed.context) == _ids(handled.parent)
    assert _ids(relayed.context)[0] == int(str(got.events[0].traceparent)[3:35], 16)


def _ids(context: SpanContext | None) -> tuple[int, int]:
    assert context is not None
    return context.trace_id, context.span_id
