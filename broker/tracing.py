"""OpenTelemetry spans for publishing and handling, when the application configured a provider.

With a ``TracerProvider`` set (``opentelemetry.trace.set_tracer_provider``) before a
:class:`~broker.Bus` starts, or given to it as ``Bus(..., tracer_provider=...)``:

* each publish is a PRODUCER span ``send <topic>``, a child of the active span (a handler's
  CONSUMER span, or the application's own), else of the ``traceparent`` the event already
  carries (an outbox row's), else a new trace; the event leaves with the span's context as its
  ``traceparent`` (and ``tracestate``);
* each delivery handed to a handler is a CONSUMER span ``process <topic>``, a child of the
  event's ``traceparent``, active while the handler runs (so what it publishes joins the trace);
  failed attempts (``retry``), dead-lettering (``dead-lettered``) and expiry (``expired``) are
  span events on it.

Attributes follow the OpenTelemetry messaging semantic conventions: ``messaging.system``,
``messaging.destination.name``, ``messaging.operation.type`` (``send``/``process``),
``messaging.operation.name``, ``messaging.message.id``, ``messaging.message.conversation_id``
(the correlation id) and ``messaging.consumer.group.name``.

Without a provider, :func:`tracer_for` returns ``None`` once, when the bus starts, and the bus
and its consumers skip every step here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TracerProvider,
    TraceState,
)

from broker.envelope import Event, ExtensionValue

__all__ = [
    "Tracing",
    "add_event",
    "batch_span",
    "consumer_span",
    "current_traceparent",
    "end_send",
    "error_status",
    "messaging_system",
    "producer_span",
    "tracer_for",
]

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")
_NO_PROVIDER = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_SYSTEMS = {"amqp": "rabbitmq", "amqps": "rabbitmq", "kafka": "kafka", "nats": "nats"}


@dataclasses.dataclass(frozen=True, slots=True)
class Tracing:
    """What a consumer needs to trace: the tracer and the ``messaging.system``."""

    tracer: Tracer
    system: str


def tracer_for(provider: TracerProvider | None = None) -> Tracer | None:
    """choreograph's tracer from ``provider`` (default: the global one), or ``None`` when no
    provider was configured: then nothing is traced, at no cost."""
    chosen = provider if provider is not None else trace.get_tracer_provider()
    if isinstance(chosen, _NO_PROVIDER):
        return None
    return chosen.get_tracer("choreograph")


def messaging_system(url: str) -> str:
    """The ``messaging.system`` of a broker URL: kafka, rabbitmq, nats, sqlite or memory."""
    scheme = url.partition(":")[0].lower()
    return _SYSTEMS.get(scheme, scheme)


def _remote(traceparent: ExtensionValue | None, tracestate: ExtensionValue | None) -> Any:
    """An OpenTelemetry context whose parent is a W3C ``traceparent`` (None if invalid)."""
    if not isinstance(traceparent, str):
        return None
    match = _TRACEPARENT.match(traceparent)
    if match is None:
        return None
    state = TraceState.from_header([tracestate]) if isinstance(tracestate, str) else None
    parent = SpanContext(
        int(match.group(1), 16),
        int(match.group(2), 16),
        is_remote=True,
        trace_flags=TraceFlags(int(match.group(3), 16)),
        trace_state=state,
    )
    if not parent.is_valid:
        return None
    return trace.set_span_in_context(NonRecordingSpan(parent))


def _format(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _attributes(system: str, topic: str, event: Event, operation: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": system,
        "messaging.destination.name": topic,
        "messaging.operation.type": operation,
        "messaging.operation.name": "publish" if operation == "send" else "process",
        "messaging.message.id": event.id,
        "cloudevents.event_type": event.type,
        "cloudevents.event_source": event.source,
    }
    correlation = event.correlationid
    if correlation is not None:
        attributes["messaging.message.conversation_id"] = correlation
    return attributes


def producer_span(
    tracer: Tracer, system: str, topic: str, event: Event, parent: ExtensionValue | None
) -> tuple[Span, Event]:
    """Start the PRODUCER span of publishing ``event`` and return it with the event to send
    (its ``traceparent`` now the span's). ``parent`` is a traceparent the caller gave the
    event; it is the span's parent when no span is active."""
    context = None
    if not trace.get_current_span().get_span_context().is_valid:
        context = _remote(parent, event.extensions.get("tracestate"))
    span = tracer.start_span(
        f"send {topic}",
        context=context,
        kind=SpanKind.PRODUCER,
        attributes=_attributes(system, topic, event, "send"),
    )
    own = span.get_span_context()
    if not own.is_valid:
        return span, event
    extensions = dict(event.extensions)
    extensions["traceparent"] = _format(own)
    state = own.trace_state.to_header() if own.trace_state else ""
    if state:
        extensions["tracestate"] = state
    return span, event.replace(extensions=extensions)


@contextlib.contextmanager
def sending(span: Span) -> Iterator[None]:
    """Make the producer ``span`` current while publishing; record a failure; end it."""
    with trace.use_span(
        span, end_on_exit=True, record_exception=True, set_status_on_exception=True
    ):
        yield


def error_status(description: str) -> Status:
    """An ERROR span status saying ``description``."""
    return Status(StatusCode.ERROR, description)


def end_send(span: Span, error: BaseException | None) -> None:
    """End a PRODUCER span started for publish_many, recording the event's failure."""
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()


@contextlib.contextmanager
def batch_span(
    tracer: Tracer, system: str, topic: str, group: str, events: list[Event]
) -> Iterator[Span]:
    """The CONSUMER span of one batch handler call: linked to each event's producer span."""
    links = []
    for event in events:
        context = _remote(event.extensions.get("traceparent"), event.extensions.get("tracestate"))
        if context is not None:
            links.append(trace.Link(trace.get_current_span(context).get_span_context()))
    span = tracer.start_span(
        f"process {topic}",
        context=None,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={
            "messaging.system": system,
            "messaging.destination.name": topic,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.consumer.group.name": group,
            "messaging.batch.message_count": len(events),
        },
    )
    with trace.use_span(span, end_on_exit=True, record_exception=True):
        yield span


@contextlib.contextmanager
def consumer_span(
    tracer: Tracer, system: str, topic: str, group: str, event: Event
) -> Iterator[Span]:
    """The CONSUMER span of handling ``event`` as ``group``, current inside the block."""
    attributes = _attributes(system, topic, event, "process")
    attributes["messaging.consumer.group.name"] = group
    span = tracer.start_span(
        f"process {topic}",
        context=_remote(event.extensions.get("traceparent"), event.extensions.get("tracestate")),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )
    with trace.use_span(span, end_on_exit=True, record_exception=True):
        yield span


def add_event(name: str, attributes: dict[str, Any], *, error: bool = False) -> None:
    """Add a span event to the current span (a no-op without one); ``error`` also marks the
    span's status as an error."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.add_event(name, attributes)
    if error:
        span.set_status(Status(StatusCode.ERROR, str(attributes.get("error", name))))


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, or ``None`` when none is active."""
    context = trace.get_current_span().get_span_context()
    return _format(context) if context.is_valid else None
