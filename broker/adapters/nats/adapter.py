"""The NATS JetStream adapter: streams per topic, durable pull consumers per group, publishes
awaiting their PubAck (:mod:`~broker.adapters.nats.publish`), and stream inspection."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import api

from broker import deadletter
from broker import observability as obs
from broker.adapters.kit import (
    Backoff,
    BaseAdapter,
    confirm_timeout,
    keep_trying,
    keep_trying_each,
)
from broker.adapters.nats.consumer import NatsSubscription
from broker.adapters.nats.delay import DELAY_STREAM, Mover, delay_subject, ensure_delay_stream
from broker.adapters.nats.errors import TRANSIENT, translate_error
from broker.adapters.nats.fast import FastBatches
from broker.adapters.nats.publish import (
    ATOMIC_MAX,
    AckTimeoutError,
    Headers,
    JetStreamPublisher,
    NoStreamError,
)
from broker.adapters.nats.settings import servers, split_options
from broker.adapters.nats.wire import (
    SUBJECT,
    check_topic,
    decode,
    encode,
    encode_block,
    event_id,
    safe_name,
)
from broker.delay import DELIVER_AT, held_until
from broker.envelope import Event
from broker.errors import (
    BrokerError,
    BrokerUnavailableError,
    ClosedError,
    EnvelopeError,
    PublishError,
    TopicNotFoundError,
)
from broker.ports import Capabilities, Chooser, TopicInfo

__all__ = ["NatsAdapter"]

_BACKOFF = Backoff(initial=0.05, maximum=1.0)
#: Publish failures worth another attempt with the same Nats-Msg-Id.
_RETRIED = (NoStreamError, AckTimeoutError, *TRANSIENT)


def _retried(exc: BaseException) -> bool:
    return isinstance(exc, _RETRIED)


@dataclasses.dataclass(frozen=True, slots=True)
class _Stream:
    name: str
    own: bool  # captures exactly this topic (ours, or shaped like ours)
    ttl_ok: bool
    atomic: bool = False  # takes atomic batches (nats-server 2.12+, allow_atomic)
    fast: bool = False  # takes fast-ingest batches (nats-server 2.14+, allow_batched)


class NatsAdapter(BaseAdapter):
    """The NATS JetStream backend."""

    def __init__(self, url: str = "nats://127.0.0.1:4222", **options: Any) -> None:
        super().__init__(url)
        self._url = self.url
        self.settings, self._client_options = split_options(url, options)
        self._servers = servers(url)
        self._nc: Client | None = None
        self._js: Any = None
        self._publisher: JetStreamPublisher | None = None
        self._server_ttl = False
        #: Whether the server takes atomic batches: streams created here allow them.
        self._server_atomic = False
        #: Whether the server takes fast-ingest batches: streams created here allow them.
        self._server_fast = False
        self._fast: FastBatches | None = None
        self._streams: dict[str, _Stream] = {}
        self._ensure_lock = asyncio.Lock()
        self._subscriptions: set[NatsSubscription] = set()
        self._dead_ids: OrderedDict[str, None] = OrderedDict()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_error: BaseException | None = None
        self._log = obs.get_logger("choreo.nats", url=self._url)
        self._mover: Mover | None = None
        self._delay_stream_ok = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            native_ttl=self._server_ttl,
            native_dlq=False,
            ordered_keys=False,
            replay=True,
            selective_delete=True,
            delivery_count=True,
        )

    @property
    def client(self) -> Client:
        """The connected nats-py client (for the pull pump and for tests)."""
        if self._nc is None or self._nc.is_closed:
            raise ClosedError(f"the adapter for {self._url} is not connected; call connect()")
        return self._nc

    async def connect(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            return
        nc = Client()
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=self._servers,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    **{"connect_timeout": 2, **self._client_options},
                ),
                timeout=self.settings.connect_timeout,
            )
            js = nc.jetstream(timeout=self.settings.request_timeout)
            await js.account_info()
            publisher = JetStreamPublisher(nc)
            await publisher.start()
            version = nc.connected_server_version
            fast = None
            if self.settings.fast_batches and (version.major, version.minor) >= (2, 14):
                fast = FastBatches(nc)
                await fast.start()
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            raise self._unavailable(exc) from exc
        self._nc, self._js, self._publisher = nc, js, publisher
        self._server_ttl = self.settings.native_ttl and (version.major, version.minor) >= (2, 11)
        atomic_ok = (version.major, version.minor) >= (2, 12)
        self._server_atomic = self.settings.atomic_batches and atomic_ok
        self._server_fast, self._fast = fast is not None, fast

    def _unavailable(self, exc: BaseException) -> BrokerUnavailableError:
        if isinstance(exc, nats.js.errors.APIError | nats.errors.NoRespondersError):
            return BrokerUnavailableError(
                f"NATS at {self._url} has no JetStream: start nats-server with -js "
                "(or enable JetStream for this account)"
            )
        cause = self._last_error or exc
        if isinstance(cause, nats.errors.AuthorizationError):
            return BrokerUnavailableError(
                f"NATS at {self._url} refused the credentials; check the user, password, token "
                "or credentials file in the URL"
            )
        detail = f"{type(cause).__name__}: {cause}".rstrip(": ")
        return BrokerUnavailableError(
            f"cannot connect to NATS at {self._url} ({detail}); check that nats-server is "
            "running with JetStream (-js) and that the URL and credentials are right"
        )

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        self._log.debug("nats client error", error=f"{type(exc).__name__}: {exc}")

    async def _on_disconnected(self) -> None:
        self._log.info("disconnected from NATS, reconnecting")

    async def _on_reconnected(self) -> None:
        self._log.info("reconnected to NATS")
        for sub in list(self._subscriptions):
            await sub.on_reconnected()

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is None:
            return
        for sub in list(self._subscriptions):
            await sub.close()
        mover, self._mover = self._mover, None
        if mover is not None:
            await mover.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.settings.publish_timeout)
        if self._publisher is not None:
            await self._publisher.close()
        if self._fast is not None:
            await self._fast.close()
        if nc.is_connected:
            with contextlib.suppress(Exception):
                await nc.flush(timeout=math.ceil(self.settings.request_timeout))
        with contextlib.suppress(Exception):
            await nc.close()

    def _jetstream(self) -> Any:
        if self._nc is None or self._nc.is_closed:
            raise ClosedError(f"the adapter for {self._url} is closed; call connect() first")
        return self._js

    # -- streams ---------------------------------------------------------------------------

    async def _stream(self, topic: str) -> _Stream:
        found = self._streams.get(topic)
        if found is not None:
            return found
        check_topic(topic)
        async with self._ensure_lock:
            found = self._streams.get(topic)
            if found is None:
                found = self._streams[topic] = await self._ensure_stream(topic)
        return found

    async def _ensure_stream(self, topic: str) -> _Stream:
        js = self._jetstream()
        try:
            info = await js.stream_info(safe_name(topic))
        except nats.js.errors.NotFoundError:
            try:
                info = await js.stream_info(await js.find_stream_name_by_subject(topic))
            except nats.js.errors.NotFoundError:
                info = await self._add_stream(topic)
        config = info.config
        atomic = bool(getattr(config, "allow_atomic", False))
        fast = bool(getattr(config, "allow_batched", False))
        own = config.subjects == [topic]
        return _Stream(config.name, own, bool(config.allow_msg_ttl), atomic, fast)

    async def _add_stream(self, topic: str) -> Any:
        settings = self.settings
        config = api.StreamConfig(
            name=safe_name(topic),
            description=f"choreograph topic {topic}",
            subjects=[topic],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType(settings.storage),
            num_replicas=settings.replicas,
            max_age=settings.max_age or None,
            duplicate_window=settings.duplicate_window,
            allow_msg_ttl=True if self._server_ttl else None,
            allow_atomic=True if self._server_atomic else None,
            allow_batched=True if self._server_fast else None,
        )
        try:
            return await self._jetstream().add_stream(config)
        except nats.js.errors.BadRequestError:  # created concurrently by someone else
            return await self._jetstream().stream_info(config.name)

    # -- publishing ------------------------------------------------------------------------

    async def publish(self, topic: str, event: Event, *, ttl: float | None = None) -> None:
        publisher = self._begin()
        try:
            stream = self._streams.get(topic) or await self._guard(self._stream(topic), topic)
            if held_until(event) is not None:
                await self.delay_stream()  # it waits there; the mover brings it to the topic
                headers, body = self._message(event, stream, None)
                await self._send(publisher, delay_subject(topic), body, headers)
                return
            headers, body = self._message(event, stream, ttl)
            await self._send(publisher, topic, body, headers)
        finally:
            self._end()

    # -- delayed events --------------------------------------------------------------------

    async def delay_stream(self) -> None:
        """Make sure the stream where delayed events wait exists."""
        if self._delay_stream_ok:
            return
        await self._guard(ensure_delay_stream(self._jetstream(), self.settings), DELAY_STREAM)
        self._delay_stream_ok = True

    async def forward(self, topic: str, body: bytes, headers: Mapping[str, str]) -> None:
        """Publish a delayed event that is due to its topic (for the mover), with its
        ``Nats-Msg-Id`` and without the other ``Nats-`` headers of the waiting message."""
        publisher = self._begin()
        try:
            if topic not in self._streams:
                await self._guard(self._stream(topic), topic)
            kept = {
                name: value
                for name, value in headers.items()
                if not name.startswith("Nats-") or name == "Nats-Msg-Id"
            }
            await self._send(publisher, topic, body, kept)
        finally:
            self._end()

    def warn(self, message: str, **fields: Any) -> None:
        """Log a warning of this adapter (for the mover)."""
        self._log.warning(message, **fields)

    def _begin(self) -> JetStreamPublisher:
        """The publisher, counting one more publish in flight (``close`` waits for them)."""
        publisher = self._publisher
        if publisher is None or self._nc is None:
            raise ClosedError(f"the adapter for {self._url} is closed; call connect() first")
        self._inflight += 1
        self._idle.clear()
        return publisher

    def _end(self) -> None:
        self._inflight -= 1
        if not self._inflight:
            self._idle.set()

    async def publish_many(
        self, topic: str, events: Sequence[Event], *, ttl: float | None = None
    ) -> list[Exception | None]:
        """Every event in flight before the first PubAck is awaited; failed ones are sent
        again with the same ``Nats-Msg-Id`` (stored at most once) until ``publish_timeout``.
        A list with delayed events is published one event after the other."""
        if any(DELIVER_AT in event.extensions for event in events):
            return await BaseAdapter.publish_many(self, topic, events, ttl=ttl)
        publisher = self._begin()
        try:
            stream = self._streams.get(topic) or await self._guard(self._stream(topic), topic)
            outcomes: list[Exception | None] = [None] * len(events)
            messages: dict[int, tuple[Headers, bytes]] = {}
            extra = ""  # Nats-TTL, the same for the whole list
            if ttl is not None and stream.ttl_ok:
                extra = f"Nats-TTL: {max(1, math.ceil(ttl))}\r\n"
            written = not self._dead_ids  # no replayed dead letter needs a new Nats-Msg-Id
            for index, event in enumerate(events):
                try:  # the header block written directly, else as a dict
                    block = encode_block(event, extra) if written else None
                    messages[index] = block or self._message(event, stream, ttl)
                except (TypeError, ValueError) as exc:  # data JSON cannot hold
                    outcomes[index] = exc
            mode = "atomic" if stream.atomic and self.settings.atomic_batches else ""
            if not mode and stream.fast and self._fast is not None:
                mode = "fast"
            failed = await keep_trying_each(
                lambda pending, left: self._send_all(
                    publisher, topic, messages, pending, left, mode
                ),
                list(messages),
                timeout=self.settings.publish_timeout,
                retriable=_retried,
                backoff=_BACKOFF,
                before_retry=self._retrying(topic),
            )
            for index, error in failed.items():
                outcomes[index] = self._publish_error(error, topic)
            return outcomes
        finally:
            self._end()

    def _message(
        self, event: Event, stream: _Stream, ttl: float | None
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body of ``event`` as this adapter publishes it."""
        headers, body = encode(event)
        if self._dead_ids and self._replayed(event):  # its id is in the de-duplication window
            del self._dead_ids[event.id]
            headers["Nats-Msg-Id"] = f"{event.id}:replay:{uuid.uuid4().hex[:12]}"
        if ttl is not None and stream.ttl_ok:
            headers["Nats-TTL"] = str(max(1, math.ceil(ttl)))
        return headers, body

    def _replayed(self, event: Event) -> bool:
        """Whether ``event`` is a dead letter this adapter browsed, now published again."""
        return event.id in self._dead_ids and not deadletter.is_dead_letter(event)

    async def _send(
        self, publisher: JetStreamPublisher, topic: str, body: bytes, headers: dict[str, str]
    ) -> None:
        """One JetStream publish, retried with the same Nats-Msg-Id (so at most once stored)
        across timeouts and reconnects until ``publish_timeout``."""

        async def attempt(left: float) -> None:
            await self._recover_stream(topic)
            await publisher.publish(topic, body, headers, self._attempt_timeout(left))

        try:
            await keep_trying(
                attempt,
                timeout=self.settings.publish_timeout,
                retriable=_retried,
                backoff=_BACKOFF,
                before_retry=self._retrying(topic),
            )
        except Exception as exc:
            error = self._publish_error(exc, topic)
            if error is exc:
                raise
            raise error from exc

    async def _send_all(
        self,
        publisher: JetStreamPublisher,
        topic: str,
        messages: Mapping[int, tuple[Headers, bytes]],
        pending: list[int],
        left: float,
        mode: str = "",
    ) -> dict[int, BaseException]:
        """One attempt for the ``pending`` messages: first, where the stream takes them, as
        atomic batches (``mode`` "atomic") or one fast-ingest batch ("fast"); then what
        those did not store (whatever the reason), and everything on other streams, one
        message and one PubAck at a time, so each event's outcome is its own (a duplicate
        ``Nats-Msg-Id``, which fails a whole atomic batch, is then acked as stored)."""
        await self._recover_stream(topic)
        timeout = self._attempt_timeout(left)
        if mode and len(pending) > 1 and all(messages[i][0].__class__ is bytes for i in pending):
            blocks = cast(Mapping[int, tuple[bytes, bytes]], messages)  # all written, just checked
            deadline = time.monotonic() + timeout
            if mode == "atomic":
                pending = await self._send_atomic(publisher, topic, blocks, pending, timeout)
            else:
                pending, error = await self._send_fast(publisher, topic, blocks, pending, timeout)
                if error is not None:  # a timeout or the connection: the attempt ends here
                    return dict.fromkeys(pending, error)
            if not pending:
                return {}
            timeout = max(deadline - time.monotonic(), 0.01)
        answers = await publisher.publish_all(topic, [messages[i] for i in pending], timeout)
        return {i: error for i, error in zip(pending, answers, strict=True) if error is not None}

    @staticmethod
    async def _send_atomic(
        publisher: JetStreamPublisher,
        topic: str,
        blocks: Mapping[int, tuple[bytes, bytes]],
        pending: list[int],
        timeout: float,
    ) -> list[int]:
        """The ``pending`` messages as atomic batches of up to :data:`ATOMIC_MAX`; those of
        the batches that were not stored."""
        chunks = [pending[i : i + ATOMIC_MAX] for i in range(0, len(pending), ATOMIC_MAX)]
        errors = await asyncio.gather(
            *(
                publisher.publish_atomic(topic, [blocks[i] for i in chunk], timeout)
                for chunk in chunks
            )
        )
        return [
            i
            for chunk, error in zip(chunks, errors, strict=True)
            if error is not None
            for i in chunk
        ]

    async def _send_fast(
        self,
        publisher: JetStreamPublisher,
        topic: str,
        blocks: Mapping[int, tuple[bytes, bytes]],
        pending: list[int],
        timeout: float,
    ) -> tuple[list[int], BaseException | None]:
        """The ``pending`` messages as one fast-ingest batch; those not known to be stored,
        and the error that cut the attempt short (None: send them one by one now)."""
        batch = [blocks[i] for i in pending]
        if self._fast is None or not publisher.takes(batch):
            return pending, None  # a payload over the limit, a reconnect: one by one
        stored, error = await self._fast.publish(topic, batch, timeout)
        return pending[stored:], error

    async def _recover_stream(self, topic: str) -> None:
        if topic not in self._streams:  # deleted, or JetStream was not up yet
            with contextlib.suppress(BrokerError, *TRANSIENT):
                await self._stream(topic)

    def _attempt_timeout(self, left: float) -> float:
        return min(self.settings.request_timeout, max(left, 0.01))

    def _retrying(self, topic: str) -> Callable[[BaseException, float], None]:
        def forget_stream(exc: BaseException, _: float) -> None:
            if isinstance(exc, NoStreamError):
                self._streams.pop(topic, None)

        return forget_stream

    def _publish_error(self, exc: BaseException, topic: str) -> Exception:
        """What a publish that will not be tried again raises."""
        if isinstance(exc, BrokerError):
            return exc
        if isinstance(exc, _RETRIED):  # out of time
            return confirm_timeout(
                "NATS", self._url, f"an event on {topic}", self.settings.publish_timeout, exc
            )
        if isinstance(exc, nats.errors.ConnectionClosedError):
            return ClosedError(f"the adapter for {self._url} was closed")
        if isinstance(exc, nats.js.errors.APIError):
            return PublishError(f"NATS refused an event on {topic} at {self._url}: {exc}")
        if isinstance(exc, nats.errors.MaxPayloadError):
            limit = self._nc.max_payload if self._nc is not None else "its"
            return PublishError(
                f"an event on {topic} is larger than the max_payload of NATS at {self._url} "
                f"({limit} bytes with headers); send less data or raise max_payload on the server"
            )
        if isinstance(exc, nats.errors.Error):
            return translate_error(exc, self._url, f"an event on {topic}")
        return exc if isinstance(exc, Exception) else RuntimeError(repr(exc))

    async def _guard(self, call: Any, topic: str) -> Any:
        """Await a JetStream management call, translating client errors."""
        try:
            return await call
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise translate_error(exc, self._url, topic) from exc

    # -- subscribing -----------------------------------------------------------------------

    async def open_subscription(
        self, topics: tuple[str, ...], group: str, from_beginning: bool, prefetch: int
    ) -> NatsSubscription:
        self._jetstream()
        sources = []
        for topic in topics:
            stream = await self._guard(self._stream(topic), topic)
            durable = safe_name(group if stream.own else f"{group}_{topic}")
            await self._guard(
                self._ensure_consumer(topic, stream, group, durable, from_beginning, prefetch),
                topic,
            )
            sources.append((topic, stream.name, durable))
        subscription = NatsSubscription(self, group, prefetch, self.settings.heartbeat)
        self._subscriptions.add(subscription)
        try:
            for topic, stream_name, durable in sources:
                await subscription.add_source(topic, stream_name, durable)
        except nats.errors.Error as exc:
            await subscription.close()
            raise BrokerUnavailableError(f"cannot subscribe at {self._url}: {exc}") from exc
        subscription.start()
        if self._mover is None:
            self._mover = Mover(self)
            self._mover.start()
        return subscription

    async def restore(
        self, topic: str, group: str, since: datetime, prefetch: int
    ) -> tuple[str, str]:
        """Re-create a group's deleted consumer (and the topic's stream if it went too); a
        stream newer than ``since`` is read from its start, so nothing published into it is
        missed. Returns the stream and consumer names."""
        self._streams.pop(topic, None)
        stream = await self._guard(self._stream(topic), topic)
        info = await self._guard(self._jetstream().stream_info(stream.name), topic)
        fresh = info.created is not None and info.created > since
        durable = safe_name(group if stream.own else f"{group}_{topic}")
        await self._guard(
            self._ensure_consumer(topic, stream, group, durable, fresh, prefetch), topic
        )
        self._log.warning("restored a deleted consumer", topic=topic, group=group)
        return stream.name, durable

    async def pending(self, topic: str, stream: str, durable: str) -> int:
        """How many messages of the stream the durable consumer has not delivered yet."""
        info = await self._guard(self._jetstream().consumer_info(stream, durable), topic)
        return int(info.num_pending or 0)

    async def consumer_floor(self, topic: str, stream: str, durable: str) -> tuple[int, int]:
        """The stream's last sequence, and the one up to which the durable consumer acked
        everything: its ack floor, or that last sequence when nothing of the topic is pending
        or unacked (the floor stays below messages of other subjects of a shared stream)."""
        js = self._jetstream()
        state = (await self._guard(js.stream_info(stream), topic)).state
        info = await self._guard(js.consumer_info(stream, durable), topic)
        if not info.num_pending and not info.num_ack_pending:
            return state.last_seq, state.last_seq  # read before: all of it is acked
        return state.last_seq, info.ack_floor.stream_seq if info.ack_floor else 0

    def forget(self, subscription: NatsSubscription) -> None:
        """Called by a subscription when it closes."""
        self._subscriptions.discard(subscription)

    async def _ensure_consumer(
        self, topic: str, stream: _Stream, group: str, durable: str, start: bool, prefetch: int
    ) -> None:
        js = self._jetstream()
        try:
            await js.consumer_info(stream.name, durable)
            return
        except nats.js.errors.NotFoundError:
            pass
        config = api.ConsumerConfig(
            name=durable,
            durable_name=durable,
            description=f"choreograph group {group}",
            deliver_policy=api.DeliverPolicy.ALL if start else api.DeliverPolicy.NEW,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.settings.ack_wait,
            max_deliver=-1,
            max_ack_pending=self.settings.max_ack_pending or 4 * prefetch,
            filter_subject=None if stream.own else topic,
        )
        try:
            await js.add_consumer(stream.name, config)
        except nats.js.errors.BadRequestError:  # another member created it first
            await js.consumer_info(stream.name, durable)

    # -- topics ----------------------------------------------------------------------------

    async def create_topic(self, topic: str, *, partitions: int | None = None) -> None:
        self._jetstream()
        await self._guard(self._stream(topic), topic)

    async def list_topics(self) -> list[TopicInfo]:
        js = self._jetstream()
        streams = await self._guard(js.streams_info(), "the stream list")
        topics = []
        for info in streams:
            subjects = info.config.subjects or []
            if len(subjects) != 1 or not SUBJECT.fullmatch(subjects[0]):
                continue
            consumers = await self._guard(js.consumers_info(info.config.name), subjects[0])
            groups = tuple(sorted(_group_of(c.config) for c in consumers if c.config.durable_name))
            topics.append(TopicInfo(subjects[0], messages=info.state.messages, groups=groups))
        return sorted(topics, key=lambda t: t.name)

    async def browse(self, topic: str, *, limit: int = 100) -> list[Event]:
        events = []
        for _, headers, body in await self._scan(topic, limit):
            event = _decoded(headers, body)
            if event is None:
                continue
            events.append(event)
            if deadletter.is_dead_letter(event):
                self._remember_dead(event.id)
        return events

    def _remember_dead(self, event_id: str) -> None:
        self._dead_ids[event_id] = None
        self._dead_ids.move_to_end(event_id)
        while len(self._dead_ids) > 100_000:
            self._dead_ids.popitem(last=False)

    async def purge(
        self, topic: str, ids: Collection[str] | None = None, *, among: int | None = None
    ) -> int:
        js = self._jetstream()
        stream = await self._existing(topic)
        if stream is None:
            return 0
        if ids is None and among is None:
            info = await self._guard(js.stream_info(stream.name), topic)
            if stream.own:
                await self._guard(js.purge_stream(stream.name), topic)
            else:
                await self._guard(js.purge_stream(stream.name, subject=topic), topic)
            return int(info.state.messages)
        wanted = set(ids) if ids is not None else None
        scanned = await self._scan(topic, 1 << 62 if among is None else among)
        return await self._delete(
            stream,
            topic,
            [seq for seq, headers, _ in scanned if wanted is None or event_id(headers) in wanted],
        )

    async def purge_chosen(self, topic: str, choose: Chooser) -> int:
        """Scan the stream once, then delete the messages whose ids ``choose`` picks."""
        stream = await self._existing(topic)
        scanned = await self._scan(topic, 1 << 62) if stream is not None else []
        decoded = [(seq, _decoded(headers, body)) for seq, headers, body in scanned]
        wanted = set(choose([event for _, event in decoded if event is not None]))
        if stream is None:
            return 0
        chosen = [seq for seq, event in decoded if event is not None and event.id in wanted]
        return await self._delete(stream, topic, chosen)

    async def _delete(self, stream: _Stream, topic: str, seqs: Sequence[int]) -> int:
        """Delete the messages ``seqs`` of ``stream``; how many were still there."""
        js = self._jetstream()
        count = 0
        for seq in seqs:
            with contextlib.suppress(TopicNotFoundError):
                await self._guard(js.delete_msg(stream.name, seq), topic)
                count += 1
        return count

    async def delete_topic(self, topic: str) -> None:
        """Delete the stream of ``topic`` (only a stream of its own; a shared one stays)."""
        stream = await self._existing(topic)
        self._streams.pop(topic, None)
        if stream is not None and stream.own:
            with contextlib.suppress(TopicNotFoundError):
                await self._guard(self._jetstream().delete_stream(stream.name), topic)

    async def _existing(self, topic: str) -> _Stream | None:
        """The topic's stream if it exists (browsing never creates one)."""
        if topic in self._streams:
            return self._streams[topic]
        check_topic(topic)
        js = self._jetstream()
        try:
            await self._guard(js.find_stream_name_by_subject(topic), topic)
        except TopicNotFoundError:
            return None
        stream: _Stream = await self._guard(self._stream(topic), topic)
        return stream

    async def _scan(self, topic: str, limit: int) -> list[tuple[int, dict[str, str], bytes]]:
        """Up to ``limit`` retained messages (stream seq, headers, body), oldest first, read
        with an ephemeral no-ack consumer so no group's position moves."""
        stream = await self._existing(topic)
        if stream is None or limit <= 0:
            return []
        js = self._jetstream()
        info = await self._guard(js.stream_info(stream.name), topic)
        if not info.state.messages:
            return []
        last, available = info.state.last_seq, int(info.state.messages)
        config = api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE,
            deliver_policy=api.DeliverPolicy.ALL,
            inactive_threshold=30.0,
            mem_storage=True,
        )
        psub = await self._guard(js.pull_subscribe(topic, stream=stream.name, config=config), topic)
        found: list[tuple[int, dict[str, str], bytes]] = []
        try:
            while len(found) < limit:
                try:
                    want = min(limit - len(found), max(available - len(found), 1), 256)
                    batch = await psub.fetch(want, timeout=1.0)
                except TimeoutError:
                    break
                for msg in batch:
                    seq = msg.metadata.sequence.stream
                    found.append((seq, dict(msg.headers or {}), msg.data))
                if len(found) >= available or (found and found[-1][0] >= last):
                    break
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
            with contextlib.suppress(Exception):
                await js.delete_consumer(stream.name, psub._consumer)
        return found[:limit]


def _group_of(config: Any) -> str:
    description = config.description or ""
    prefix = "choreograph group "
    return description[len(prefix) :] if description.startswith(prefix) else config.durable_name


def _decoded(headers: dict[str, str], body: bytes) -> Event | None:
    """The event a retained message holds, or None when it is not a CloudEvent."""
    try:
        return decode(headers, body)
    except EnvelopeError:
        return None
