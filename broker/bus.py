"""The :class:`Bus`: the one object services use to publish and subscribe.

It knows only the ports (:mod:`broker.ports`): give it a URL or an adapter. It stamps outgoing
events (source, TTL, causation/correlation/trace from the handler being run), lets a bound
codec validate and encode data, and runs one :class:`~broker.consumer.Consumer` per
subscription, which applies the :class:`~broker.policies.Policy`. Its dead-letter methods
(``dead_letters``, ``replay``, ``purge`` ...) delegate to :mod:`broker.deadletter_ops`.

    async with Bus("sqlite:///.choreo/broker.db", source="order-service") as bus:
        await bus.subscribe("payments", on_payment, group="order-service")
        await bus.publish("orders", type="order.placed", data={"id": 1}, key="1")
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import itertools
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.trace import Span, Tracer, TracerProvider

from broker import deadletter, tracing
from broker import observability as obs
from broker.batch import BatchConsumer, BatchHandler, PublishResult
from broker.clock import SYSTEM_CLOCK, Clock
from broker.consumer import Consumer, Handler, Runner
from broker.context import (
    current_event,
    current_handling,
    derive_extensions,
    new_traceparent,
    new_traceparents,
)
from broker.deadletter import DeadLetterGroup, DeadLetterSelection
from broker.deadletter_ops import DeadLetterOps
from broker.declarations import (
    Declarations,
    PayloadSchema,
    PublicationSpec,
    Publisher,
    SubscriptionSpec,
    check_schema,
)
from broker.delay import DELIVER_AT
from broker.delay import deliver_at as _deliver_at
from broker.envelope import (
    Event,
    ExtensionValue,
    check_extension_names,
    format_time,
    new_event,
    new_id,
    new_ids,
    stamped_event,
)
from broker.errors import (
    ClosedError,
    ConfigurationError,
    EnvelopeError,
    PayloadError,
)
from broker.policies import Policy
from broker.ports import (
    Adapter,
    Capabilities,
    PayloadCodec,
    Subscription,
    TopicInfo,
    publisher_now,
)
from broker.reply import REPLY_TO, Requester, Responder, is_reply_topic
from broker.subscriber import Subscriber
from broker.urls import adapter_from_url, resolve_url

__all__ = ["Bus", "Subscriber"]

_utc_now = datetime.now


_ITEM_OPTIONS = frozenset(
    (
        "type",
        "data",
        "key",
        "subject",
        "correlation_id",
        "ttl",
        "extensions",
        "delay",
        "deliver_at",
    )
)


#: The publish_many item options :meth:`Bus._stamp_plain` stamps itself.
_PLAIN_OPTIONS = frozenset(("type", "data", "key", "subject"))


def _topics(topics: str | Sequence[str]) -> tuple[str, ...]:
    names = (topics,) if isinstance(topics, str) else tuple(topics)
    if not names:
        raise ConfigurationError("subscribe needs at least one topic")
    return names


def _given_traceparent(
    event: Event | None, extensions: Mapping[str, Any] | None
) -> ExtensionValue | None:
    """The traceparent a publisher set itself (an outbox row's), if any."""
    if extensions and "traceparent" in extensions:
        given: ExtensionValue | None = extensions["traceparent"]
        return given
    return event.extensions.get("traceparent") if event is not None else None


def _ttl_of(item: tuple[Event, float | None]) -> float | None:
    return item[1]


def _expiration(ttl: float, now: datetime) -> str:
    if ttl <= 0:
        raise ConfigurationError(f"a TTL must be positive, got {ttl}s")
    return format_time(now + timedelta(seconds=ttl))


class Bus:
    """Publish and subscribe to CloudEvents over one backend."""

    def __init__(
        self,
        broker: str | Adapter | None = None,
        *,
        source: str = "choreograph",
        policy: Policy | None = None,
        codec: PayloadCodec | None = None,
        tracer_provider: TracerProvider | None = None,
        clock: Clock | None = None,
        **adapter_options: Any,
    ) -> None:
        if broker is None or isinstance(broker, str):
            broker = adapter_from_url(resolve_url(broker), **adapter_options)
        self.adapter: Adapter = broker
        #: The adapter's ``publish_now`` (a publish that never waits), or None.
        self._publish_now = publisher_now(broker)
        #: What event times, TTLs, retries, the breaker and the adapter's schedules follow
        #: (:mod:`broker.clock`; a :class:`broker.testing.VirtualClock` in tests).
        self.clock: Clock = clock or SYSTEM_CLOCK
        #: ``clock.now`` when a clock was given; None: events take the current time as they
        #: are built (one call less per publish on the hot path).
        self._now = None if clock is None else clock.now
        if clock is not None:
            use_clock = getattr(broker, "use_clock", None)  # adapters built on the kit have it
            if use_clock is not None:
                use_clock(clock)
        self.source = source
        self.policy = policy or Policy()
        self.codec = codec
        self._subscribers: list[Subscriber] = []
        self._pending: list[tuple[tuple[str, ...], Handler, dict[str, Any]]] = []
        self._started = False
        self._closed = False
        self._published: dict[str, Any] = {}
        self._sampled = 0
        self._requester: Requester | None = None
        self._tracer_provider = tracer_provider
        self._tracer: Tracer | None = None
        self._system = tracing.messaging_system(self.adapter.url)
        self._responder = Responder(source, self.publish_event)
        #: What this bus publishes and subscribes to, for :mod:`broker.asyncapi`.
        self.declarations = Declarations()

    @property
    def capabilities(self) -> Capabilities:
        """What the backend does natively."""
        return self.adapter.capabilities

    @property
    def url(self) -> str:
        """The broker URL, password masked."""
        return self.adapter.url

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Bus:
        """Connect, then start the subscriptions registered with :meth:`subscriber`."""
        if self._closed:
            raise ClosedError("this Bus was stopped; create a new one")
        if not self._started:
            self._tracer = tracing.tracer_for(self._tracer_provider)
            await self.adapter.connect()
            self._started = True
            pending, self._pending = self._pending, []
            for topics, handler, options in pending:
                await self.subscribe(topics, handler, **options)
        return self

    async def stop(self) -> None:
        """Stop every subscription, flush publishes and close the adapter."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(s.stop() for s in self._subscribers), return_exceptions=True)
        self._subscribers.clear()
        if self._requester is not None:
            await self._requester.close()
        await self.adapter.close()

    async def __aenter__(self) -> Bus:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- publishing ------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        event: Event | None = None,
        /,
        *,
        type: str | None = None,
        data: Any = None,
        key: str | None = None,
        subject: str | None = None,
        correlation_id: str | None = None,
        ttl: float | None = None,
        extensions: Mapping[str, Any] | None = None,
        delay: float | timedelta | None = None,
        deliver_at: datetime | None = None,
    ) -> Event:
        """Publish ``event`` (or one built from ``type``/``data``); returns what was sent.

        ``delay`` (seconds or a timedelta) or ``deliver_at`` (an aware datetime) hold the
        event back: no group sees it before then (the ``deliverat`` extension; a TTL still
        counts from now). Returns only once the broker durably accepted it; raises otherwise.
        """
        if not self._started:
            self._check_started()
        due = None if delay is None and deliver_at is None else self._deliverat(delay, deliver_at)
        if self._tracer is not None:
            parent = _given_traceparent(event, extensions)
            event = self._stamp(
                event, type, data, key, subject, correlation_id, ttl, extensions, due
            )
            return await self._traced(topic, event, ttl, parent)
        if event is None and type.__class__ is str and type and ttl is None and due is None:
            event = self._plain(type, data, key, subject, correlation_id, extensions)
        else:
            event = self._stamp(
                event, type, data, key, subject, correlation_id, ttl, extensions, due
            )
        if self.codec is not None:
            return await self._send(topic, event, ttl)
        # _send without its coroutine: the hot path of every publish
        self._sampled += 1
        publish_now = self._publish_now
        if self._sampled & obs.LATENCY_SAMPLE_MASK:
            if publish_now is None:
                await self.adapter.publish(topic, event, ttl=ttl)
            elif publish_now(topic, event, ttl):  # never waits: no coroutine either
                await asyncio.sleep(0)  # but a subscriber lags far behind: let it run
        else:  # latency histograms sample one publish in eight: counters stay exact
            started = time.perf_counter()
            await self.adapter.publish(topic, event, ttl=ttl)
            obs.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        counter = self._published.get(topic) or self._count(topic)
        counter.value += 1
        return event

    def _plain(
        self,
        type: str,
        data: Any,
        key: str | None,
        subject: str | None,
        correlation_id: str | None,
        extensions: Mapping[str, Any] | None,
    ) -> Event:
        """What :meth:`_stamp` makes of a ``type`` without a TTL or a delay, in one call: the
        handler context looked at once, the event built without ``new_event``'s call when
        the caller gave no extensions to check (the same checks otherwise)."""
        extra: dict[str, Any] = dict(extensions) if extensions else {}
        if key is not None:
            extra["partitionkey"] = key
        if correlation_id is not None:
            extra["correlationid"] = correlation_id
        handling = current_handling()
        if handling is not None and handling[0] is not None:
            derive_extensions(extra)
        elif "traceparent" not in extra:  # outside a handler: a new trace
            extra["traceparent"] = new_traceparent()
        now, source = self._now, self.source
        if extensions is not None or source.__class__ is not str or not source:
            return new_event(type, source, data, subject, extra, None if now is None else now())
        moment = _utc_now(UTC) if now is None else now()
        return stamped_event(type, source, data, subject, extra, moment, new_id())

    async def _send(self, topic: str, event: Event, ttl: float | None) -> Event:
        """Encode (when a codec is bound), publish and count a stamped event."""
        if self.codec is not None:
            event = await self._encoded(topic, event)
        self._sampled += 1
        if self._sampled & obs.LATENCY_SAMPLE_MASK:
            await self.adapter.publish(topic, event, ttl=ttl)
        else:  # latency histograms sample one publish in eight: counters stay exact
            started = time.perf_counter()
            await self.adapter.publish(topic, event, ttl=ttl)
            obs.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        counter = self._published.get(topic) or self._count(topic)
        counter.value += 1
        return event

    async def _traced(
        self, topic: str, event: Event, ttl: float | None, parent: ExtensionValue | None
    ) -> Event:
        """:meth:`_send` inside a PRODUCER span whose context the event carries."""
        assert self._tracer is not None
        span, event = tracing.producer_span(self._tracer, self._system, topic, event, parent)
        with tracing.sending(span):
            return await self._send(topic, event, ttl)

    async def request(
        self,
        topic: str,
        event: Event | None = None,
        /,
        *,
        type: str | None = None,
        data: Any = None,
        key: str | None = None,
        subject: str | None = None,
        correlation_id: str | None = None,
        ttl: float | None = None,
        extensions: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
    ) -> Event:
        """Publish a request to ``topic`` and return the reply event of a subscriber.

        The request is published as :meth:`publish` does, with a ``replyto`` extension naming
        this bus's reply topic; a handler's return value becomes the reply (see
        :mod:`broker.reply`). Raises :class:`~broker.errors.RequestTimeoutError` when no reply
        arrives within ``timeout`` s and :class:`~broker.errors.RequestFailedError` when the
        reply is an error reply (the handler failed).
        """
        if timeout <= 0:
            raise ConfigurationError(f"a request timeout must be positive, got {timeout}s")
        self._check_started()
        requester = self._requester
        if requester is None:
            requester = self._requester = Requester(self.adapter)
        await requester.open()
        extra = {**(extensions or {}), REPLY_TO: requester.topic}
        request = self._stamp(event, type, data, key, subject, correlation_id, ttl, extra)
        future = requester.expect(request.id)
        try:
            await self.publish(topic, request, ttl=ttl)
        except BaseException:
            requester.forget(request.id)
            raise
        return await requester.wait(future, request, topic, timeout)

    async def publish_many(
        self,
        topic: str,
        events: Iterable[Event | Mapping[str, Any]],
        *,
        ttl: float | None = None,
        delay: float | timedelta | None = None,
        deliver_at: datetime | None = None,
    ) -> PublishResult:
        """Publish several events to ``topic`` with as few broker round trips as the backend
        allows, in order; returns one :class:`~broker.batch.Outcome` per event.

        Each item is an :class:`Event` or a mapping of :meth:`publish`'s keyword options
        (``type``, ``data``, ``key``, ``subject``, ``correlation_id``, ``ttl``,
        ``extensions``, ``delay``, ``deliver_at``), stamped as :meth:`publish` stamps.
        ``ttl``, and ``delay`` or ``deliver_at``, apply to the items that name none.
        Returns once every event was durably accepted or failed; nothing is silently dropped
        (``result.raise_for_failures()`` turns failures into an error). An item that is not
        a valid event raises before anything is sent.
        """
        self._check_started()
        at = self.clock.now()  # one time for the list: one RFC 3339 text for every event
        due = None if delay is None and deliver_at is None else _deliver_at(delay, deliver_at, at)
        given = list(events)
        plain = self._stamp_plain(given, ttl, due, at)
        if plain is not None and self._tracer is None and self.codec is None:
            return await self._publish_plain(topic, plain, ttl)  # one TTL, events as built
        if plain is not None:
            stamped = [(event, ttl) for event in plain]
        else:
            stamped = [self._item(index, item, ttl, due, at) for index, item in enumerate(given)]
        spans: list[Span] = []
        if self._tracer is not None:
            spans, stamped = self._producer_spans(topic, given, stamped)
        refused: dict[int, Exception] = {}
        if self.codec is not None:
            for index, (event, own) in enumerate(stamped):
                try:
                    stamped[index] = (await self._encoded(topic, event), own)
                except PayloadError as exc:
                    refused[index] = exc
        errors: list[Exception | None] = []
        started = time.perf_counter()
        for run_ttl, run in itertools.groupby(stamped, key=_ttl_of):
            items = [event for event, _ in run]
            errors.extend(await self._publish_run(topic, items, run_ttl, refused, len(errors)))
        if stamped:
            obs.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        self._count(topic).inc(errors.count(None))
        if spans:
            for span, error in zip(spans, errors, strict=True):
                tracing.end_send(span, error)
        return PublishResult.of(topic, [event for event, _ in stamped], errors)

    async def _publish_plain(
        self, topic: str, events: list[Event], ttl: float | None
    ) -> PublishResult:
        """publish_many of a list stamped by :meth:`_stamp_plain`, without spans or codec:
        the events go to the adapter as they are, and the result keeps them with their
        errors (no object per event)."""
        started = time.perf_counter()
        errors = await self._publish_run(topic, events, ttl, {}, 0)
        if events:
            obs.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        self._count(topic).inc(errors.count(None))
        return PublishResult.of(topic, events, errors)

    def _producer_spans(
        self,
        topic: str,
        items: list[Event | Mapping[str, Any]],
        stamped: list[tuple[Event, float | None]],
    ) -> tuple[list[Span], list[tuple[Event, float | None]]]:
        """A PRODUCER span per item of publish_many, and the items carrying their context."""
        assert self._tracer is not None
        spans, traced = [], []
        for item, (event, own) in zip(items, stamped, strict=True):
            given = (
                _given_traceparent(item, None)
                if isinstance(item, Event)
                else _given_traceparent(None, item.get("extensions"))
            )
            span, sent = tracing.producer_span(self._tracer, self._system, topic, event, given)
            spans.append(span)
            traced.append((sent, own))
        return spans, traced

    def publisher(
        self,
        topic: str,
        *,
        type: str,
        schema: PayloadSchema | None = None,
        description: str | None = None,
    ) -> Publisher:
        """Declare that this bus publishes ``type`` events on ``topic``; nothing is sent.

        ``schema`` (a pydantic model class, a JSON Schema dict or a registry subject) and
        ``description`` describe the payload in the AsyncAPI document. The returned
        :class:`~broker.declarations.Publisher` publishes such events
        (``await publisher.publish(data, key=...)``), or decorates a function that builds
        their data.
        """
        spec = PublicationSpec(topic, type, schema, description)
        self.declarations.add(spec)
        return Publisher(self, spec)

    async def publish_event(self, topic: str, event: Event, *, ttl: float | None = None) -> None:
        """Publish an already-built event (a dead letter, a relayed row) exactly as it is:
        nothing is stamped and no codec runs. Returns once the broker durably accepted it."""
        self._check_started()
        await self.adapter.publish(topic, event, ttl=ttl)

    def _deliverat(self, delay: float | timedelta | None, at: datetime | None) -> str | None:
        """The ``deliverat`` of a publish's ``delay=``/``deliver_at=`` (None for neither),
        counted from the bus's clock."""
        return None if delay is None and at is None else _deliver_at(delay, at, self.clock.now())

    def _check_started(self) -> None:
        if not self._started:
            raise ClosedError("call `await bus.start()` (or `async with bus`) before publishing")

    def _stamp(
        self,
        event: Event | None,
        type: str | None = None,
        data: Any = None,
        key: str | None = None,
        subject: str | None = None,
        correlation_id: str | None = None,
        ttl: float | None = None,
        extensions: Mapping[str, Any] | None = None,
        deliverat: str | None = None,
        at: datetime | None = None,
    ) -> Event:
        """The event to send: built or copied, with key, correlation, causation, trace,
        expiration and delivery time filled in; a built event's time is ``at`` when given
        (``publish_many`` stamps a list with one time), else the clock's."""
        if event is None:
            if not type:
                raise ConfigurationError("publish needs an Event or a `type=`")
            kind = type
            extra: dict[str, Any] = dict(extensions) if extensions else {}
        else:
            extra = dict(event.extensions)
            if extensions:
                extra.update(extensions)
        if key is not None:
            extra["partitionkey"] = key
        if correlation_id is not None:
            extra["correlationid"] = correlation_id
        derive_extensions(extra)
        if ttl is not None:
            extra["expiration"] = _expiration(ttl, at or self.clock.now())
        if deliverat is not None:
            extra[DELIVER_AT] = deliverat
        if event is None:
            if at is None and self._now is not None:
                at = self._now()
            return new_event(kind, self.source, data, subject, extra, at)
        check_extension_names(extra)
        return dataclasses.replace(event, extensions=extra)

    def _stamp_plain(
        self,
        items: list[Event | Mapping[str, Any]],
        ttl: float | None,
        due: str | None,
        at: datetime,
    ) -> list[Event] | None:
        """The events of a publish_many list whose items are all plain dicts (``type`` and
        ``data``, ``key``, ``subject`` at most), stamped as :meth:`_stamp` stamps them, with
        what is the same for the whole list (the handler being run, the expiration) worked
        out once, and the ids and new traces taken for the whole list at once; None for any
        other list (each item goes through :meth:`_item`, which names what is wrong)."""
        source = self.source
        if source.__class__ is not str or not source:
            return None
        try:
            expiration = None if ttl is None else _expiration(ttl, at)
        except (ConfigurationError, TypeError):
            return None
        shared: dict[str, Any] = {}  # the extensions every event of the list gets
        if expiration is not None:
            shared["expiration"] = expiration
        if due is not None:
            shared[DELIVER_AT] = due
        derived = current_event() is not None  # in a handler: its causation and trace
        traces = itertools.repeat(None) if derived else new_traceparents(len(items))
        allowed, make, events = _PLAIN_OPTIONS.issuperset, stamped_event, list[Event]()
        append = events.append
        for item, id_, trace in zip(items, new_ids(len(items)), traces, strict=False):
            if item.__class__ is not dict:
                return None
            get = item.get
            kind, data = get("type"), get("data")
            if kind.__class__ is not str or not kind:
                return None
            if len(item) == 2 and (data is not None or "data" in item):
                key = subject = None  # the common item: a type and data, nothing more
            elif allowed(item):
                key, subject = get("key"), get("subject")
            else:
                return None
            extra: dict[str, Any] = {} if key is None else {"partitionkey": key}
            if derived:
                derive_extensions(extra)  # the handler's causation, correlation and trace
            else:
                extra["traceparent"] = trace
            if shared:
                extra.update(shared)
            append(make(kind, source, data, subject, extra, at, id_))
        return events

    def _item(
        self,
        index: int,
        item: Event | Mapping[str, Any],
        ttl: float | None,
        due: str | None,
        at: datetime,
    ) -> tuple[Event, float | None]:
        """One item of publish_many, stamped (at ``at``, the call's time), with its TTL."""
        try:
            if isinstance(item, Event):
                return self._stamp(item, ttl=ttl, deliverat=due, at=at), ttl
            if item.__class__ is not dict and not isinstance(item, Mapping):
                raise ConfigurationError(
                    "publish_many takes Events or mappings of publish options, not "
                    f"{builtins.type(item).__name__}"
                )
            if not item.keys() <= _ITEM_OPTIONS:
                unknown = ", ".join(sorted(set(item) - _ITEM_OPTIONS))
                raise ConfigurationError(
                    f"unknown publish option(s) {unknown}; use {', '.join(sorted(_ITEM_OPTIONS))}"
                )
            get = item.get
            own = get("ttl", ttl)
            if "delay" in item or "deliver_at" in item:
                due = _deliver_at(get("delay"), get("deliver_at"), at)
            event = self._stamp(
                None,
                get("type"),
                get("data"),
                get("key"),
                get("subject"),
                get("correlation_id"),
                own,
                get("extensions"),
                due,
                at,
            )
            return event, own
        except (ConfigurationError, EnvelopeError) as exc:
            raise builtins.type(exc)(f"publish_many item {index}: {exc}") from exc

    async def _encoded(self, topic: str, event: Event) -> Event:
        """``event`` with its data encoded by the topic's codec (PayloadError if refused)."""
        assert self.codec is not None
        try:
            return await self.codec.encode(topic, event)
        except ValueError as exc:
            raise PayloadError(str(exc)) from exc

    async def _publish_run(
        self,
        topic: str,
        events: list[Event],
        ttl: float | None,
        refused: Mapping[int, Exception],
        offset: int,
    ) -> list[Exception | None]:
        """The outcome of each event of a run with one TTL (``refused``: by the codec, by
        index in the whole call, the run starting at ``offset``)."""
        if refused:
            chosen = [e for i, e in enumerate(events, offset) if i not in refused]
        else:
            chosen = events
        try:
            errors = await self.adapter.publish_many(topic, chosen, ttl=ttl) if chosen else []
        except Exception as exc:  # nothing could be tried: every event of the run failed
            errors = [exc] * len(chosen)
        if not refused:
            return errors
        sent = iter(errors)
        return [refused.get(i) or next(sent) for i in range(offset, offset + len(events))]

    def _count(self, topic: str) -> obs.Count:
        counter = self._published.get(topic)
        if counter is None:
            counter = self._published[topic] = obs.PUBLISHED.labels(topic)
        return counter

    # -- subscribing -----------------------------------------------------------------------

    async def subscribe(
        self,
        topics: str | Sequence[str],
        handler: Handler,
        *,
        group: str,
        policy: Policy | None = None,
        from_beginning: bool = False,
        prefetch: int = 100,
        type: str | None = None,
        schema: PayloadSchema | None = None,
    ) -> Subscriber:
        """Start handling ``topics`` as ``group``; returns once the group's position exists.

        ``type`` and ``schema`` describe the events the handler expects, for the AsyncAPI
        document; they do not filter deliveries.
        """
        names = _topics(topics)
        spec = SubscriptionSpec(names, group, handler, type, schema)
        subscription = await self._open(names, group, from_beginning, prefetch)
        consumer = Consumer(
            subscription,
            handler,
            group=group,
            policy=policy or self.policy,
            publish_event=self.publish_event,
            codec=self.codec,
            responder=self._responder,
            traced=tracing.Tracing(self._tracer, self._system) if self._tracer else None,
            clock=self.clock,
        )
        return self._started_subscriber(spec, consumer)

    async def subscribe_batch(
        self,
        topics: str | Sequence[str],
        handler: BatchHandler,
        *,
        group: str,
        max_batch: int = 100,
        max_wait: float = 0.01,
        policy: Policy | None = None,
        from_beginning: bool = False,
        prefetch: int | None = None,
        type: str | None = None,
        schema: PayloadSchema | None = None,
    ) -> Subscriber:
        """Start handling ``topics`` as ``group`` in batches: ``handler`` gets a list of up to
        ``max_batch`` events, as many as are there, waiting up to ``max_wait`` s for more
        once one arrived. Every per-event policy applies (see :mod:`broker.batch`); acks go
        out after the handler returned. ``prefetch`` defaults to ``2 * max_batch``; ``type``
        and ``schema`` describe the events for the AsyncAPI document, as for :meth:`subscribe`.
        """
        names = _topics(topics)
        spec = SubscriptionSpec(names, group, handler, type, schema)
        chosen = policy or self.policy
        if max_batch < 1 or max_wait < 0:
            raise ConfigurationError(
                f"subscribe_batch needs max_batch >= 1 and max_wait >= 0, got {max_batch} "
                f"and {max_wait}"
            )
        if chosen.concurrency != 1:
            raise ConfigurationError(
                "a batch subscription handles one batch at a time: use a policy with "
                f"concurrency=1 (got {chosen.concurrency}), or a larger max_batch"
            )
        subscription = await self._open(names, group, from_beginning, prefetch or 2 * max_batch)
        consumer = BatchConsumer(
            subscription,
            handler,
            group=group,
            policy=chosen,
            publish_event=self.publish_event,
            codec=self.codec,
            max_batch=max_batch,
            max_wait=max_wait,
            traced=tracing.Tracing(self._tracer, self._system) if self._tracer else None,
            clock=self.clock,
        )
        return self._started_subscriber(spec, consumer)

    async def _open(
        self, names: tuple[str, ...], group: str, from_beginning: bool, prefetch: int
    ) -> Subscription:
        if not group:
            raise ConfigurationError("subscribe needs a non-empty group name")
        if from_beginning and not self.capabilities.replay:
            raise ConfigurationError(
                f"{self.adapter.url} cannot replay history, so from_beginning "
                "(--from-beginning) is not available; leave it out: a group receives the events "
                "published from its first subscription on"
            )
        if not self._started:
            raise ClosedError("call `await bus.start()` before subscribing")
        return await self.adapter.subscribe(
            names, group, from_beginning=from_beginning, prefetch=prefetch
        )

    def _started_subscriber(self, spec: SubscriptionSpec, consumer: Runner) -> Subscriber:
        subscriber = Subscriber(spec.topics, spec.group, consumer)
        subscriber.start()
        self._subscribers.append(subscriber)
        self.declarations.add(spec)
        return subscriber

    def subscriber(
        self,
        topics: str | Sequence[str],
        *,
        group: str,
        type: str | None = None,
        schema: PayloadSchema | None = None,
        **options: Any,
    ) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`subscribe`; the subscription starts with the bus (and is
        declared at once)."""
        names = (topics,) if isinstance(topics, str) else tuple(topics)
        check_schema(schema, f"the subscription of {group!r} to {', '.join(names)}")

        def register(handler: Handler) -> Handler:
            self.declarations.add(SubscriptionSpec(names, group, handler, type, schema))
            described = {"group": group, "type": type, "schema": schema}
            self._pending.append((names, handler, {**described, **options}))
            return handler

        return register

    # -- topics and dead letters -----------------------------------------------------------

    async def topics(self) -> list[TopicInfo]:
        """The broker's topics (requesters' private reply topics left out)."""
        listed = await self.adapter.list_topics()
        return [info for info in listed if not is_reply_topic(info.name)]

    async def create_topic(self, topic: str, *, partitions: int | None = None) -> None:
        """Create ``topic`` (idempotent)."""
        await self.adapter.create_topic(topic, partitions=partitions)

    async def browse(self, topic: str, *, limit: int = 100) -> list[Event]:
        """Up to ``limit`` retained events of ``topic``, oldest first, without consuming them."""
        return await self.adapter.browse(topic, limit=limit)

    def _dead_letter_ops(self) -> DeadLetterOps:
        """The dead-letter operations on this bus's adapter, under its current policy."""
        return DeadLetterOps(self.adapter, self.policy.dead_letter)

    async def dead_letters(
        self, dlq_topic: str, *, limit: int = 100, where: DeadLetterSelection | None = None
    ) -> list[Event]:
        """Events in a dead-letter topic, oldest first, without consuming them: the first
        ``limit``, or the first ``limit`` that ``where`` selects (a ``where.group`` that no
        dead letter of ``dlq_topic`` is in raises :class:`TopicNotFoundError`)."""
        return await self._dead_letter_ops().dead_letters(dlq_topic, limit=limit, where=where)

    async def dead_letter_groups(
        self,
        dlq_topic: str,
        *,
        by: Sequence[str] = deadletter.DEFAULT_GROUPING,
        where: DeadLetterSelection | None = None,
    ) -> list[DeadLetterGroup]:
        """The dead letters of ``dlq_topic`` (those ``where`` selects) grouped by the values of
        ``by`` (:data:`broker.deadletter.GROUP_KEYS`), the largest group first; a group's
        ``id`` selects it again with ``DeadLetterSelection(group=id, by=by)``."""
        return await self._dead_letter_ops().groups(dlq_topic, by=by, where=where)

    def dead_letter_topic(self, topic: str, group: str = "") -> str:
        """The dead-letter topic of ``topic`` under this bus's policy."""
        return self._dead_letter_ops().topic(topic, group)

    def dead_letter_topic_of(self, name: str) -> str:
        """``name`` when it already is a dead-letter topic under this bus's policy, else the
        dead-letter topic of ``name`` (for tools that take a topic or its DLQ)."""
        return self._dead_letter_ops().topic_of(name)

    async def dead_letter_topics(self) -> list[str]:
        """The dead-letter topics (under this bus's policy) the broker has."""
        return await self._dead_letter_ops().topics()

    async def replay(
        self,
        dlq_topic: str,
        ids: Collection[str] | None = None,
        *,
        where: DeadLetterSelection | None = None,
        to: str | None = None,
    ) -> list[Event]:
        """Publish dead letters (all, or those ``ids`` and ``where`` choose) back to their
        original topic, or all to ``to``, then remove them, and only them, from the DLQ.

        The ``dlq*`` extensions are stripped (and ``expiration``, for expired events).
        Returns the events replayed (none when nothing was chosen).
        """
        return await self._dead_letter_ops().replay(dlq_topic, ids, where=where, to=to)

    async def purge(
        self,
        dlq_topic: str,
        ids: Collection[str] | None = None,
        *,
        where: DeadLetterSelection | None = None,
    ) -> int:
        """Delete dead letters (all, or only those ``ids`` and ``where`` choose); returns how
        many were deleted (0 when nothing was chosen).

        Ids that are not in ``dlq_topic`` raise :class:`TopicNotFoundError` (nothing is
        deleted), as for :meth:`replay`; so do ids that ``where`` does not select."""
        return await self._dead_letter_ops().purge(dlq_topic, ids, where=where)
