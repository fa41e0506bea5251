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
from collections.abc import Sequence

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


#: What the client raises for one message before writing it (the connection is fine).
_REFUSED_ALONE = (nats.errors.MaxPayloadError, UnicodeError, TypeError, ValueError)

#: Messages written before ``publish_all`` lets the loop flush them (and read PubAcks).
_WRITE_EVERY = 64


def _refusal(msg: Msg, subject: str) -> Exception | None:
    """What a PubAck says went wrong (None: the message was stored)."""
    data = msg.data
    if not data:
        status = (msg.headers or {}).get("Status")
        if status == "503":
            return NoStreamError(subject)
        return nats.js.errors.APIError(code=int(status or 0), description=str(msg.headers))
    if b'"error"' in data:
        error: Exception = nats.js.errors.APIError.from_error(json.loads(data)["error"])
        return error
    return None


def _failed(loop: asyncio.AbstractEventLoop, exc: BaseException) -> asyncio.Future[Msg]:
    future: asyncio.Future[Msg] = loop.create_future()
    future.set_exception(exc)
    return future


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
        error = _refusal(msg, subject)
        if error is not None:
            raise error

    async def publish_all(
        self, subject: str, messages: Sequence[tuple[dict[str, str], bytes]], timeout: float
    ) -> list[BaseException | None]:
        """One attempt for each message, all in flight before the first PubAck is awaited;
        one outcome per message (None: stored), as :meth:`publish` would have raised it."""
        deadline = time.monotonic() + timeout
        tokens: list[str] = []
        futures: list[asyncio.Future[Msg]] = []
        try:
            await self._send_all(subject, messages, deadline, tokens, futures)
            answers = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            for token in tokens:
                self._pending.pop(token, None)
        return [
            answer if isinstance(answer, BaseException) else _refusal(answer, subject)
            for answer in answers
        ]

    async def _send_all(
        self,
        subject: str,
        messages: Sequence[tuple[dict[str, str], bytes]],
        deadline: float,
        tokens: list[str],
        futures: list[asyncio.Future[Msg]],
    ) -> None:
        """Write every message with its reply token; a message the client refuses (over the
        server's max payload, headers it cannot encode) fails alone, a connection failure fails
        the message it hit and every message after it."""
        loop = asyncio.get_running_loop()
        publish, prefix = self._nc.publish, self._prefix
        try:
            for count, (headers, body) in enumerate(messages, 1):
                token = str(next(self._tokens))
                future: asyncio.Future[Msg] = loop.create_future()
                self._pending[token] = (future, deadline)
                tokens.append(token)
                futures.append(future)
                try:
                    await publish(subject, body, reply=prefix + token, headers=headers)
                except _REFUSED_ALONE as exc:  # this message only: the others still go
                    self._pending.pop(token, None)
                    future.set_exception(exc)
                if not count % _WRITE_EVERY:  # let the socket write, the server store meanwhile
                    await asyncio.sleep(0)
        except Exception as exc:
            if futures and not futures[-1].done():
                futures[-1].set_exception(exc)
            futures.extend(_failed(loop, exc) for _ in range(len(messages) - len(futures)))

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
