"""``amqp://user:pass@host:5672/vhost``: RabbitMQ (AMQP 0-9-1) through aio-pika's wire layer.

Names on the broker (DESIGN.md): a topic is a durable **topic exchange** named after it; events
are published with the topic name as routing key; each group owns a durable **queue**
``<topic>.<group>`` bound to the exchange with ``#``. Publishes are persistent
(``delivery_mode=2``) and wait for the publisher confirm; deliveries are acked manually after
the handler, with QoS ``prefetch``. Acks are coalesced (``multiple=True``) once per loop turn.

CloudEvents AMQP binding, binary mode: application headers ``cloudEvents_<attr>`` (integers and
booleans keep their AMQP type; ``cloudEvents:<attr>`` and knative's ``ce-<attr>`` are read too),
the ``content_type`` and ``message_id`` properties, and the per-message ``expiration`` property
when a TTL is set. A group queue dead-letters what RabbitMQ expires into the exchange
``<topic>.dlq``, so broker-expired events land in the dead-letter store with ``dlqreason=expired``.

Dead-letter topics (``*.dlq``) also get a durable **store queue** named exactly after the topic,
which keeps entries while nobody subscribes; ``browse`` reads it with ``basic.get`` and gives
everything back (``nack`` with requeue restores the order), ``purge`` empties it or deletes
chosen ids. RabbitMQ cannot list exchanges over AMQP, so topics are recorded in the durable
queue ``choreo.topics`` (compacted when listed).

Options (query string; the rest goes to aiormq, e.g. ``heartbeat``): ``publish_timeout`` (30 s,
retrying across reconnects), ``connect_timeout`` (10 s), ``reconnect_delay`` (0.2 s, doubling to
5 s), ``expired_to_dlq`` (``true``), ``queue_type`` (``classic`` or ``quorum``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from pamqp import commands as spec

from broker.envelope import AMQP_PREFIXES, Event, format_time, from_binary, to_binary
from broker.errors import (
    BrokerUnavailableError,
    ClosedError,
    ConfigurationError,
    EnvelopeError,
    PublishError,
    PublishTimeoutError,
)
from broker.ports import Capabilities, Delivery, TopicInfo
from broker.urls import mask_url

__all__ = ["RabbitMQAdapter", "RabbitMQSettings"]

log = logging.getLogger("choreo.rabbitmq")

PREFIX = AMQP_PREFIXES[0]
READ_PREFIXES = (*AMQP_PREFIXES, "ce-")
REGISTRY_QUEUE = "choreo.topics"
DLQ_SUFFIX = ".dlq"
_TRUE = ("1", "true", "yes", "on")
#: Errors after which the connection or channel is gone and the operation may be retried.
RETRYABLE = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    ConnectionError,
    OSError,
    RuntimeError,  # aiormq: "<Connection> closed" when a channel is asked of a dead connection
)


@dataclasses.dataclass(frozen=True, slots=True)
class RabbitMQSettings:
    """The adapter's own options; anything else in the query string goes to aiormq."""

    publish_timeout: float = 30.0
    connect_timeout: float = 10.0
    reconnect_delay: float = 0.2
    max_reconnect_delay: float = 5.0
    close_grace: float = 1.0
    expired_to_dlq: bool = True
    queue_type: str = "classic"

    @classmethod
    def split(cls, options: Mapping[str, str]) -> tuple[RabbitMQSettings, dict[str, str]]:
        """Settings from string options, and the options left for the client."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        rest: dict[str, str] = {}
        for key, raw in options.items():
            if key not in names:
                rest[key] = str(raw)
            elif key == "expired_to_dlq":
                values[key] = str(raw).lower() in _TRUE
            elif key == "queue_type":
                values[key] = str(raw)
            else:
                try:
                    values[key] = float(raw)
                except ValueError as exc:
                    raise ConfigurationError(
                        f"amqp:// option {key}={raw!r} is not a number"
                    ) from exc
        settings = cls(**values)
        if settings.queue_type not in ("classic", "quorum"):
            raise ConfigurationError(
                f"amqp:// option queue_type={settings.queue_type!r}: use classic or quorum"
            )
        return settings, rest


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    if isinstance(value, datetime):
        return format_time(value if value.tzinfo else value.replace(tzinfo=UTC))
    return str(value)


def _attribute(name: str, value: Any) -> Any:
    """A header value as the envelope reads it: text, or an int/bool extension value."""
    if isinstance(value, str | bool):
        return value
    if isinstance(value, int) and not name.endswith("time"):
        return value
    if isinstance(value, int):  # an AMQP 1.0 style timestamp in milliseconds
        return format_time(datetime.fromtimestamp(value / 1000, UTC))
    return _text(value)


def decode_message(
    message: DeliveredMessage,
) -> tuple[Event | None, dict[str, str], EnvelopeError | None]:
    """The event in an AMQP message (or why there is none) and its headers as text."""
    props = message.header.properties
    raw = props.headers or {}
    fields = {name: _attribute(name, value) for name, value in raw.items()}
    if props.content_type:
        fields["content-type"] = props.content_type
    error: EnvelopeError | None = None
    try:
        event: Event | None = from_binary(fields, message.body, READ_PREFIXES)
    except EnvelopeError as exc:
        event, error = None, exc
    else:
        if "x-death" in raw and event is not None and "dlqreason" not in event.extensions:
            event = _mark_expired(event, raw["x-death"])
    headers = {
        name: value if isinstance(value, str) else _text(value) for name, value in fields.items()
    }
    if props.message_id:
        headers["message-id"] = props.message_id
    return event, headers, error


def _mark_expired(event: Event, deaths: Any) -> Event:
    """Give a message RabbitMQ dead-lettered itself the ``dlq*`` extensions of the core."""
    death = deaths[0] if isinstance(deaths, list) and deaths else {}
    if not isinstance(death, Mapping) or _text(death.get("reason", "")) != "expired":
        return event
    queue = _text(death.get("queue", ""))
    keys = death.get("routing-keys") or [death.get("exchange", "")]
    topic = _text(keys[0]) if keys else ""
    when = death.get("time")
    return event.with_extensions(
        dlqreason="expired",
        dlqerror=f"TTL passed in RabbitMQ queue {queue}",
        dlqattempts=0,
        dlqtopic=topic,
        dlqgroup=queue[len(topic) + 1 :] if queue.startswith(topic + ".") else queue,
        dlqtime=_text(when) if when is not None else format_time(datetime.now(UTC)),
    )


def encode_event(event: Event, ttl: float | None) -> tuple[bytes, spec.Basic.Properties]:
    """Body and properties of the AMQP binary-mode binding, persistent."""
    text_headers, body = to_binary(event, PREFIX)
    content_type = text_headers.pop("content-type", None)
    headers: dict[str, Any] = dict(text_headers)
    for name, value in event.extensions.items():
        if not isinstance(value, str):
            headers[PREFIX + name] = value
    expiration = None
    if ttl is not None:
        expiration = str(max(1, int(ttl * 1000)))
    props = spec.Basic.Properties(
        content_type=content_type,
        message_id=event.id,
        delivery_mode=2,
        headers=headers,
        expiration=expiration,
    )
    return body, props


class _Acks:
    """Acks of one channel, coalesced: a contiguous prefix goes out as one ``multiple`` ack."""

    __slots__ = ("acked", "channel", "lock", "nacks", "outstanding", "scheduled")

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self.outstanding: deque[int] = deque()
        self.acked: set[int] = set()
        self.nacks: list[int] = []
        self.lock = asyncio.Lock()
        self.scheduled = False

    @property
    def pending(self) -> bool:
        return bool(self.acked or self.nacks)

    async def flush(self) -> None:
        self.scheduled = False
        async with self.lock:
            if not self.pending:
                return
            try:
                await self._send()
            except (*RETRYABLE, aiormq.exceptions.AMQPError):
                # The channel is gone: the broker requeued its unacked deliveries already.
                self.acked.clear()
                self.nacks.clear()

    async def _send(self) -> None:
        channel = self.channel
        nacks, self.nacks = self.nacks, []
        for tag in nacks:
            self.outstanding.remove(tag)
            await channel.basic_nack(tag, requeue=True, wait=False)
        last = None
        outstanding, acked = self.outstanding, self.acked
        while outstanding and outstanding[0] in acked:
            last = outstanding.popleft()
            acked.discard(last)
        if last is not None:
            await channel.basic_ack(last, multiple=True, wait=False)
        rest, self.acked = self.acked, set()
        for tag in sorted(rest):
            outstanding.remove(tag)
            await channel.basic_ack(tag, wait=False)


class _RabbitDelivery(Delivery):
    __slots__ = ("_acks", "_done", "_sub", "_tag")

    def __init__(self, sub: _Subscription, acks: _Acks, topic: str, message: DeliveredMessage):
        event, headers, error = decode_message(message)
        count = headers.get("x-delivery-count")
        redelivered = int(count) if count and count.isdigit() else int(bool(message.redelivered))
        super().__init__(
            topic,
            event,
            body=message.body,
            headers=headers,
            redelivered=redelivered,
            decode_error=error,
        )
        self._sub = sub
        self._acks = acks
        self._tag: int = message.delivery_tag or 0
        self._done = False

    async def ack(self) -> None:
        if not self._done:
            self._done = True
            self._acks.acked.add(self._tag)
            await self._sub.acked(self._acks)

    async def nack(self) -> None:
        if not self._done:
            self._done = True
            self._acks.nacks.append(self._tag)
            await self._sub.nacked(self._acks)


class _Subscription:
    """Consumes the group queues of one subscription on a connection of its own.

    A supervisor task reconnects when the connection drops; deliveries of the lost channel are
    skipped (RabbitMQ already gave them back) and their late acks are ignored.
    """

    def __init__(self, adapter: RabbitMQAdapter, bindings: list[tuple[str, str]], prefetch: int):
        self._adapter = adapter
        self._bindings = bindings
        self._prefetch = prefetch
        self._batch = max(1, prefetch // 2)
        self._buffer: deque[tuple[_Acks, str, DeliveredMessage]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._connection: AbstractConnection | None = None
        self._acks: _Acks | None = None
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._in_hand = 0
        self._settled = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    async def open(self) -> None:
        await self._attach()
        self._task = asyncio.create_task(self._supervise(), name="choreo:rabbitmq-consumer")

    async def _attach(self) -> None:
        connection = await self._adapter.open_connection()
        try:
            channel = await connection.channel(publisher_confirms=False)
            await channel.basic_qos(prefetch_count=self._prefetch)
            for topic, queue in self._bindings:
                await self._adapter.declare_group(channel, topic, queue)
            acks = _Acks(channel)
            for topic, queue in self._bindings:
                await channel.basic_consume(queue, self._receiver(acks, topic))
        except BaseException:
            await _close_quietly(connection)
            raise
        self._connection, self._acks = connection, acks

    def _receiver(self, acks: _Acks, topic: str) -> Any:
        buffer, outstanding = self._buffer, acks.outstanding

        async def on_message(message: DeliveredMessage) -> None:
            outstanding.append(message.delivery_tag or 0)
            buffer.append((acks, topic, message))
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        return on_message

    async def _supervise(self) -> None:
        settings = self._adapter.settings
        while not self._closed:
            connection, acks = self._connection, self._acks
            if connection is None or acks is None:
                return
            await asyncio.wait(
                [connection.closing, acks.channel.closing], return_when=asyncio.FIRST_COMPLETED
            )
            if self.closed:
                return
            log.warning("RabbitMQ consumer connection lost; reconnecting to %s", self._adapter.url)
            await _close_quietly(connection)
            delay = settings.reconnect_delay
            while not self._closed:
                try:
                    await self._attach()
                    log.warning("RabbitMQ consumer reconnected to %s", self._adapter.url)
                    break
                except (BrokerUnavailableError, *RETRYABLE, aiormq.exceptions.AMQPError) as exc:
                    log.warning("RabbitMQ reconnect failed (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, settings.max_reconnect_delay)

    async def acked(self, acks: _Acks) -> None:
        self._release()
        if len(acks.acked) >= self._batch:
            await acks.flush()
        elif not acks.scheduled:
            acks.scheduled = True
            task = asyncio.get_running_loop().create_task(acks.flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    def _release(self) -> None:
        self._in_hand -= 1
        if self._in_hand <= 0:
            self._settled.set()

    async def nacked(self, acks: _Acks) -> None:
        self._release()
        await acks.flush()

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        buffer = self._buffer
        while True:
            if self._closed:
                raise StopAsyncIteration
            if buffer:
                acks, topic, message = buffer.popleft()
                if acks.channel.is_closed:
                    continue
                self._in_hand += 1
                self._settled.clear()
                return _RabbitDelivery(self, acks, topic, message)
            acks = self._acks  # type: ignore[assignment]
            if acks is not None and acks.pending:
                await acks.flush()
                continue
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def close(self) -> None:
        """Stop consuming; what is not acked (after a short grace) goes back to the queue."""
        if self._closed:
            return
        self._closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._in_hand > 0:  # let a handler that is finishing right now ack its event
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), self._adapter.settings.close_grace)
        if self._acks is not None:
            await self._acks.flush()
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        if self._connection is not None:
            await _close_quietly(self._connection)
        self._adapter.forget(self)


async def _close_quietly(connection: AbstractConnection) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(connection.close(), 5)


def _is_cancelled_by_caller() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class RabbitMQAdapter:
    """The RabbitMQ backend (``amqp://`` or ``amqps://``)."""

    def __init__(self, url: str = "amqp://guest:guest@127.0.0.1:5672/", **options: str) -> None:
        self.settings, client = RabbitMQSettings.split(options)
        parts = urlsplit(url)
        query = {k: v for k, v in parse_qsl(parts.query) if k in client}
        query.update(client)
        self._client_url = urlunsplit(parts._replace(query=urlencode(query)))
        self._url = mask_url(url)
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self._topology = asyncio.Lock()
        self._exchanges: set[str] = set()
        self._recorded: set[tuple[str, str]] = set()
        self._subscriptions: set[_Subscription] = set()
        self._closed = False

    @property
    def url(self) -> str:
        return self._url

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            native_ttl=True,
            native_dlq=self.settings.expired_to_dlq,
            ordered_keys=False,
            replay=False,
            selective_delete=True,
            delivery_count=self.settings.queue_type == "quorum",
        )

    # -- connections -----------------------------------------------------------------------

    async def open_connection(self) -> AbstractConnection:
        """A new AMQP connection, or BrokerUnavailableError naming the URL."""
        try:
            connection: AbstractConnection = await asyncio.wait_for(
                aiormq.connect(self._client_url), self.settings.connect_timeout
            )
        except (OSError, aiormq.exceptions.AMQPError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise BrokerUnavailableError(
                f"cannot connect to RabbitMQ at {self._url}: {reason}; check that the server "
                "runs and that the user, password and vhost in the URL are right"
            ) from exc
        return connection

    async def _publish_channel(self) -> AbstractChannel:
        channel = self._channel
        if channel is not None and not channel.is_closed:
            return channel
        async with self._lock:
            channel = self._channel
            if channel is not None and not channel.is_closed:
                return channel
            connection = self._connection
            if connection is None or connection.is_closed:
                connection = self._connection = await self.open_connection()
            self._channel = channel = await connection.channel(publisher_confirms=True)
            return channel

    @contextlib.asynccontextmanager
    async def _admin(self) -> AsyncIterator[AbstractChannel]:
        """A short-lived channel for inspection (a failed passive declare closes it)."""
        self._check_open()
        await self._publish_channel()
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()

    async def connect(self) -> None:
        self._closed = False
        channel = await self._publish_channel()
        await channel.queue_declare(REGISTRY_QUEUE, durable=True)

    async def close(self) -> None:
        for sub in list(self._subscriptions):
            await sub.close()
        self._closed = True
        async with self._lock:
            if self._connection is not None:
                await _close_quietly(self._connection)
            self._connection = self._channel = None

    def forget(self, sub: _Subscription) -> None:
        self._subscriptions.discard(sub)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the adapter for {self._url} is closed")

    # -- publishing ------------------------------------------------------------------------

    async def publish(self, topic: str, event: Event, *, ttl: float | None = None) -> None:
        self._check_open()
        body, props = encode_event(event, ttl)
        await self._send(topic, topic, body, props, f"event {event.id} to {topic}")

    async def _send(
        self, exchange: str, routing_key: str, body: bytes, props: spec.Basic.Properties, what: str
    ) -> None:
        """Publish and wait for the confirm, reconnecting until ``publish_timeout``."""
        settings = self.settings
        deadline = time.monotonic() + settings.publish_timeout
        delay = settings.reconnect_delay
        while True:
            try:
                channel = await self._publish_channel()
                if exchange and exchange not in self._exchanges:
                    await self._ensure_topic(channel, exchange)
                confirm = await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=props,
                    timeout=max(0.1, deadline - time.monotonic()),
                )
            except (aiormq.exceptions.ChannelAccessRefused, aiormq.exceptions.DeliveryError) as exc:
                raise PublishError(f"RabbitMQ at {self._url} refused {what}: {exc}") from exc
            except TimeoutError as exc:
                raise PublishTimeoutError(
                    f"RabbitMQ at {self._url} did not confirm {what} within "
                    f"{settings.publish_timeout:g}s; raise publish_timeout or check the broker"
                ) from exc
            except (asyncio.CancelledError, BrokerUnavailableError, *RETRYABLE) as exc:
                if isinstance(exc, asyncio.CancelledError) and _is_cancelled_by_caller():
                    raise
                if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
                    self._exchanges.discard(exchange)
                if time.monotonic() + delay > deadline:
                    raise PublishTimeoutError(
                        f"RabbitMQ at {self._url} did not confirm {what} within "
                        f"{settings.publish_timeout:g}s ({exc or type(exc).__name__}); check "
                        "the broker or raise publish_timeout"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, settings.max_reconnect_delay)
                continue
            if isinstance(confirm, spec.Basic.Nack):
                raise PublishError(f"RabbitMQ at {self._url} rejected {what} (basic.nack)")
            return

    # -- topology --------------------------------------------------------------------------

    async def _ensure_topic(self, channel: AbstractChannel, topic: str) -> None:
        async with self._topology:
            if topic in self._exchanges:
                return
            await channel.exchange_declare(exchange=topic, exchange_type="topic", durable=True)
            if topic.endswith(DLQ_SUFFIX):
                await self._declare_store(channel, topic)
            self._exchanges.add(topic)
        await self._record(topic, "")

    async def _declare_store(self, channel: AbstractChannel, topic: str) -> None:
        await channel.exchange_declare(exchange=topic, exchange_type="topic", durable=True)
        await channel.queue_declare(topic, durable=True)
        await channel.queue_bind(topic, topic, routing_key="#")

    async def declare_group(self, channel: AbstractChannel, topic: str, queue: str) -> None:
        """Declare the topic exchange and the group's durable queue bound to it."""
        await channel.exchange_declare(exchange=topic, exchange_type="topic", durable=True)
        arguments: dict[str, Any] = {}
        if self.settings.expired_to_dlq:
            await self._declare_store(channel, topic + DLQ_SUFFIX)
            arguments["x-dead-letter-exchange"] = topic + DLQ_SUFFIX
        if self.settings.queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
        try:
            await channel.queue_declare(queue, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise ConfigurationError(
                f"RabbitMQ queue {queue!r} at {self._url} exists with other arguments ({exc}); "
                "delete it, or set expired_to_dlq/queue_type as when it was created"
            ) from exc
        await channel.queue_bind(queue, topic, routing_key="#")

    async def _record(self, topic: str, group: str) -> None:
        """Note a topic (and group) in the registry queue, once per adapter."""
        if (topic, group) in self._recorded:
            return
        self._recorded.add((topic, group))
        body = json.dumps({"topic": topic, "group": group}).encode()
        props = spec.Basic.Properties(delivery_mode=2, content_type="application/json")
        await self._send("", REGISTRY_QUEUE, body, props, f"the registry entry of {topic}")

    async def create_topic(self, topic: str, *, partitions: int | None = None) -> None:
        self._check_open()
        await self._ensure_topic(await self._publish_channel(), topic)

    # -- subscribing -----------------------------------------------------------------------

    async def subscribe(
        self,
        topics: Sequence[str],
        group: str,
        *,
        from_beginning: bool = False,
        prefetch: int = 100,
    ) -> _Subscription:
        self._check_open()
        if from_beginning:
            raise ConfigurationError(
                f"{self._url} cannot replay history (classic queues keep no log), so "
                "from_beginning is not available on RabbitMQ"
            )
        if group == DLQ_SUFFIX[1:]:
            raise ConfigurationError("the group name 'dlq' is reserved on RabbitMQ: pick another")
        sub = _Subscription(self, [(t, f"{t}.{group}") for t in topics], max(1, prefetch))
        await sub.open()
        self._subscriptions.add(sub)
        for topic in topics:
            await self._record(topic, group)
        return sub

    # -- inspection ------------------------------------------------------------------------

    async def _take(
        self, channel: AbstractChannel, queue: str, limit: int
    ) -> list[DeliveredMessage] | None:
        """Up to ``limit`` messages of ``queue``, unacked (None if the queue does not exist)."""
        try:
            ok = await channel.queue_declare(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        taken: list[DeliveredMessage] = []
        for _ in range(min(ok.message_count or 0, limit)):
            message = await channel.basic_get(queue, no_ack=False)
            if not isinstance(message.delivery, spec.Basic.GetOk):
                break
            taken.append(message)
        return taken

    async def browse(self, topic: str, *, limit: int = 100) -> list[Event]:
        async with self._admin() as channel:
            taken = await self._take(channel, topic, limit)
            if not taken:
                return []
            await channel.basic_nack(taken[-1].delivery_tag or 0, multiple=True, requeue=True)
        events = []
        for message in taken:
            event, _, _ = decode_message(message)
            if event is not None:
                events.append(event)
        return events

    async def purge(self, topic: str, ids: Collection[str] | None = None) -> int:
        async with self._admin() as channel:
            if ids is None:
                try:
                    ok = await channel.queue_purge(topic)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    return 0
                return ok.message_count or 0
            taken = await self._take(channel, topic, 10_000_000) or []
            wanted, kept, deleted = set(ids), 0, 0
            for message in taken:
                if _message_id(message) in wanted:
                    await channel.basic_ack(message.delivery_tag or 0)
                    deleted += 1
                else:
                    kept = message.delivery_tag or 0
            if kept:
                await channel.basic_nack(kept, multiple=True, requeue=True)
        return deleted

    async def list_topics(self) -> list[TopicInfo]:
        groups: dict[str, set[str]] = {}
        async with self._admin() as channel:
            taken = await self._take(channel, REGISTRY_QUEUE, 10_000_000) or []
            seen: set[tuple[str, str]] = set()
            kept = 0
            for message in taken:
                try:
                    record = json.loads(message.body)
                    key = (str(record["topic"]), str(record.get("group") or ""))
                except (ValueError, KeyError, TypeError):
                    key = ("", "")
                if key in seen or not key[0]:  # compact: drop duplicates and junk
                    await channel.basic_ack(message.delivery_tag or 0)
                    continue
                seen.add(key)
                kept = message.delivery_tag or 0
                names = groups.setdefault(key[0], set())
                if key[1]:
                    names.add(key[1])
            if kept:
                await channel.basic_nack(kept, multiple=True, requeue=True)
        return [
            TopicInfo(
                name,
                messages=await self._stored(name) if name.endswith(DLQ_SUFFIX) else None,
                groups=tuple(sorted(names)),
            )
            for name, names in sorted(groups.items())
        ]

    async def _stored(self, topic: str) -> int | None:
        async with self._admin() as channel:
            try:
                ok = await channel.queue_declare(topic, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return None
            return ok.message_count


def _message_id(message: DeliveredMessage) -> str | None:
    props = message.header.properties
    headers = props.headers or {}
    for prefix in READ_PREFIXES:
        value = headers.get(prefix + "id")
        if value is not None:
            return _text(value)
    return props.message_id
