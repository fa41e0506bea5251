"""The publishing side of the NATS adapter: JetStream publishes awaiting their PubAck.

``js.publish`` costs a fresh timer per call and parses every PubAck into a dataclass. This
multiplexer is the same protocol with less work per event: one wildcard reply subscription
(``<inbox>.<n>``, under the client's inbox prefix), one future per publish, acks matched by
token, a PubAck read only for an ``"error"``, and one sweeper task that fails publishes older
than their deadline instead of a timer each. The adapter retries a failed attempt with the
same ``Nats-Msg-Id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["AckTimeoutError", "JetStreamPublisher", "NoStreamError"]


class NoStreamError(Exception):
    """No stream captured the subject (the server answered 503 no responders)."""


class AckTimeoutError(Exception):
    """No PubAck arrived before the attempt's deadline."""


class JetStreamPublisher:
    """Publishes to JetStream over one connection and awaits each PubAck."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox() + "."
        self._tokens = itertools.count()
        self._pending: dict[str, tuple[asyncio.Future[Msg], float]] = {}
        self._sub: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)
        self._sweeper = asyncio.create_task(self._sweep(), name="choreo:nats:acks")

    async def _on_ack(self, msg: Msg) -> None:
        entry = self._pending.pop(msg.subject[len(self._prefix) :], None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(msg)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            late = [token for token, (_, deadline) in self._pending.items() if deadline <= now]
            for token in late:
                future, _ = self._pending.pop(token)
                if not future.done():
                    future.set_exception(AckTimeoutError())

    async def publish(
        self, subject: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> None:
        """One attempt; raises NoStreamError, AckTimeoutError, a nats-py connection error, or
        the JetStream APIError the server answered with."""
        token = str(next(self._tokens))
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._pending[token] = (future, time.monotonic() + timeout)
        try:
            await self._nc.publish(subject, body, reply=self._prefix + token, headers=headers)
            msg = await future
        finally:
            self._pending.pop(token, None)
        data = msg.data
        if not data:
            status = (msg.headers or {}).get("Status")
            if status == "503":
                raise NoStreamError(subject)
            raise nats.js.errors.APIError(code=int(status or 0), description=str(msg.headers))
        if b'"error"' in data:
            raise nats.js.errors.APIError.from_error(json.loads(data)["error"])

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(nats.errors.ConnectionClosedError())
        self._pending.clear()
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
