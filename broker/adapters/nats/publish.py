"""The publishing side of the NATS adapter: JetStream publishes awaiting their PubAck.

``js.publish`` costs a fresh timer per call and parses every PubAck into a dataclass. This
multiplexer is the same protocol with less work per event: one wildcard reply subscription
(``<inbox>.<n>``, under the client's inbox prefix), one future per publish, acks matched by
token, a PubAck read only for an ``"error"``, and one sweeper task that fails publishes older
than their deadline instead of a timer each. The adapter retries a failed attempt with the
same ``Nats-Msg-Id``.

Headers are written as one block: nats-py strips, validates and encodes every header of every
message (about 1 us each, 8 per event), although ours are names of the binding and values that
need no change. A block whose values hold no line break and no edge whitespace is written as
``HPUB`` straight onto the client's pending buffer (its ``_send_command``, as ``publish`` does);
anything else, a client that is not connected (reconnect buffering) or a nats-py without those
internals goes through ``Client.publish`` unchanged.

The reply subscription has no callback task: its message queue is replaced by
:class:`_Inline`, which hands each PubAck over as nats-py reads it. A ``publish_many`` list
comes with its header blocks written (:func:`~broker.adapters.nats.wire.encode_block`); it
takes a range of reply tokens, its ``HPUB`` commands go on the pending buffer 64 at a time
and its PubAcks fill one :class:`_Batch`. Those PubAcks are read by :class:`_AckReader`
(the client's protocol parser, extended), which takes runs of them straight from what the
socket gave, without nats-py's message object and coroutine per PubAck; a nats-py whose
parser is not as expected parses them itself, as it does everything else. With
``atomic_batches`` the list goes as JetStream atomic batches
(:meth:`JetStreamPublisher.publish_atomic`: ``Nats-Batch-Id``/``-Sequence``/``-Commit``
headers, one PubAck per batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.protocol.command import hpub_cmd
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

__all__ = ["AckTimeoutError", "JetStreamPublisher", "NoStreamError", "put_commands"]


class NoStreamError(Exception):
    """No stream captured the subject (the server answered 503 no responders)."""


class AckTimeoutError(Exception):
    """No PubAck arrived before the attempt's deadline."""


#: What the client raises for one message before writing it (the connection is fine).
_REFUSED_ALONE = (nats.errors.MaxPayloadError, UnicodeError, TypeError, ValueError)

#: Messages written before ``publish_all`` lets the loop flush them (and read PubAcks).
_WRITE_EVERY = 64
_CRLF = b"\r\n"
#: Messages a JetStream atomic batch may hold (the server's limit).
ATOMIC_MAX = 1000
#: A message's headers: a dict, or the header block already written.
Headers = dict[str, str] | bytes


def _as_dict(headers: Headers) -> dict[str, str]:
    """A written header block back as a dict (for ``Client.publish`` while the connection
    cannot take commands directly: a reconnect buffers them)."""
    if isinstance(headers, dict):
        return headers
    lines = headers.decode().split("\r\n")[1:]
    return dict(line.split(": ", 1) for line in lines if line)


def _refusal(msg: Msg, subject: str) -> Exception | None:
    """What a PubAck says went wrong (None: the message was stored)."""
    data = msg.data
    if not data:
        status = (msg.headers or {}).get("Status")
        if status == "503":
            return NoStreamError(subject)
        return nats.js.errors.APIError(code=int(status or 0), description=str(msg.headers))
    return _refused_data(data)


_HEADER_START = b"NATS/1.0\r\n"


def header_block(headers: dict[str, str]) -> bytes | None:
    """The NATS header block of ``headers`` as ``Client.publish`` would write it, or None when
    a value needs its cleaning (a line break, edge whitespace, an empty value)."""
    text = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    count = len(headers)
    if (
        text.count("\n") != count
        or text.count("\r") != count
        or ":  " in text
        or " \r" in text
        or "\t" in text
    ):
        return None
    return _HEADER_START + text.encode() + b"\r\n"


#: A list's answer for a message whose PubAck said it was stored (read by :class:`_AckReader`).
_STORED = b"stored"
#: What a list's message may be answered with: its PubAck (as nats-py's message, or the
#: payload :class:`_AckReader` read), an error, or :data:`_STORED`.
Answer = Msg | bytes | BaseException


def _outcome(answer: Answer | None, subject: str) -> BaseException | None:
    """What became of one message of a list (None: stored)."""
    if answer is _STORED:
        return None
    if answer is None:  # not answered (the caller was cancelled)
        return AckTimeoutError()
    if isinstance(answer, BaseException):
        return answer
    if isinstance(answer, bytes):
        return _refused_data(answer)
    return _refusal(answer, subject)


def _refused_data(data: bytes) -> Exception | None:
    """What a PubAck's JSON payload says went wrong (None: stored)."""
    if b'"error"' in data:
        try:  # from_error raises the error of the code (it returns nothing)
            nats.js.errors.APIError.from_error(json.loads(data)["error"])
        except nats.js.errors.APIError as exc:
            return exc
    return None


class _Batch:
    """The PubAcks (or errors) of one ``publish_all`` list, by index; ``done`` is resolved
    once every message has its answer. Message ``index`` has the reply token
    ``first + index``."""

    __slots__ = ("answers", "deadline", "done", "end", "first", "left")

    def __init__(self, first: int, size: int, deadline: float) -> None:
        self.answers: list[Answer | None] = [None] * size
        self.first = first
        self.end = first + size
        self.left = size
        self.deadline = deadline
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def answer(self, index: int, value: Answer) -> None:
        """Note the first answer for message ``index``."""
        if self.answers[index] is None:
            self.answers[index] = value
            self.left -= 1
            if not self.left and not self.done.done():
                self.done.set_result(None)

    def stored(self, token: int, payload: bytes) -> None:
        """Note the PubAck ``payload`` of the message with reply ``token`` (the first answer
        counts); ``done`` is left to :meth:`settle`."""
        answers, index = self.answers, token - self.first
        if answers[index] is None:
            answers[index] = payload if b'"error"' in payload else _STORED
            self.left -= 1

    def settle(self) -> None:
        """Resolve ``done`` once every message is answered."""
        if not self.left and not self.done.done():
            self.done.set_result(None)

    def fail_unanswered(self, error: BaseException) -> None:
        """Answer every message still waiting with ``error``."""
        for index, answer in enumerate(self.answers):
            if answer is None:
                self.answer(index, error)


class _Inline:
    """Stands in for the message queue of the PubAck subscription: nats-py puts each message
    it reads there for the subscription's callback task; this hands it over at once instead
    (no queue, task switch or coroutine per PubAck)."""

    __slots__ = ("_answer", "_sub")

    def __init__(self, answer: Callable[[Msg], None], sub: Subscription) -> None:
        self._answer = answer
        self._sub = sub

    @staticmethod
    def fits(sub: Subscription) -> bool:
        """Whether ``sub`` queues messages as this nats-py does (2.x)."""
        return isinstance(getattr(sub, "_pending_queue", None), asyncio.Queue) and isinstance(
            getattr(sub, "_pending_size", None), int
        )

    def put_nowait(self, msg: Msg) -> None:
        self._sub._pending_size -= len(msg.data)  # as the callback task counts it
        self._answer(msg)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def task_done(self) -> None:
        pass

    async def join(self) -> None:
        pass

    async def get(self) -> Msg:
        raise RuntimeError("the PubAck subscription has no queue to read")


class _AckReader(Parser):
    """nats-py's protocol parser, reading runs of PubAcks for the publisher's lists itself.

    nats-py matches six regular expressions, builds a message object and runs a coroutine
    for every message it reads (about 5 us per PubAck, most of a list's CPU). A PubAck of a
    list is ``MSG <inbox>.<token> <sid> <size>`` and a JSON payload: while what arrives
    starts with such lines, this reads them with ``bytes.find`` and hands each payload to the
    list (:meth:`JetStreamPublisher.read_acks`), counting them in the client's statistics as
    nats-py does; everything from the first other line on (a single publish's PubAck, a
    status, another subscription's message, PING) is parsed by nats-py as before."""

    def __init__(self, nc: Client, publisher: JetStreamPublisher) -> None:
        super().__init__(nc)
        self.publisher: JetStreamPublisher | None = publisher

    @staticmethod
    def fits(nc: Client) -> bool:
        """Whether this nats-py parses with the parser this class extends, in a state this
        one can take over (2.x)."""
        parser = getattr(nc, "_ps", None)
        return (
            parser.__class__ is Parser
            and getattr(parser, "state", None) == AWAITING_CONTROL_LINE
            and not getattr(parser, "buf", True)
        )

    async def parse(self, data: bytes = b"") -> None:
        if self.state == AWAITING_CONTROL_LINE:
            if self.buf:  # the start of a line the last read cut: read it with the rest
                data = bytes(self.buf) + data
                del self.buf[:]
            if data[:4] == b"MSG " and self.publisher is not None:
                data = self.publisher.read_acks(data)
        await super().parse(data)


async def put_commands(nc: Client, chunk: list[bytes], sizes: int) -> None:
    """Append the ``HPUB`` commands in ``chunk`` (of ``len(chunk) // 4`` messages, their
    payloads ``sizes`` bytes) to the client's pending buffer, and wake its flusher."""
    stats = nc.stats
    stats["out_msgs"] += len(chunk) // 4
    stats["out_bytes"] += sizes
    await nc._send_command(b"".join(chunk))
    flush = nc._flush_queue
    if flush is not None and flush.empty():
        await nc._flush_pending()


class JetStreamPublisher:
    """Publishes to JetStream over one connection and awaits each PubAck."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox() + "."
        #: The next reply token (a list takes one per message, a range).
        self._token = 0
        #: What a run of this publisher's PubAcks starts each line with (:meth:`read_acks`).
        self._ack_line = b"MSG " + self._prefix.encode()
        self._sid = b""
        #: Atomic batch ids: this publisher's prefix and a number (at most 64 characters).
        self._batch_prefix = f"choreo-{uuid.uuid4().hex[:16]}-"
        self._pending: dict[str, tuple[asyncio.Future[Msg], float]] = {}
        #: The lists in flight (each knows its range of tokens).
        self._batches: set[_Batch] = set()
        self._sub: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None
        #: Whether this nats-py has the internals ``Client.publish`` writes with.
        self._direct = all(
            hasattr(nc, name) for name in ("_send_command", "_flush_pending", "_flush_queue")
        ) and isinstance(getattr(nc, "stats", None), dict)

    async def _write(self, subject: str, reply: str, headers: dict[str, str], body: bytes) -> None:
        """``Client.publish(subject, body, reply=reply, headers=headers)``, with the header
        block written in one piece when it needs no cleaning."""
        nc = self._nc
        if self._direct and nc.is_connected and not nc.is_draining_pubs:
            block = header_block(headers)
            if block is not None and len(body) <= nc.max_payload:
                stats = nc.stats
                stats["out_msgs"] += 1
                stats["out_bytes"] += len(body)
                await nc._send_command(hpub_cmd(subject, reply, block, body))
                flush = nc._flush_queue
                if flush is not None and flush.empty():
                    await nc._flush_pending()
                return
        await nc.publish(subject, body, reply=reply, headers=headers)

    async def start(self) -> None:
        sub = await self._nc.subscribe(self._prefix + "*")  # no callback: no task per ack
        if _Inline.fits(sub):
            sub._pending_queue = _Inline(self._answer, sub)  # type: ignore[assignment]
        else:  # a nats-py without those internals: its callback task
            await sub.unsubscribe()
            sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)
        self._sub = sub
        self._sid = b" %d " % sub._id
        if isinstance(sub._pending_queue, _Inline) and _AckReader.fits(self._nc):
            self._nc._ps = _AckReader(self._nc, self)  # read by this: no nats-py message
        self._sweeper = asyncio.create_task(self._sweep(), name="choreo:nats:acks")

    def _next_tokens(self, count: int) -> int:
        """The first of ``count`` new reply tokens."""
        first = self._token
        self._token += count
        return first

    def _batch_of(self, token: int) -> _Batch | None:
        for batch in self._batches:
            if batch.first <= token < batch.end:
                return batch
        return None

    async def _on_ack(self, msg: Msg) -> None:
        self._answer(msg)

    def _answer(self, msg: Msg) -> None:
        """Hand a PubAck to the publish or the list waiting for it."""
        token = msg.subject[len(self._prefix) :]
        batch = self._batch_of(int(token)) if token.isdigit() else None
        if batch is not None:
            batch.answer(int(token) - batch.first, msg)
            return
        entry = self._pending.pop(token, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(msg)

    def read_acks(self, data: bytes) -> bytes:
        """Read the PubAcks of lists at the start of ``data`` (see :class:`_AckReader`);
        what is left for nats-py's parser."""
        start, count, size_sum = 0, 0, 0
        line, skip, sid, pending = self._ack_line, len(self._ack_line), self._sid, self._pending
        batch: _Batch | None = None
        touched: set[_Batch] = set()
        while data.startswith(line, start):
            end_line = data.find(b"\r\n", start)
            if end_line < 0:
                break
            token_end = data.find(b" ", start + skip, end_line)
            sid_end = token_end + len(sid)
            raw = data[start + skip : token_end]
            if token_end < 0 or data[token_end:sid_end] != sid or not raw.isdigit():
                break  # a reply subject, another subscription or a token not of a list
            size_text = data[sid_end:end_line]
            if not size_text.isdigit() or (pending and raw.decode() in pending):
                break  # a single publish's: nats-py hands it over
            payload_end = end_line + 2 + int(size_text)
            if payload_end + 2 > len(data) or payload_end == end_line + 2:
                break  # cut by the read (nats-py waits for the rest), or no payload
            token = int(raw)
            if batch is None or not batch.first <= token < batch.end:
                batch = self._batch_of(token)
            if batch is not None:  # else a list that ended: nothing waits for it
                batch.stored(token, data[end_line + 2 : payload_end])
                touched.add(batch)
            count += 1
            size_sum += payload_end - end_line - 2
            start = payload_end + 2
        if count:
            self._nc.stats["in_msgs"] += count
            self._nc.stats["in_bytes"] += size_sum
            if self._sub is not None:
                self._sub._received += count
            for done in touched:
                done.settle()
        return data[start:] if start else data

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            late = [token for token, (_, deadline) in self._pending.items() if deadline <= now]
            for token in late:
                future, _ = self._pending.pop(token)
                if not future.done():
                    future.set_exception(AckTimeoutError())
            for batch in self._batches:
                if batch.deadline <= now:
                    batch.fail_unanswered(AckTimeoutError())

    async def publish(
        self, subject: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> None:
        """One attempt; raises NoStreamError, AckTimeoutError, a nats-py connection error, or
        the JetStream APIError the server answered with."""
        token = str(self._next_tokens(1))
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._pending[token] = (future, time.monotonic() + timeout)
        try:
            await self._write(subject, self._prefix + token, headers, body)
            msg = await future
        finally:
            self._pending.pop(token, None)
        error = _refusal(msg, subject)
        if error is not None:
            raise error

    async def publish_all(
        self, subject: str, messages: Sequence[tuple[Headers, bytes]], timeout: float
    ) -> list[BaseException | None]:
        """One attempt for each message, all in flight before the first PubAck is awaited;
        one outcome per message (None: stored), as :meth:`publish` would have raised it. The
        PubAcks of the list fill one :class:`_Batch`: no future or callback per message. A
        message's headers are a dict, or a header block already written
        (:func:`~broker.adapters.nats.wire.encode_block`)."""
        first = self._next_tokens(len(messages))
        batch = _Batch(first, len(messages), time.monotonic() + timeout)
        self._batches.add(batch)
        try:
            await self._send_all(subject, messages, batch)
            if batch.left:
                await batch.done
        finally:
            self._batches.discard(batch)
        stored = _STORED
        return [None if a is stored else _outcome(a, subject) for a in batch.answers]

    async def _send_all(
        self, subject: str, messages: Sequence[tuple[Headers, bytes]], batch: _Batch
    ) -> None:
        """Write every message with its reply token; a message the client refuses (over the
        server's max payload, headers it cannot encode) fails alone, a connection failure fails
        the message it hit and every message after it.

        Messages whose header block is written are put on the client's pending buffer
        :data:`_WRITE_EVERY` at a time, as one command (what ``Client.publish`` would append
        one by one); the others go through :meth:`_write`."""
        nc, prefix, first = self._nc, self._prefix, batch.first
        head = f"HPUB {subject} {prefix}".encode()
        chunk: list[bytes] = []  # HPUB commands not yet on the pending buffer
        sizes = 0  # their payloads' bytes
        start = index = 0  # the first message not yet on the pending buffer, the current one
        writable, limit = self._writable(nc), nc.max_payload
        try:
            for index, (headers, body) in enumerate(messages):
                if writable and headers.__class__ is bytes:
                    if len(body) > limit:  # refused alone, as Client.publish does
                        batch.answer(index, nats.errors.MaxPayloadError())
                    else:
                        size = len(headers)
                        total = size + len(body)
                        line = b"%b%d %d %d\r\n" % (head, first + index, size, total)
                        chunk += (line, headers, body, _CRLF)
                        sizes += len(body)
                else:
                    if chunk:
                        await put_commands(nc, chunk, sizes)
                        chunk, sizes = [], 0
                    start = index
                    try:
                        reply = f"{prefix}{first + index}"
                        await self._write(subject, reply, _as_dict(headers), body)
                    except _REFUSED_ALONE as exc:  # this message only: the others still go
                        batch.answer(index, exc)
                    start = index + 1
                    writable = self._writable(nc)
                if not (index + 1) % _WRITE_EVERY:  # let the socket write, the server store
                    if chunk:
                        await put_commands(nc, chunk, sizes)
                        chunk, sizes = [], 0
                    start = index + 1
                    await asyncio.sleep(0)
                    writable = self._writable(nc)
            if chunk:
                await put_commands(nc, chunk, sizes)
        except Exception as exc:  # the connection: what was not handed over fails
            for failed in range(min(start, index), len(messages)):
                batch.answer(failed, exc)

    async def publish_atomic(
        self, subject: str, messages: Sequence[tuple[bytes, bytes]], timeout: float
    ) -> BaseException | None:
        """One attempt at ``messages`` (header blocks and payloads, at most
        :data:`ATOMIC_MAX` of them) as one JetStream atomic batch (nats-server 2.12+, a stream
        with ``allow_atomic``): every message is stored or none is, and one PubAck answers
        the commit. None once stored; else why not (the server's refusal, AckTimeoutError, a
        connection error, or a payload over the limit before anything was sent), after which
        none of them was stored by this batch (a timed-out commit may still be: only
        ``Nats-Msg-Id`` makes sending them again safe)."""
        nc = self._nc
        if not self._writable(nc) or any(len(body) > nc.max_payload for _, body in messages):
            writable = self._writable(nc)
            return (
                nats.errors.MaxPayloadError() if writable else nats.errors.ConnectionClosedError()
            )
        batch_id = f"{self._batch_prefix}{self._next_tokens(1)}"
        token = str(self._next_tokens(1))
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._pending[token] = (future, time.monotonic() + timeout)
        last = len(messages)
        chunk: list[bytes] = []
        sizes = 0
        try:
            for sequence, (block, body) in enumerate(messages, 1):
                if sequence == last:
                    lines = f"Nats-Batch-Id: {batch_id}\r\nNats-Batch-Sequence: {sequence}\r\n"
                    lines += "Nats-Batch-Commit: 1\r\n\r\n"
                    reply = f" {self._prefix}{token}"
                else:
                    lines = f"Nats-Batch-Id: {batch_id}\r\nNats-Batch-Sequence: {sequence}\r\n\r\n"
                    reply = ""
                header = block[:-2] + lines.encode()
                size = len(header)
                line = f"HPUB {subject}{reply} {size} {size + len(body)}\r\n"
                chunk += (line.encode(), header, body, _CRLF)
                sizes += len(body)
                if not sequence % _WRITE_EVERY:  # let the socket write, the server store
                    await put_commands(nc, chunk, sizes)
                    chunk, sizes = [], 0
                    await asyncio.sleep(0)
            if chunk:
                await put_commands(nc, chunk, sizes)
            msg = await future
        except Exception as exc:  # the connection (the server drops an unfinished batch)
            return exc
        finally:
            self._pending.pop(token, None)
        return _refusal(msg, subject)

    def _writable(self, nc: Client) -> bool:
        """Whether a command can go on the client's pending buffer as ``publish`` puts it."""
        return self._direct and nc.is_connected and not nc.is_draining_pubs

    def takes(self, messages: Sequence[tuple[bytes, bytes]]) -> bool:
        """Whether ``messages`` can go on the client's buffer as they are now (connected, no
        payload over the server's limit), as :func:`put_commands` puts them."""
        nc = self._nc
        limit = nc.max_payload
        return self._writable(nc) and all(len(body) <= limit for _, body in messages)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(nats.errors.ConnectionClosedError())
        self._pending.clear()
        for batch in self._batches:
            batch.fail_unanswered(nats.errors.ConnectionClosedError())
        parser = getattr(self._nc, "_ps", None)
        if isinstance(parser, _AckReader) and parser.publisher is self:
            parser.publisher = None  # nats-py parses everything again
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
