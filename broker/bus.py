"""The :class:`Bus`: the one object services use to publish and subscribe.

It knows only the ports (:mod:`broker.ports`): give it a URL or an adapter. It stamps outgoing
events (source, TTL, causation/correlation/trace from the handler being run), lets a bound
codec validate and encode data, and runs one :class:`~broker.consumer.Consumer` per
subscription, which applies the :class:`~broker.policies.Policy`.

    async with Bus("sqlite:///.choreo/broker.db", source="order-service") as bus:
        await bus.subscribe("payments", on_payment, group="order-service")
        await bus.publish("orders", type="order.placed", data={"id": 1}, key="1")
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from broker import deadletter
from broker import observability as obs
from broker.consumer import Consumer, Handler
from broker.context import derive_extensions
from broker.declarations import (
    Declarations,
    PayloadSchema,
    PublicationSpec,
    Publisher,
    SubscriptionSpec,
    check_schema,
)
from broker.envelope import Event, check_extension_names, format_time
from broker.errors import ClosedError, ConfigurationError, PayloadError, TopicNotFoundError
from broker.policies import Policy
from broker.ports import Adapter, Backlog, Capabilities, PayloadCodec, TopicInfo
from broker.urls import adapter_from_url, resolve_url

__all__ = ["Bus", "Subscriber"]


def _expiration(ttl: float) -> str:
    if ttl <= 0:
        raise ConfigurationError(f"a TTL must be positive, got {ttl}s")
    return format_time(datetime.now(UTC) + timedelta(seconds=ttl))


class Subscriber:
    """A running subscription; :meth:`stop` ends it, leaving unacked events to be redelivered."""

    def __init__(self, topics: tuple[str, ...], group: str, consumer: Consumer) -> None:
        self.topics = topics
        self.group = group
        self._consumer = consumer
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._consumer.run(), name=f"choreo:{self.group}")

    @property
    def handled(self) -> int:
        """How many events the handler finished successfully."""
        return self._consumer.handled

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking deliveries, let running handlers finish and ack (up to ``grace`` s),
        then close the subscription: what is still unacked is delivered again later."""
        await self._consumer.drain(grace)
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=1.0)
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def backlog(self) -> Backlog | None:
        """Where this subscription's group stands on the broker (``None``: the backend cannot
        tell); the saga monitor's watermark follows it."""
        report = getattr(self._consumer.subscription, "backlog", None)
        if report is None:
            return None
        result: Backlog | None = await report()
        return result

    async def wait(self) -> None:
        """Wait until the subscription ends (or fails)."""
        if self._task is not None:
            await self._task


class Bus:
    """Publish and subscribe to CloudEvents over one backend."""

    def __init__(
        self,
        broker: str | Adapter | None = None,
        *,
        source: str = "choreograph",
        policy: Policy | None = None,
        codec: PayloadCodec | None = None,
        **adapter_options: Any,
    ) -> None:
        if broker is None or isinstance(broker, str):
            broker = adapter_from_url(resolve_url(broker), **adapter_options)
        self.adapter: Adapter = broker
        self.source = source
        self.policy = policy or Policy()
        self.codec = codec
        self._subscribers: list[Subscriber] = []
        self._pending: list[tuple[tuple[str, ...], Handler, dict[str, Any]]] = []
        self._started = False
        self._closed = False
        self._published: dict[str, Any] = {}
        self._sampled = 0
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
    ) -> Event:
        """Publish ``event`` (or one built from ``type``/``data``); returns what was sent.

        Returns only once the broker durably accepted it; raises otherwise.
        """
        self._check_started()
        extra: dict[str, Any] = dict(event.extensions) if event is not None else {}
        if extensions:
            extra.update(extensions)
        if key is not None:
            extra["partitionkey"] = key
        if correlation_id is not None:
            extra["correlationid"] = correlation_id
        derive_extensions(extra)
        if ttl is not None:
            extra["expiration"] = _expiration(ttl)
        if event is not None:
            check_extension_names(extra)
            event = dataclasses.replace(event, extensions=extra)
        elif type:
            event = Event(
                type=type, source=self.source, data=data, subject=subject, extensions=extra
            )
        else:
            raise ConfigurationError("publish needs an Event or a `type=`")
        return await self._send(topic, event, ttl)

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

    def _check_started(self) -> None:
        if not self._started:
            raise ClosedError("call `await bus.start()` (or `async with bus`) before publishing")

    async def _send(self, topic: str, event: Event, ttl: float | None) -> Event:
        """Encode with the topic's codec, publish, count; returns the event as sent."""
        if self.codec is not None:
            try:
                event = await self.codec.encode(topic, event)
            except ValueError as exc:
                raise PayloadError(str(exc)) from exc
        self._sampled += 1
        if self._sampled & obs.LATENCY_SAMPLE_MASK:
            await self.adapter.publish(topic, event, ttl=ttl)
        else:  # latency histograms sample one publish in eight: counters stay exact
            started = time.perf_counter()
            await self.adapter.publish(topic, event, ttl=ttl)
            obs.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        counter = self._published.get(topic)
        if counter is None:
            counter = self._published[topic] = obs.PUBLISHED.labels(topic)
        counter.inc()
        return event

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
        names = (topics,) if isinstance(topics, str) else tuple(topics)
        spec = SubscriptionSpec(names, group, handler, type, schema)
        if not names:
            raise ConfigurationError("subscribe needs at least one topic")
        if not group:
            raise ConfigurationError("subscribe needs a non-empty group name")
        if from_beginning and not self.capabilities.replay:
            raise ConfigurationError(
                f"{self.adapter.url} cannot replay history, so from_beginning is not available"
            )
        if not self._started:
            raise ClosedError("call `await bus.start()` before subscribing")
        subscription = await self.adapter.subscribe(
            names, group, from_beginning=from_beginning, prefetch=prefetch
        )
        consumer = Consumer(
            subscription,
            handler,
            group=group,
            policy=policy or self.policy,
            publish_event=self.publish_event,
            codec=self.codec,
        )
        subscriber = Subscriber(names, group, consumer)
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
        """The broker's topics."""
        return await self.adapter.list_topics()

    async def create_topic(self, topic: str, *, partitions: int | None = None) -> None:
        """Create ``topic`` (idempotent)."""
        await self.adapter.create_topic(topic, partitions=partitions)

    async def browse(self, topic: str, *, limit: int = 100) -> list[Event]:
        """Up to ``limit`` retained events of ``topic``, oldest first, without consuming them."""
        return await self.adapter.browse(topic, limit=limit)

    async def dead_letters(self, dlq_topic: str, *, limit: int = 100) -> list[Event]:
        """Events in a dead-letter topic, oldest first, without consuming them."""
        return await self.browse(dlq_topic, limit=limit)

    def dead_letter_topic(self, topic: str, group: str = "") -> str:
        """The dead-letter topic of ``topic`` under this bus's policy."""
        return self.policy.dead_letter.topic_for(topic, group)

    async def replay(self, dlq_topic: str, ids: Collection[str] | None = None) -> list[Event]:
        """Publish dead letters back to their original topic, then remove them from the DLQ.

        The ``dlq*`` extensions are stripped (and ``expiration``, for expired events).
        Returns the events replayed.
        """
        entries = await self.browse(dlq_topic, limit=1_000_000)
        chosen = [e for e in entries if ids is None or e.id in ids]
        if ids is not None:
            missing = set(ids) - {e.id for e in chosen}
            if missing:
                raise TopicNotFoundError(
                    f"no event with id {', '.join(sorted(missing))} in {dlq_topic}"
                )
        partial = ids is not None and len(chosen) < len(entries)
        if partial and not self.capabilities.selective_delete:
            raise ConfigurationError(
                f"{self.adapter.url} cannot delete single events from {dlq_topic}; "
                "replay all of them instead"
            )
        targets = [self._origin(dlq_topic, entry) for entry in chosen]
        replayed = []
        for target, entry in zip(targets, chosen, strict=True):
            original = deadletter.strip(entry)
            await self.adapter.publish(target, original)
            replayed.append(original)
        if self.capabilities.selective_delete:
            await self.adapter.purge(dlq_topic, [e.id for e in chosen])
        else:  # all of them; a dead letter that arrived meanwhile would go too (documented)
            await self.adapter.purge(dlq_topic, None)
        return replayed

    def _origin(self, dlq_topic: str, entry: Event) -> str:
        """Where a dead letter is replayed to: its ``dlqtopic``, else what the DLQ name says."""
        found = deadletter.info(entry)
        target = (found.topic if found else "") or self.policy.dead_letter.origin_of(dlq_topic)
        if not target:
            raise TopicNotFoundError(
                f"event {entry.id} in {dlq_topic} names no original topic (no dlqtopic) and "
                f"{dlq_topic} is not a dead-letter topic under "
                f"{self.policy.dead_letter.topic_template!r}; nothing was replayed"
            )
        return target

    async def purge(self, dlq_topic: str, ids: Collection[str] | None = None) -> int:
        """Delete dead letters (all, or only ``ids``); returns how many were deleted."""
        if ids is not None and not self.capabilities.selective_delete:
            raise ConfigurationError(
                f"{self.adapter.url} cannot delete single events; purge the whole {dlq_topic}"
            )
        return await self.adapter.purge(dlq_topic, ids)
