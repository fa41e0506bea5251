"""The RabbitMQ adapter: a publishing connection with confirms, topology, and inspection of
dead-letter stores and the topic registry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from pamqp import commands as spec

from broker import deadletter
from broker.adapters.kit import Backoff, BaseAdapter, confirm_timeout, keep_trying
from broker.adapters.rabbitmq.consumer import Subscription, close_quietly
from broker.adapters.rabbitmq.delay import wait_arguments, wait_ms, wait_queue
from broker.adapters.rabbitmq.errors import CONNECT_ERRORS, REFUSED, RETRYABLE, translate_error
from broker.adapters.rabbitmq.settings import split_options
from broker.adapters.rabbitmq.wire import decode_message, encode_event, message_id
from broker.delay import held_until
from broker.envelope import Event
from broker.errors import (
    BrokerError,
    BrokerUnavailableError,
    ClosedError,
    ConfigurationError,
    PublishError,
    PublishTimeoutError,
)
from broker.ports import Capabilities, Chooser, TopicInfo
from broker.reply import is_reply_topic

__all__ = ["REGISTRY_QUEUE", "RabbitMQAdapter"]

REGISTRY_QUEUE = "choreo.topics"
#: Seconds after which a wait queue is declared again before a publish to it.
_REDECLARE = 60.0


class RabbitMQAdapter(BaseAdapter):
    """The RabbitMQ backend (``amqp://`` or ``amqps://``)."""

    def __init__(self, url: str = "amqp://guest:guest@127.0.0.1:5672/", **options: Any) -> None:
        super().__init__(url)
        self.settings, self._client_url = split_options(url, options)
        self.backoff = Backoff(self.settings.reconnect_delay, self.settings.max_reconnect_delay)
        self._url = self.url
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self._topology = asyncio.Lock()
        self._exchanges: set[str] = set()
        self._waits: dict[str, float] = {}  # wait queue -> when it was last declared
        self._recorded: set[tuple[str, str]] = set()
        self._subscriptions: set[Subscription] = set()
        self._closed = False
        self._sending = 0
        self._drained = asyncio.Event()
        self._drained.set()

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
            raise translate_error(exc, self._url, "connecting", CONNECT_ERRORS) from exc
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
        due = held_until(event)
        left = 0.0 if due is None else due - time.time()
        # A delayed event waits without its AMQP expiration (the core checks the TTL when it
        # is delivered): a message expired in a wait queue would reach the groups early.
        body, props = encode_event(event, None if left > 0 else ttl)
        self._sending += 1
        self._drained.clear()
        what = f"event {event.id} to {topic}"
        try:
            if left > 0:
                queue = await self._wait_queue(topic, wait_ms(left, topic))
                await self._send("", queue, body, props, what)
            else:
                await self._send(topic, topic, body, props, what)
        finally:
            self._sending -= 1
            if not self._sending:
                self._drained.set()

    async def publish_many(
        self, topic: str, events: Sequence[Event], *, ttl: float | None = None
    ) -> list[Exception | None]:
        """Every publish in flight at once on the confirm channel (frames go out in order),
        each awaiting its own confirm and retried on its own."""
        self._check_open()
        results = await asyncio.gather(
            *(self.publish(topic, event, ttl=ttl) for event in events), return_exceptions=True
        )
        outcomes: list[Exception | None] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # a cancellation is not an outcome
            outcomes.append(result)
        return outcomes

    async def _send(
        self, exchange: str, routing_key: str, body: bytes, props: spec.Basic.Properties, what: str
    ) -> None:
        """Publish and wait for the confirm, reconnecting until ``publish_timeout``."""

        async def attempt(left: float) -> None:
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
                timeout=max(0.1, left),
            )
            if isinstance(confirm, spec.Basic.Nack):
                raise PublishError(f"RabbitMQ at {self._url} rejected {what} (basic.nack)")

        try:
            await keep_trying(
                attempt,
                timeout=self.settings.publish_timeout,
                retriable=lambda exc: self._retriable(exc, exchange, what),
                timed_out=lambda exc: self._timed_out(what, exc),
                backoff=self.backoff,
            )
        except BrokerError:
            raise
        except TimeoutError as exc:
            raise self._timed_out(what, exc) from exc
        except aiormq.exceptions.AMQPError as exc:  # refused, or protocol-level surprises
            raise translate_error(exc, self._url, what) from exc

    def _retriable(self, exc: BaseException, exchange: str, what: str) -> bool:
        """Whether a failed publish should be tried again after a pause."""
        if isinstance(exc, (*REFUSED, TimeoutError)):
            return False
        if not isinstance(exc, (asyncio.CancelledError, BrokerUnavailableError, *RETRYABLE)):
            return False  # (keep_trying never retries the caller's own cancellation)
        if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
            self._exchanges.discard(exchange)  # deleted behind our back: declare it again
        if self._closed and self._connection is None:
            raise ClosedError(f"the adapter for {self._url} closed during {what}") from exc
        return True

    def _timed_out(self, what: str, exc: BaseException) -> PublishTimeoutError:
        return confirm_timeout("RabbitMQ", self._url, what, self.settings.publish_timeout, exc)

    # -- topology --------------------------------------------------------------------------

    async def _ensure_topic(self, channel: AbstractChannel, topic: str) -> None:
        async with self._topology:
            if topic in self._exchanges:
                return
            await channel.exchange_declare(exchange=topic, exchange_type="topic", durable=True)
            if deadletter.is_dead_letter_topic(topic):
                await self._declare_store(channel, topic)
            self._exchanges.add(topic)
        await self._record(topic, "")

    async def _wait_queue(self, topic: str, ms: int) -> str:
        """The wait queue for ``topic`` and ``ms``, declared (again once a minute, so that it
        outlives every message published to it)."""
        queue = wait_queue(topic, ms)
        declared = self._waits.get(queue)
        if declared is not None and time.monotonic() - declared < _REDECLARE:
            return queue

        async def declare(left: float) -> None:
            channel = await self._publish_channel()
            if topic not in self._exchanges:
                await self._ensure_topic(channel, topic)
            await channel.queue_declare(
                queue, durable=True, arguments=wait_arguments(topic, ms), timeout=max(0.1, left)
            )

        what = f"the wait queue {queue}"
        try:
            await keep_trying(
                declare,
                timeout=self.settings.publish_timeout,
                retriable=lambda exc: self._retriable(exc, topic, what),
                timed_out=lambda exc: self._timed_out(what, exc),
                backoff=self.backoff,
            )
        except aiormq.exceptions.AMQPError as exc:
            raise translate_error(exc, self._url, what) from exc
        self._waits[queue] = time.monotonic()
        return queue

    async def _declare_store(self, channel: AbstractChannel, topic: str) -> None:
        await channel.exchange_declare(exchange=topic, exchange_type="topic", durable=True)
        await channel.queue_declare(topic, durable=True)
        await channel.queue_bind(topic, topic, routing_key="#")

    async def declare_group(self, channel: AbstractChannel, topic: str, queue: str) -> None:
        """Declare the topic exchange and the group's durable queue bound to it."""
        await channel.exchange_declare(exchange=topic, exchange_type="topic", durable=True)
        arguments: dict[str, Any] = {}
        reply = is_reply_topic(topic)
        if reply:  # replies expire with nothing: no dead-letter store, gone with the requester
            arguments["x-expires"] = max(1, int(self.settings.reply_queue_expiry * 1000))
        elif self.settings.expired_to_dlq:
            store = deadletter.dead_letter_topic(topic)
            await self._declare_store(channel, store)
            arguments["x-dead-letter-exchange"] = store
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

    async def open_subscription(
        self, topics: tuple[str, ...], group: str, from_beginning: bool, prefetch: int
    ) -> Subscription:
        self._check_open()
        if from_beginning:
            raise ConfigurationError(
                f"{self._url} cannot replay history (classic queues keep no log), so "
                "from_beginning is not available on RabbitMQ"
            )
        bindings = [(t, f"{t}.{group}") for t in topics]
        for topic, queue in bindings:
            if deadletter.is_dead_letter_topic(queue) and deadletter.origin_of(queue) == topic:
                raise ConfigurationError(
                    f"the group name {group!r} is reserved on RabbitMQ (its queue {queue} is "
                    "the dead-letter store of the topic): pick another"
                )
        sub = Subscription(self, bindings, prefetch)
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

    async def purge(
        self, topic: str, ids: Collection[str] | None = None, *, among: int | None = None
    ) -> int:
        async with self._admin() as channel:
            if ids is None and among is None:
                try:
                    ok = await channel.queue_purge(topic)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    return 0
                return ok.message_count or 0
            taken = await self._take(channel, topic, among or 10_000_000) or []
            return await _settle(channel, taken, None if ids is None else set(ids))

    async def purge_chosen(self, topic: str, choose: Chooser) -> int:
        """Take the queue's messages once, delete (ack) those ``choose`` picks and give the
        others back; all of them back when ``choose`` raises."""
        async with self._admin() as channel:
            taken = await self._take(channel, topic, 10_000_000) or []
            try:
                decoded = [decode_message(message)[0] for message in taken]
                wanted = set(choose([event for event in decoded if event is not None]))
            except BaseException:
                if taken:
                    await channel.basic_nack(
                        taken[-1].delivery_tag or 0, multiple=True, requeue=True
                    )
                raise
            return await _settle(channel, taken, wanted)

    async def delete_topic(self, topic: str) -> None:
        """Delete the exchange of ``topic``, the queues of the groups this adapter
        subscribed to it, and its entries in the topic registry."""
        groups = [group for name, group in self._recorded if name == topic and group]
        async with self._admin() as channel:
            for group in groups:
                await channel.queue_delete(f"{topic}.{group}")
            await channel.exchange_delete(topic)
            taken = await self._take(channel, REGISTRY_QUEUE, 10_000_000) or []
            kept = 0
            for message in taken:
                if _registered_topic(message) == topic:
                    await channel.basic_ack(message.delivery_tag or 0)
                else:
                    kept = message.delivery_tag or 0
            if kept:
                await channel.basic_nack(kept, multiple=True, requeue=True)
        self._exchanges.discard(topic)
        self._recorded = {entry for entry in self._recorded if entry[0] != topic}

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
                messages=await self._stored(name)
                if deadletter.is_dead_letter_topic(name)
                else None,
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


def _registered_topic(message: DeliveredMessage) -> str:
    """The topic a registry entry names ("" for junk)."""
    try:
        return str(json.loads(message.body)["topic"])
    except (ValueError, KeyError, TypeError):
        return ""


async def _settle(
    channel: AbstractChannel, taken: Sequence[DeliveredMessage], wanted: set[str] | None
) -> int:
    """Ack (delete) the ``taken`` messages whose id is ``wanted`` (all when None) and give
    the others back to their queue; how many were deleted."""
    kept, deleted = 0, 0
    for message in taken:
        if wanted is None or message_id(message) in wanted:
            await channel.basic_ack(message.delivery_tag or 0)
            deleted += 1
        else:
            kept = message.delivery_tag or 0
    if kept:
        await channel.basic_nack(kept, multiple=True, requeue=True)
    return deleted
