"""Consuming from RabbitMQ: one connection per subscription, coalesced acks, reconnection.

Deliveries are buffered as aiormq hands them over and decoded only when the consumer takes
them. An ack goes out at once when no other delivery is waiting; while deliveries are queued,
acks are batched (up to ``prefetch/2`` of them or 50 ms) and sent as one
``basic.ack multiple=True`` for the contiguous prefix plus single acks for the rest; pending
nacks always go out first, so a ``multiple`` ack never covers a tag that was given back.
A supervisor task reconnects when the connection or channel drops; deliveries of the lost
channel are skipped (RabbitMQ has already given them back) and their late acks are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from aiormq.exceptions import AMQPError

from broker import observability as obs
from broker.adapters.kit import BaseSubscription, keep_trying
from broker.adapters.rabbitmq.errors import RETRYABLE
from broker.adapters.rabbitmq.wire import MESSAGE_HEADER, decode_message
from broker.errors import BrokerUnavailableError, ConfigurationError
from broker.ports import Backlog, Delivery

if TYPE_CHECKING:
    from broker.adapters.rabbitmq.adapter import RabbitMQAdapter

__all__ = ["Subscription", "close_quietly"]

#: Errors after which a lost consumer connection is opened again after a pause.
_RECONNECTABLE = (ConfigurationError, BrokerUnavailableError, *RETRYABLE, AMQPError)
#: The longest an ack waits to be batched with others while deliveries are queued.
ACK_DELAY = 0.05


class _Acks:
    """Acks of one channel, coalesced: a contiguous prefix goes out as one ``multiple`` ack."""

    __slots__ = ("acked", "channel", "lock", "nacks", "outstanding", "received", "since")

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self.outstanding: deque[int] = deque()
        self.acked: set[int] = set()
        self.nacks: list[int] = []
        self.lock = asyncio.Lock()
        self.since = 0.0  # when the oldest unsent ack was recorded
        self.received = 0  # the last delivery tag received (tags count up from 1)

    @property
    def pending(self) -> bool:
        return bool(self.acked or self.nacks)

    def unacked_from(self) -> int:
        """The first delivery tag the consumer has not acked (one past the last received when
        every delivery so far is acked)."""
        acked = self.acked
        return next((tag for tag in self.outstanding if tag not in acked), self.received + 1)

    def ack(self, tag: int) -> None:
        if not self.acked:
            self.since = time.monotonic()
        self.acked.add(tag)

    async def flush(self) -> None:
        async with self.lock:
            if not self.pending:
                return
            try:
                await self._send()
            except (*RETRYABLE, AMQPError):
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


class _Reports:
    """The backlog reports of one subscription. A queue has no positions, so reports count:
    ``appended[queue]`` is the number of this report, ``acked[queue]`` the number of the latest
    one at which no message was ready in the queue (all published before were delivered, to
    some member) and every delivery this member had received by then is acked since.

    A nack, or a lost channel, voids the reports not confirmed yet (what was delivered before
    them may be delivered again). Deliveries that other members of the group hold unacked
    are invisible over AMQP (only the management API counts them).
    """

    __slots__ = ("_confirmed", "_count", "_drained")

    def __init__(self, queues: list[str]) -> None:
        self._count = 0
        self._confirmed = dict.fromkeys(queues, 0)
        #: per queue: (report, channel acks, first tag received after it), for reports at
        #: which the queue had nothing ready, oldest first
        self._drained: dict[str, deque[tuple[int, _Acks, int]]] = {
            queue: deque(maxlen=64) for queue in queues
        }

    def report(self, acks: _Acks, waiting: dict[str, tuple[int, int]]) -> Backlog:
        """The next report, from each queue's (ready messages, first tag after them)."""
        self._count += 1
        unacked = acks.unacked_from()
        for queue, (ready, after) in waiting.items():
            drained = self._drained[queue]
            if not ready:
                drained.append((self._count, acks, after))
            while drained and (drained[0][1] is not acks or unacked >= drained[0][2]):
                report, owner, _ = drained.popleft()
                if owner is acks:
                    self._confirmed[queue] = report
        return Backlog(dict.fromkeys(waiting, self._count), dict(self._confirmed))

    def given_back(self) -> None:
        for drained in self._drained.values():
            drained.clear()


class _RabbitDelivery(Delivery):
    __slots__ = ("_acks", "_done", "_sub", "_tag")

    def __init__(self, sub: Subscription, acks: _Acks, topic: str, message: DeliveredMessage):
        event, headers, error = decode_message(message)
        count = headers.get("x-delivery-count")
        redelivered = int(count) if count and count.isdigit() else int(bool(message.redelivered))
        super().__init__(
            topic,
            event,
            body=message.body,
            headers=headers,
            position=headers.get(MESSAGE_HEADER),
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
            self._acks.ack(self._tag)
            await self._sub.acked(self._acks)

    def ack_later(self) -> _Acks | None:
        """Record the ack without sending it; the channel's acks to flush (None: settled)."""
        if self._done:
            return None
        self._done = True
        self._acks.ack(self._tag)
        self._sub.release()
        return self._acks

    async def nack(self) -> None:
        if not self._done:
            self._done = True
            self._acks.nacks.append(self._tag)
            await self._sub.nacked(self._acks)


class Subscription(BaseSubscription):
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
        self._in_hand = 0
        self._settled = asyncio.Event()
        self._reports = _Reports([queue for _, queue in bindings])
        self._log = obs.get_logger("choreo.rabbitmq", url=adapter.url)

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
            await close_quietly(connection)
            raise
        self._connection, self._acks = connection, acks

    def _receiver(self, acks: _Acks, topic: str) -> Any:
        buffer, outstanding = self._buffer, acks.outstanding

        async def on_message(message: DeliveredMessage) -> None:
            acks.received = message.delivery_tag or 0
            outstanding.append(acks.received)
            buffer.append((acks, topic, message))
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        return on_message

    async def _supervise(self) -> None:
        while not self._closed:
            connection, acks = self._connection, self._acks
            if connection is None or acks is None:
                return
            watchers = [connection.closing, acks.channel.closing]
            try:
                await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for watcher in watchers:
                    watcher.cancel()
            if self.closed:
                return
            self._log.warning("rabbitmq consumer connection lost; reconnecting")
            await close_quietly(connection)
            await keep_trying(
                lambda _: self._attach(),
                timeout=None,
                retriable=lambda exc: isinstance(exc, _RECONNECTABLE),
                backoff=self._adapter.backoff,
                before_retry=self._reconnect_failed,
            )
            self._log.warning("rabbitmq consumer reconnected")

    def _reconnect_failed(self, exc: BaseException, pause: float) -> None:
        self._log.warning("rabbitmq reconnect failed", error=str(exc), retry_in=pause)

    async def acked(self, acks: _Acks) -> None:
        """Send acks now unless more deliveries wait or are being handled (then batch: up to
        prefetch/2 of them, or 50 ms)."""
        self.release()
        if (
            (not self._buffer and self._in_hand <= 0)
            or len(acks.acked) >= self._batch
            or time.monotonic() - acks.since >= ACK_DELAY
        ):
            await acks.flush()

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Record every ack, then send them together (one ``multiple`` ack where they are
        contiguous)."""
        channels: dict[int, _Acks] = {}
        for delivery in deliveries:
            if not isinstance(delivery, _RabbitDelivery):
                await delivery.ack()
                continue
            acks = delivery.ack_later()
            if acks is not None:
                channels[id(acks)] = acks
        for acks in channels.values():
            await acks.flush()

    def release(self) -> None:
        """One delivery handed out is settled."""
        self._in_hand -= 1
        if self._in_hand <= 0:
            self._settled.set()

    async def nacked(self, acks: _Acks) -> None:
        self.release()
        self._reports.given_back()
        await acks.flush()

    async def backlog(self) -> Backlog:
        """Where the group stands (see :class:`_Reports`): one entry per group queue."""
        acks = self._acks
        if acks is None or acks.channel.is_closed:
            raise BrokerUnavailableError(
                f"the consumer connection to {self._adapter.url} is down; reconnecting"
            )
        waiting: dict[str, tuple[int, int]] = {}
        for _, queue in self._bindings:
            try:  # on the consuming channel: deliveries sent before the answer precede it
                ok = await acks.channel.queue_declare(queue, passive=True)
            except (*RETRYABLE, AMQPError) as exc:
                raise BrokerUnavailableError(
                    f"RabbitMQ at {self._adapter.url} did not report queue {queue!r}: {exc}"
                ) from exc
            waiting[queue] = (ok.message_count or 0, acks.received + 1)
        return self._reports.report(acks, waiting)

    def poll(self) -> Delivery | None:
        buffer = self._buffer
        while buffer and not self._closed:
            acks, topic, message = buffer.popleft()
            if acks.channel.is_closed:
                continue  # RabbitMQ gave the deliveries of a lost channel back already
            self._in_hand += 1
            self._settled.clear()
            return _RabbitDelivery(self, acks, topic, message)
        return None

    async def wait_ready(self, timeout: float | None) -> None:
        """Send the acks held back for batching first: the broker's prefetch waits on them."""
        acks = self._acks
        if acks is not None and acks.pending:
            await acks.flush()
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._waiter, timeout)
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
        if self._connection is not None:
            await close_quietly(self._connection)
        self._adapter.forget(self)


async def close_quietly(connection: AbstractConnection) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(connection.close(), 5)
