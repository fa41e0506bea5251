"""Delayed delivery on NATS JetStream: a work-queue stream where delayed events wait, and a
mover that publishes each to its topic when it is due.

A delayed event is published (with its PubAck, ``Nats-Msg-Id`` = its id) to
``choreo.delayed.<topic>``, captured by the work-queue stream ``CHOREO_DELAYED``. Every adapter
that has a subscription runs a :class:`Mover` on the shared durable consumer ``choreo-mover``
of that stream: an early message is given back with ``-NAK {"delay": ...}`` (JetStream
delivers it again at its time; nothing is held in memory), a due one is published to its topic
(same ``Nats-Msg-Id``, so a move repeated after a crash is stored once) and only then acked.

The mover's consumer has no ``max_ack_pending`` limit, so any number of events can wait
without holding up the groups' own consumers (whose ``max_ack_pending`` bounds what they have
in flight). Nothing moves while no subscriber runs; the next one delivers what is due, late.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

from broker.delay import DELIVER_AT, due_from_text
from broker.envelope import NATS_PREFIXES
from broker.errors import BrokerError

if TYPE_CHECKING:
    from broker.adapters.nats.adapter import NatsAdapter
    from broker.adapters.nats.settings import NatsSettings

__all__ = ["DELAY_STREAM", "Mover", "delay_subject", "ensure_delay_stream"]

#: The stream of waiting events, its subjects' prefix and the movers' durable consumer.
DELAY_STREAM = "CHOREO_DELAYED"
_PREFIX = "choreo.delayed."
_MOVER = "choreo-mover"
_DELIVER_AT = NATS_PREFIXES[0] + DELIVER_AT
_EXPIRATION = NATS_PREFIXES[0] + "expiration"
#: Seconds one pull waits for a message before asking again.
_PULL_WAIT = 1.0


def delay_subject(topic: str) -> str:
    """The subject a delayed event of ``topic`` waits on."""
    return _PREFIX + topic


async def ensure_delay_stream(js: Any, settings: NatsSettings) -> None:
    """Create the work-queue stream that captures every waiting event, unless it exists."""
    try:
        await js.stream_info(DELAY_STREAM)
    except nats.js.errors.NotFoundError:
        with contextlib.suppress(nats.js.errors.BadRequestError):  # made concurrently
            await js.add_stream(_delay_stream_config(settings))


def _delay_stream_config(settings: NatsSettings) -> api.StreamConfig:
    return api.StreamConfig(
        name=DELAY_STREAM,
        description="choreograph delayed events, waiting for their delivery time",
        subjects=[_PREFIX + ">"],
        retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType(settings.storage),
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window,
    )


def _mover_config(settings: NatsSettings) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        name=_MOVER,
        durable_name=_MOVER,
        description="choreograph: moves due delayed events to their topics",
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait,
        max_deliver=-1,
        max_ack_pending=-1,
    )


class Mover:
    """Moves due events from the delay stream to their topics, for as long as it runs."""

    def __init__(self, adapter: NatsAdapter) -> None:
        self._adapter = adapter
        self._task: asyncio.Task[None] | None = None
        #: Set by :meth:`close`: the loops end at their next turn even where the cancellation
        #: was lost (nats-py swallows one that lands in its ``_flush_pending``, e.g. in a nak).
        self._closing = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="choreo:nats:mover")

    async def close(self) -> None:
        """Stop moving. A message being moved stays unacked: JetStream gives it back to the
        next mover after ``ack_wait``, and its ``Nats-Msg-Id`` stores a repeated move once."""
        task, self._task = self._task, None
        if task is None:
            return
        self._closing.set()
        while not task.done():  # cancelled again each turn: a swallowed cancel ends it later
            task.cancel()
            await asyncio.wait({task}, timeout=_PULL_WAIT)
        if not task.cancelled() and task.exception() is not None:
            self._adapter.warn("delayed events: mover ended", error=repr(task.exception()))

    async def _run(self) -> None:
        while not self._closing.is_set():
            try:
                await self._pull()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection, the stream or the consumer went away
                if self._closing.is_set():
                    return
                self._adapter.warn("delayed events: mover restarting", error=repr(exc))
                await asyncio.sleep(1.0)

    async def _pull(self) -> None:
        adapter = self._adapter
        await adapter.delay_stream()
        js = adapter.client.jetstream(timeout=adapter.settings.request_timeout)
        pull = await js.pull_subscribe(
            _PREFIX + ">",
            durable=_MOVER,
            stream=DELAY_STREAM,
            config=_mover_config(adapter.settings),
        )
        try:
            while not self._closing.is_set():
                try:
                    messages = await pull.fetch(1, timeout=_PULL_WAIT)
                except TimeoutError:
                    continue
                for msg in messages:
                    if self._closing.is_set():  # left unacked: redelivered to the next mover
                        return
                    await self._move(msg)
        finally:
            with contextlib.suppress(Exception):
                await pull.unsubscribe()

    async def _move(self, msg: Msg) -> None:
        headers: dict[str, Any] = dict(msg.headers or {})
        due = due_from_text(headers.get(_DELIVER_AT), headers.get(_EXPIRATION))
        left = 0.0 if due is None else due - time.time()
        if left > 0:
            await msg.nak(delay=left)
            return
        topic = msg.subject[len(_PREFIX) :]
        try:
            await self._adapter.forward(topic, msg.data, headers)
        except (BrokerError, nats.errors.Error) as exc:
            self._adapter.warn("delayed events: cannot move one", topic=topic, error=str(exc))
            await msg.nak(delay=1.0)
            return
        await msg.ack()
