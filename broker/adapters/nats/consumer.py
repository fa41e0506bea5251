"""The consuming side of the NATS adapter: a continuous pull from durable consumers.

nats-py's ``fetch`` waits for a whole batch (or its timeout) before returning anything, which
costs latency at low rates. Instead each (subscription, topic) keeps pull requests
outstanding on its group's durable consumer - the JetStream pull protocol, as the Go client's
``Consume`` does - and hands messages out the moment they arrive:

* credit: fetched-but-unsettled messages plus requested ones never exceed ``prefetch``; when at
  least half the window is free a new request asks for the rest, so the server never idles;
* requests expire after ``EXPIRES`` seconds and carry an idle heartbeat; a ``408``/``409``
  status gives back its unused credit, and a request that neither delivers nor beats for two
  heartbeats (lost in a reconnect or a server restart) is written off and re-issued;
* ``ack`` and ``nack`` are fire-and-forget publishes to the message's reply subject (the
  client coalesces them on the socket), ``keep_alive`` sends ``+WPI``;
* ``close`` gives back (``-NAK``) everything fetched and not settled, so another member gets it
  at once instead of after ``ack_wait``.

For a batch subscription (:meth:`NatsSubscription.merge_partitions`) a batch is the earliest,
by event time, of what arrived from all the topics (each topic's order kept), not the first to
arrive, and no later than what every topic with messages still pending reached (its consumer's
pending count, in each message's reply subject): JetStream sends a backlog one topic's messages
ahead of another's, and merged this way the events that belong together arrive in the same
batch (:class:`broker.adapters.kit.Horizon`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSub
from nats.protocol.command import pub_cmd

from broker.adapters.kit import BaseSubscription, Horizon, event_time
from broker.adapters.nats.wire import decode
from broker.delay import DELIVER_AT, due_from_text
from broker.envelope import NATS_PREFIXES
from broker.errors import BrokerError, EnvelopeError
from broker.ports import Backlog, Delivery

if TYPE_CHECKING:
    from broker.adapters.nats.adapter import NatsAdapter

__all__ = ["NatsDelivery", "NatsSubscription"]

EXPIRES = 30.0
_ACK = b""
_NAK = b"-NAK"
_PROGRESS = b"+WPI"
_DELIVER_AT = NATS_PREFIXES[0] + DELIVER_AT
_EXPIRATION = NATS_PREFIXES[0] + "expiration"


def _delivered(reply: str) -> int:
    """The delivery count in a ``$JS.ACK`` reply subject (v1: 9 tokens, v2: 11 or 12)."""
    tokens = reply.split(".")
    try:
        return int(tokens[4] if len(tokens) == 9 else tokens[6])
    except (IndexError, ValueError):
        return 1


def _pending(reply: str) -> int:
    """The consumer's pending count in a ``$JS.ACK`` reply subject: how many messages it has
    not delivered yet after this one (0 when the subject has none)."""
    tokens = reply.split(".")
    index = 8 if len(tokens) == 9 else 10
    if len(tokens) <= index or not tokens[index].isdigit():
        return 0
    return int(tokens[index])


def _position(reply: str) -> str | None:
    """``<stream>/<stream sequence>`` from a ``$JS.ACK`` reply subject, if it has them."""
    tokens = reply.split(".")
    stream, sequence = (2, 5) if len(tokens) == 9 else (4, 7)
    if len(tokens) <= sequence or not tokens[sequence].isdigit():
        return None
    return f"{tokens[stream]}/{tokens[sequence]}"


class NatsDelivery(Delivery):
    """One JetStream message; settling it publishes to its reply subject."""

    __slots__ = ("pump", "reply")

    def __init__(self, pump: _Pump, msg: Msg) -> None:
        headers = msg.headers or {}
        body = msg.data
        try:
            event = decode(headers, body)
            error = None
        except EnvelopeError as exc:
            event, error = None, exc
        reply = msg.reply
        super().__init__(
            pump.topic,
            event,
            body=body,
            headers=headers,
            redelivered=_delivered(reply) - 1,
            decode_error=error,
            position=_position(reply),
        )
        self.pump = pump
        self.reply = reply

    async def ack(self) -> None:
        await self.pump.settle(self.reply, _ACK)

    async def nack(self) -> None:
        await self.pump.settle(self.reply, _NAK)

    async def keep_alive(self) -> None:
        if self.reply in self.pump.unsettled:
            with contextlib.suppress(nats.errors.Error):
                await self.pump.nc.publish(self.reply, _PROGRESS)


class _Pump:
    """Pull requests and credit for one topic of one subscription."""

    def __init__(self, sub: NatsSubscription, topic: str, stream: str, durable: str) -> None:
        self.sub = sub
        self.nc = sub.adapter.client
        self.topic = topic
        self.stream, self.durable = stream, durable
        self.next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.inbox = self.nc.new_inbox()
        self.requested = 0
        self.unsettled: set[str] = set()
        self.last_seen = time.monotonic()
        self.closing = False
        self.lost = False  # the consumer was deleted (or its stream); restored by the watchdog
        self.nsub: NatsSub | None = None

    async def start(self) -> None:
        self.nsub = await self.nc.subscribe(self.inbox, cb=self.on_msg, pending_msgs_limit=-1)

    async def on_msg(self, msg: Msg) -> None:
        self.last_seen = time.monotonic()
        reply = msg.reply
        if not reply:
            await self._on_status(msg.headers or {})
            return
        if self.requested > 0:
            self.requested -= 1
        if self.closing:
            with contextlib.suppress(nats.errors.Error):
                await self.nc.publish(reply, _NAK)
            return
        headers = msg.headers
        if headers and _DELIVER_AT in headers and await self._defer(reply, headers):
            return
        self.unsettled.add(reply)
        self.sub.push(self, msg)

    async def _defer(self, reply: str, headers: dict[str, str]) -> bool:
        """Whether the message is early, and then given back to JetStream to be delivered
        again at its time (``-NAK`` with a delay: nothing is held here)."""
        due = due_from_text(headers.get(_DELIVER_AT), headers.get(_EXPIRATION))
        left = 0.0 if due is None else due - time.time()
        if left <= 0:
            return False
        with contextlib.suppress(nats.errors.Error):
            await self.nc.publish(reply, b'-NAK {"delay": %d}' % math.ceil(left * 1e9))
        await self.refill()
        return True

    async def _on_status(self, headers: dict[str, str]) -> None:
        status = headers.get("Status")
        if status == "100" or status is None:
            return
        pending = headers.get("Nats-Pending-Messages")
        if pending is not None and pending.isdigit():
            self.requested = max(0, self.requested - int(pending))
        else:
            self.requested = 0
        if status == "409":
            self.sub.adapter_log("pull request ended", topic=self.topic, status=str(headers))
            if "Consumer Deleted" in str(headers):
                self.lost = True
                return
        await self.refill()

    async def settle(self, reply: str, verdict: bytes) -> None:
        if reply not in self.unsettled:
            return  # already settled, or given back when the subscription closed
        self.unsettled.discard(reply)
        with contextlib.suppress(nats.errors.Error):
            await self.nc.publish(reply, verdict)
        await self.settled()

    async def settled(self) -> None:
        """Ask for more once at least half the window is free."""
        window = self.sub.prefetch
        if window - len(self.unsettled) - self.requested >= self.sub.threshold:
            await self.refill()

    async def refill(self) -> None:
        """Ask for as many messages as the window has room for."""
        if self.closing or self.lost:
            return
        want = self.sub.prefetch - len(self.unsettled) - self.requested
        if want <= 0 or (want < self.sub.threshold and self.requested):
            return
        request = {
            "batch": want,
            "expires": int(EXPIRES * 1e9),
            "idle_heartbeat": int(self.sub.heartbeat * 1e9),
        }
        self.requested += want
        self.last_seen = time.monotonic()
        try:
            await self.nc.publish(self.next_subject, json.dumps(request).encode(), self.inbox)
        except nats.errors.Error:
            self.requested -= want  # the watchdog tries again

    async def check(self, now: float) -> None:
        """Write off requests that went silent (lost server-side), restore a deleted consumer,
        then top up."""
        if self.requested and now - self.last_seen > 2 * self.sub.heartbeat + 1:
            self.requested = 0
        if self.lost:
            try:
                stream, durable = await self.sub.adapter.restore(
                    self.topic, self.sub.group, self.sub.started, self.sub.prefetch
                )
            except BrokerError as exc:
                self.sub.adapter_log("cannot restore the group's consumer", error=str(exc))
                return
            self.stream, self.durable = stream, durable
            self.next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
            self.lost, self.requested = False, 0
        await self.refill()

    async def close(self) -> None:
        self.closing = True
        given_back, self.unsettled = self.unsettled, set()
        for reply in given_back:
            with contextlib.suppress(nats.errors.Error):
                await self.nc.publish(reply, _NAK)
        if self.nsub is None:
            return
        if not self.nc.is_connected:  # nothing can be drained; the server drops the requests
            with contextlib.suppress(nats.errors.Error):
                await self.nsub.unsubscribe()
            return
        await _at_most(5, self.nsub.drain())  # type: ignore[no-untyped-call]
        await _at_most(5, self.nc.flush(timeout=5))


async def _at_most(seconds: float, work: Awaitable[Any]) -> None:
    """Await nats-py ``work`` for ``seconds`` at most, ignoring its NATS errors. Not with
    ``asyncio.wait_for``: nats-py swallows a cancellation that lands in its ``_flush_pending``,
    and ``wait_for`` then waits for the cancelled work however long it goes on (a
    subscription's drain goes on to wait for its queue); here such work is left to end on its
    own."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        task.add_done_callback(_consume_outcome)
        return
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, nats.errors.Error | TimeoutError):
        raise error


def _consume_outcome(task: asyncio.Future[Any]) -> None:
    """Retrieve ``task``'s outcome so that asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _direct(nc: Any) -> bool:
    """Whether this nats-py has the internals ``Client.publish`` writes with."""
    return all(
        hasattr(nc, name) for name in ("_send_command", "_flush_pending", "_flush_queue")
    ) and isinstance(getattr(nc, "stats", None), dict)


def _time_of(delivery: NatsDelivery) -> float:
    return event_time(delivery.event)


class NatsSubscription(BaseSubscription):
    """The deliveries of one (topics, group) subscription, from one pump per topic."""

    def __init__(self, adapter: NatsAdapter, group: str, prefetch: int, heartbeat: float):
        self.adapter = adapter
        self.group = group
        self.prefetch = prefetch
        self.threshold = max(1, prefetch // 2)
        self.heartbeat = heartbeat
        self.started = datetime.now(UTC)
        self._pumps: list[_Pump] = []
        #: Arrived messages, not handed out yet.
        self._ready: deque[tuple[_Pump, Msg | NatsDelivery]] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._watchdog: asyncio.Task[None] | None = None
        #: Set by :meth:`merge_partitions`: decoded messages wait here, by topic.
        self._horizon: Horizon[_Pump, NatsDelivery] | None = None
        self._seeded = False

    async def add_source(self, topic: str, stream: str, durable: str) -> None:
        pump = _Pump(self, topic, stream, durable)
        self._pumps.append(pump)
        await pump.start()

    def start(self) -> None:
        self._watchdog = asyncio.create_task(self._watch(), name=f"choreo:nats:{self.group}")

    def push(self, pump: _Pump, msg: Msg) -> None:
        self._ready.append((pump, msg))
        self._wakeup.set()

    def adapter_log(self, message: str, **fields: Any) -> None:
        self.adapter._log.warning(message, group=self.group, **fields)

    async def _watch(self) -> None:
        for pump in self._pumps:
            await pump.refill()
        while not self._closed:
            await asyncio.sleep(self.heartbeat)
            now = time.monotonic()
            for pump in self._pumps:
                await pump.check(now)

    async def on_reconnected(self) -> None:
        """Requests do not survive a reconnect: forget them and ask again."""
        for pump in self._pumps:
            pump.requested = 0
            await pump.refill()

    @property
    def closed(self) -> bool:
        return self._closed

    def poll(self) -> NatsDelivery | None:
        if not self._ready or self._closed:
            return None
        pump, msg = self._ready.popleft()
        return msg if isinstance(msg, NatsDelivery) else NatsDelivery(pump, msg)

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Ack ``deliveries``: with the nats-py internals ``Client.publish`` writes with, every
        ack of the list in one write to the socket (the acks are what a batch reader spends
        most on, one ``publish`` each), else one ``publish`` each."""
        nc = self.adapter.client
        if not (_direct(nc) and nc.is_connected and not nc.is_draining_pubs):
            await super().ack_many(deliveries)
            return
        commands: list[bytes] = []
        pumps: set[_Pump] = set()
        for delivery in deliveries:
            if not isinstance(delivery, NatsDelivery):
                await delivery.ack()
                continue
            pump, reply = delivery.pump, delivery.reply
            if reply in pump.unsettled:  # else settled already, or given back on close
                pump.unsettled.discard(reply)
                commands.append(pub_cmd(reply, "", _ACK))
                pumps.add(pump)
        if commands:
            nc.stats["out_msgs"] += len(commands)
            await nc._send_command(b"".join(commands))
            flush = nc._flush_queue
            if flush is not None and flush.empty():
                await nc._flush_pending()
        for pump in pumps:
            await pump.settled()

    def merge_partitions(self) -> None:
        """Read for a batch subscription: :meth:`take` merges the topics by event time."""
        self._horizon = Horizon(_time_of)

    async def take(self, limit: int, wait: float) -> list[Delivery]:
        """Up to ``limit`` deliveries once ``limit`` arrived or ``wait`` s passed since the
        first; for a batch subscription the earliest by event time of those there (see the
        module docstring)."""
        horizon = self._horizon
        if horizon is None:
            return await super().take(limit, wait)
        if not self._seeded:
            await self._seed(horizon)
        ready = self._ready
        while True:
            while not ready and not horizon.held:
                if self._closed:
                    return []
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._closed:
                return []
            deadline = time.monotonic() + wait
            while len(ready) + horizon.held < limit and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await self.wait_ready(left)
            taken = self._earliest(horizon, limit)
            if taken:
                return taken
            await self.wait_ready(horizon.waiting())  # held for the topics behind

    async def _seed(self, horizon: Horizon[_Pump, NatsDelivery]) -> None:
        """The topics with a backlog hold the others back before their first message."""
        self._seeded = True
        for pump in self._pumps:
            with contextlib.suppress(BrokerError):
                pending = await self.adapter.pending(pump.topic, pump.stream, pump.durable)
                horizon.behind(pump, pending > 0)

    def _earliest(self, horizon: Horizon[_Pump, NatsDelivery], limit: int) -> list[Delivery]:
        """The ``limit`` earliest deliveries the horizon lets go; the others stay held."""
        if self._closed:
            return []
        lanes: dict[_Pump, list[NatsDelivery]] = {}
        for pump, item in self._ready:
            delivery = item if isinstance(item, NatsDelivery) else NatsDelivery(pump, item)
            lanes.setdefault(pump, []).append(delivery)
        self._ready.clear()
        for pump, lane in lanes.items():
            horizon.add(pump, lane, more=_pending(lane[-1].reply) > 0)
        return list(horizon.release(limit))

    async def wait_ready(self, timeout: float | None) -> None:
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def backlog(self) -> Backlog:
        """One partition ``stream/consumer`` per topic: one past the stream's last sequence,
        and one past the sequence below which the group's durable consumer acked everything."""
        appended: dict[str, int] = {}
        acked: dict[str, int] = {}
        for pump in self._pumps:
            key = f"{pump.stream}/{pump.durable}"
            last, floor = await self.adapter.consumer_floor(pump.topic, pump.stream, pump.durable)
            appended[key], acked[key] = last + 1, floor + 1
        return Backlog(appended, acked)

    async def __anext__(self) -> Delivery:
        ready = self._ready
        while not ready:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._closed:
            raise StopAsyncIteration
        pump, msg = ready.popleft()
        return msg if isinstance(msg, NatsDelivery) else NatsDelivery(pump, msg)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ready.clear()
        self._wakeup.set()
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        for pump in self._pumps:
            await pump.close()
        self.adapter.forget(self)
