"""``amqp://user:pass@host:5672/vhost``: RabbitMQ (AMQP 0-9-1) through aiormq (aio-pika's core).

Names on the broker (DESIGN.md): a topic is a durable **topic exchange** named after it; events
are published with the topic name as routing key; each group owns a durable **queue**
``<topic>.<group>`` bound to the exchange with ``#``. Publishes are persistent
(``delivery_mode=2``) and wait for the publisher confirm; deliveries are acked manually after
the handler, with QoS ``prefetch``; while deliveries queue up, acks go out batched (``multiple``).

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
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from pamqp import commands as spec

from broker.adapters.rabbitmq_consumer import Subscription, close_quietly
from broker.adapters.rabbitmq_wire import RETRYABLE, decode_message, encode_event, message_id
from broker.envelope import Event
from broker.errors import (
    BrokerUnavailableError,
    ClosedError,
    ConfigurationError,
    PublishError,
    PublishTimeoutError,
)
from broker.ports import Capabilities, TopicInfo
from broker.urls import mask_url

__all__ = ["RabbitMQAdapter", "RabbitMQSettings"]

REGISTRY_QUEUE = "choreo.topics"
DLQ_SUFFIX = ".dlq"
_TRUE = ("1", "true", "yes", "on")
#: Channel errors that retrying cannot fix: refused at once as PublishError.
REFUSED = (
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelPreconditionFailed,
    aiormq.exceptions.DeliveryError,
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
        self._subscriptions: set[Subscription] = set()
        self._closed = False
        self._sending = 0
        self._drained = asyncio.Event()
        self._drained.set()

    @property
    def url(self) -> str:
        return self._url

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            native_ttl=True,
            native_dlq=False,  # only broker-expired events are dead-lettered by RabbitMQ
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
        """Close subscriptions, wait for publishes in flight to be confirmed, disconnect."""
        for sub in list(self._subscriptions):
            await sub.close()
        self._closed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), self.settings.publish_timeout)
        async with self._lock:
            if self._connection is not None:
                await close_quietly(self._connection)
            self._connection = self._channel = None

    def forget(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the adapter for {self._url} is closed")

    # -- publishing ------------------------------------------------------------------------

    async def publish(self, topic: str, event: Event, *, ttl: float | None = None) -> None:
        self._check_open()
        body, props = encode_event(event, ttl)
        self._sending += 1
        self._drained.clear()
        try:
            await self._send(topic, topic, body, props, f"event {event.id} to {topic}")
        finally:
            self._sending -= 1
            if not self._sending:
                self._drained.set()

    async def _send(
        self, exchange: str, routing_key: str, body: bytes, props: spec.Basic.Properties, what: str
    ) -> None:
        """Publish and wait for the confirm, reconnecting until ``publish_timeout``."""
        deadline = time.monotonic() + self.settings.publish_timeout
        delay = self.settings.reconnect_delay
        while True:
            try:
                channel = self._channel
                if channel is None or channel.is_closed:
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
            except REFUSED as exc:
                raise PublishError(f"RabbitMQ at {self._url} refused {what}: {exc}") from exc
            except TimeoutError as exc:
                raise self._timed_out(what, exc) from exc
            except (asyncio.CancelledError, BrokerUnavailableError, *RETRYABLE) as exc:
                self._check_retry(exc, exchange, what, time.monotonic() + delay > deadline)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.max_reconnect_delay)
                continue
            except aiormq.exceptions.AMQPError as exc:  # protocol-level surprises
                raise PublishError(f"RabbitMQ at {self._url} failed {what}: {exc!r}") from exc
            if isinstance(confirm, spec.Basic.Nack):
                raise PublishError(f"RabbitMQ at {self._url} rejected {what} (basic.nack)")
            return

    def _check_retry(self, exc: BaseException, exchange: str, what: str, late: bool) -> None:
        """Raise unless a failed publish should be tried again after a pause."""
        if isinstance(exc, asyncio.CancelledError) and _is_cancelled_by_caller():
            raise exc
        if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
            self._exchanges.discard(exchange)  # deleted behind our back: declare it again
        if self._closed and self._connection is None:
            raise ClosedError(f"the adapter for {self._url} closed during {what}") from exc
        if late:
            raise self._timed_out(what, exc) from exc

    def _timed_out(self, what: str, exc: BaseException) -> PublishTimeoutError:
        return PublishTimeoutError(
            f"RabbitMQ at {self._url} did not confirm {what} within "
            f"{self.settings.publish_timeout:g}s ({str(exc) or type(exc).__name__}); check the "
            "broker or raise publish_timeout"
        )

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
    ) -> Subscription:
        self._check_open()
        if from_beginning:
            raise ConfigurationError(
                f"{self._url} cannot replay history (classic queues keep no log), so "
                "from_beginning is not available on RabbitMQ"
            )
        if group == DLQ_SUFFIX[1:]:
            raise ConfigurationError("the group name 'dlq' is reserved on RabbitMQ: pick another")
        sub = Subscription(self, [(t, f"{t}.{group}") for t in topics], max(1, prefetch))
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
                if message_id(message) in wanted:
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
