"""OpenTelemetry spans of publishing and handling (DESIGN.md, Tracing), on every backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from broker import Bus, Event, Policy, Retry
from tests.helpers import Collector, eventually


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A tracer provider of the test's own, exporting finished spans to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _finished(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def _traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _own(span: ReadableSpan) -> tuple[int, int]:
    """(trace id, span id) of ``span``."""
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def _parent(span: ReadableSpan) -> tuple[int, int] | None:
    """(trace id, span id) of ``span``'s parent."""
    return None if span.parent is None else (span.parent.trace_id, span.parent.span_id)


def _group(span: ReadableSpan) -> str:
    return str((span.attributes or {})["messaging.consumer.group.name"])


def _messaging(span: ReadableSpan) -> dict[str, object]:
    return {k: v for k, v in (span.attributes or {}).items() if k.startswith("messaging.")}


async def test_publish_and_handling_are_spans_of_one_trace(
    make_bus: Callable[..., Bus],
    topic: str,
    spans: tuple[TracerProvider, InMemorySpanExporter],
    backend_url: str,
) -> None:
    """A publish is a PRODUCER span whose context the event carries; its handling a CONSUMER
    span, child of it, with the messaging semantic-convention attributes."""
    provider, exporter = spans
    bus = await make_bus(tracer_provider=provider).start()
    got = Collector()
    await bus.subscribe(topic, got, group="billing")
    sent = await bus.publish(topic, type="order.placed", data=1, correlation_id="c-9")
    await eventually(lambda: len(_finished(exporter, f"process {topic}")) == 1, what="the span")
    [producer] = _finished(exporter, f"send {topic}")
    [consumer] = _finished(exporter, f"process {topic}")
    assert (SpanKind.PRODUCER, SpanKind.CONSUMER) == (producer.kind, consumer.kind)
    assert _traceparent(producer) == sent.traceparent == got.events[0].traceparent
    assert _own(producer) == _parent(consumer)
    systems = {"memory": "memory", "sqlite": "sqlite", "kafka": "kafka", "amqp": "rabbitmq"}
    common = {
        "messaging.system": systems.get(backend_url.partition(":")[0], "nats"),
        "messaging.destination.name": topic,
        "messaging.message.id": sent.id,
        "messaging.message.conversation_id": "c-9",
    }
    assert {
        **common,
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
    } == _messaging(producer)
    assert {
        **common,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.consumer.group.name": "billing",
    } == _messaging(consumer)


async def test_events_published_by_a_handler_join_the_trace(
    make_bus: Callable[..., Bus], topic: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """A handler's publish is a PRODUCER span child of its CONSUMER span, in the same trace."""
    provider, exporter = spans
    bus = await make_bus(tracer_provider=provider).start()
    shipped = f"{topic}-shipped"

    async def ship(event: Event) -> None:
        await bus.publish(shipped, type="order.shipped", data=event.data)

    await bus.subscribe(topic, ship, group="shipping")
    await bus.subscribe(shipped, Collector(), group="audit")
    await bus.publish(topic, type="order.placed", data=1)
    # each span ends when its own work is done: the first handler's CONSUMER span after its
    # delivery is settled and the PRODUCER span after the broker's confirm, either of which may
    # come after the published event was already handled: wait for all three
    await eventually(
        lambda: all(
            len(_finished(exporter, name)) == 1
            for name in (f"process {topic}", f"send {shipped}", f"process {shipped}")
        ),
        what="spans",
    )
    [first] = _finished(exporter, f"process {topic}")
    [second_send] = _finished(exporter, f"send {shipped}")
    [second] = _finished(exporter, f"process {shipped}")
    assert _own(first) == _parent(second_send)
    assert _own(second_send) == _parent(second)
    assert 1 == len({_own(span)[0] for span in exporter.get_finished_spans()})


async def test_retries_and_dead_lettering_are_span_events(
    make_bus: Callable[..., Bus], topic: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """Each retry and the final dead-lettering are events on the CONSUMER span, which ends
    with an error status."""
    provider, exporter = spans
    policy = Policy(retry=Retry(max_attempts=3, initial_delay=0.01, max_delay=0.02))
    bus = await make_bus(tracer_provider=provider, policy=policy).start()

    async def broken(event: Event) -> None:
        raise ValueError("declined")

    await bus.subscribe(topic, broken, group="billing")
    await bus.publish(topic, type="order.placed")
    await eventually(lambda: len(_finished(exporter, f"process {topic}")) == 1, what="the span")
    [consumer] = _finished(exporter, f"process {topic}")
    assert ["retry", "retry", "dead-lettered"] == [event.name for event in consumer.events]
    dead = dict(consumer.events[-1].attributes or {})
    assert ("handler-error", "ValueError: declined", 3) == (
        dead["reason"],
        dead["error"],
        dead["attempts"],
    )
    assert StatusCode.ERROR == consumer.status.status_code


async def test_a_deferred_retry_is_a_consumer_span_of_the_same_trace(
    make_bus: Callable[..., Bus], topic: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """A retry deferred to the broker ends the first CONSUMER span (its retry event says so);
    the next attempt is a CONSUMER span of its own in the same trace, and another group's
    consumer makes no span for the copy it skips."""
    provider, exporter = spans
    retry = Retry(max_attempts=2, initial_delay=0.3, max_delay=0.3, jitter=0, defer_after=0.1)
    bus = await make_bus(tracer_provider=provider, policy=Policy(retry=retry)).start()
    calls: list[str] = []

    async def flaky(event: Event) -> None:
        calls.append(event.id)
        if len(calls) == 1:
            raise ConnectionError("down")

    owner = await bus.subscribe(topic, flaky, group="billing")
    other = Collector()
    await bus.subscribe(topic, other, group="audit")
    await bus.publish(topic, type="order.placed")
    await eventually(lambda: owner.handled == 1, timeout=30, what="the second attempt")
    await eventually(lambda: len(_finished(exporter, f"process {topic}")) == 3, what="spans")
    consumers = _finished(exporter, f"process {topic}")
    assert ["audit", "billing", "billing"] == sorted(_group(span) for span in consumers)
    billing = [span for span in consumers if _group(span) == "billing"]
    events = [[(e.name, (e.attributes or {})["deferred"]) for e in span.events] for span in billing]
    assert [[], [("retry", True)]] == sorted(events, key=len)
    assert 1 == len({_own(span)[0] for span in exporter.get_finished_spans()})


async def test_batches_are_traced_per_event_and_per_call(
    make_bus: Callable[..., Bus], topic: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """publish_many starts a PRODUCER span per event, each carried by its event; a batch
    handler call is one CONSUMER span linked to the producer span of each of its events."""
    provider, exporter = spans
    bus = await make_bus(tracer_provider=provider).start()
    got: list[Event] = []

    async def handle(events: list[Event]) -> None:
        got.extend(events)

    await bus.subscribe_batch(topic, handle, group="billing", max_batch=10, max_wait=0.5)
    result = await bus.publish_many(topic, [{"type": "t", "data": n} for n in range(3)])
    await eventually(lambda: len(got) == 3, what="the batch")
    senders = _finished(exporter, f"send {topic}")
    assert [event.traceparent for event in result.published] == [_traceparent(s) for s in senders]
    await eventually(lambda: bool(_finished(exporter, f"process {topic}")), what="the span")
    linked = {
        _own_of(link.context)
        for span in _finished(exporter, f"process {topic}")
        for link in span.links
    }
    assert {_own(sender) for sender in senders} == linked


def _own_of(context: object) -> tuple[int, int]:
    return context.trace_id, context.span_id  # type: ignore[attr-defined]
