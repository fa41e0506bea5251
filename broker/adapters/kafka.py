"""``kafka://host:9092[,host2:9092]?options``: Kafka (and Kafka-compatible brokers) via aiokafka.

Events travel in the CloudEvents Kafka binary binding: ``ce_<attr>`` headers, a ``content-type``
header and the ``partitionkey`` as message key, so same-key events share a partition and keep
their order. A choreograph group is a Kafka consumer group; offsets are committed manually, only
for deliveries the core acked, as the highest contiguous acked offset per partition, batched
(every ``commit_interval_ms`` or ``commit_batch`` acks, on revocation and on close).

``subscribe`` returns once every partition of the topics has a committed position for the group:
a new group commits the end offsets (or the beginning with ``from_beginning``) on its first
assignment. A partition that later turns up without a committed position (a broker that lost its
state, a partition added to the topic) is read from its beginning: at-least-once over skipping.

Options (query string): typed settings (:class:`KafkaSettings`), aiokafka client options routed to
the clients whose constructor takes them (``security_protocol``, ``sasl_mechanism``,
``sasl_plain_username``, ``session_timeout_ms``, ``fetch_max_wait_ms``, ...), ``ssl_cafile`` /
``ssl_certfile`` / ``ssl_keyfile`` / ``ssl_password`` for TLS, and ``producer.<opt>`` /
``consumer.<opt>`` / ``admin.<opt>`` for one client only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka import errors as kerr
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.helpers import create_ssl_context

from broker.envelope import KAFKA_PREFIXES, Event, from_binary, to_kafka
from broker.errors import (
    BrokerError,
    BrokerUnavailableError,
    CapabilityError,
    ClosedError,
    ConfigurationError,
    EnvelopeError,
    PublishError,
    PublishTimeoutError,
    TopicNotFoundError,
)
from broker.observability import get_logger
from broker.ports import Capabilities, Delivery, TopicInfo
from broker.urls import mask_url

__all__ = ["KafkaAdapter", "KafkaSettings", "translate_error"]

CAPABILITIES = Capabilities(
    native_ttl=False,
    native_dlq=False,
    ordered_keys=True,
    replay=True,
    selective_delete=False,
    delivery_count=False,
)

_log = get_logger("choreo.kafka")
_CLIENTS: dict[str, Callable[..., Any]] = {
    "producer": AIOKafkaProducer,
    "consumer": AIOKafkaConsumer,
    "admin": AIOKafkaAdminClient,
}
# Bootstrap lists whose broker refused an idempotent producer (Tansu): probe once per process.
_NOT_IDEMPOTENT: set[tuple[str, ...]] = set()
_SSL_OPTIONS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password")
# Options we set ourselves: a URL may not override them, or the delivery contract breaks.
_RESERVED = frozenset(
    (
        "bootstrap_servers",
        "group_id",
        "enable_auto_commit",
        "acks",
        "enable_idempotence",
        "value_serializer",
        "key_serializer",
        "value_deserializer",
        "key_deserializer",
    )
)


# -- settings -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class KafkaSettings:
    """What the adapter itself decides; everything else is an aiokafka client option."""

    #: ``auto`` tries an idempotent producer and falls back (one log line) if the broker refuses.
    idempotence: str = "auto"
    #: Partitions and replication factor of the topics choreograph creates.
    partitions: int = 4
    replication_factor: int = 1
    #: Create a missing topic before the first publish or subscribe.
    auto_create: bool = True
    #: Commit acked offsets at least this often, and after this many acks.
    commit_interval_ms: int = 100
    commit_batch: int = 500
    #: How long a publish keeps retrying while the broker is unreachable.
    publish_timeout_ms: int = 60_000
    #: How long ``subscribe`` waits for the group to join and have a position.
    subscribe_timeout_ms: int = 60_000
    #: Prepended to every group name: a namespace for shared clusters (and per-test isolation).
    group_prefix: str = ""


def _coerce(name: str, raw: Any, like: Any, url: str) -> Any:
    if like is None and name.endswith(("_ms", "_records", "_bytes", "_size")):
        like = 0  # optional numeric client options default to None
    if not isinstance(raw, str) or like is None or isinstance(like, str):
        return raw
    try:
        if isinstance(like, bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes", "on")
        return type(like)(raw)
    except ValueError:
        raise ConfigurationError(
            f"kafka option {name}={raw!r} in {mask_url(url)} must be a {type(like).__name__}"
        ) from None


def _defaults(client: str) -> dict[str, Any]:
    params = inspect.signature(_CLIENTS[client]).parameters
    return {n: p.default for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n != "loop"}


def _split_options(
    url: str, options: Mapping[str, Any]
) -> tuple[KafkaSettings, dict[str, dict[str, Any]]]:
    """Typed settings plus, per aiokafka client, the options its constructor accepts."""
    fields = {f.name: f.default for f in dataclasses.fields(KafkaSettings)}
    typed = {k: _coerce(k, v, fields[k], url) for k, v in options.items() if k in fields}
    settings = KafkaSettings(**typed)
    if settings.idempotence not in ("auto", "true", "false"):
        raise ConfigurationError(
            f"kafka option idempotence must be auto, true or false ({mask_url(url)})"
        )
    per_client: dict[str, dict[str, Any]] = {name: {} for name in _CLIENTS}
    defaults = {name: _defaults(name) for name in _CLIENTS}
    ssl = {k: v for k, v in options.items() if k in _SSL_OPTIONS}
    for name, raw in options.items():
        if name in fields or name in _SSL_OPTIONS:
            continue
        client, _, option = name.rpartition(".")
        targets = [client] if client else [c for c in _CLIENTS if name in defaults[c]]
        if (
            option in _RESERVED
            or not targets
            or any(option not in defaults.get(c, {}) for c in targets)
        ):
            raise ConfigurationError(
                f"unknown or reserved kafka option {name!r} in {mask_url(url)}; use an aiokafka "
                "client option (e.g. security_protocol, session_timeout_ms) or producer.<opt>"
            )
        for target in targets:
            per_client[target][option] = _coerce(name, raw, defaults[target][option], url)
    protocol = str(options.get("security_protocol", "PLAINTEXT")).upper()
    if ssl or protocol in ("SSL", "SASL_SSL"):
        context = create_ssl_context(
            cafile=ssl.get("ssl_cafile"),
            certfile=ssl.get("ssl_certfile"),
            keyfile=ssl.get("ssl_keyfile"),
            password=ssl.get("ssl_password"),
        )
        for client_options in per_client.values():
            client_options["ssl_context"] = context
    return settings, per_client


def _bootstrap(url: str) -> list[str]:
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
    hosts = [h.strip() for h in netloc.split(",") if h.strip()]
    if not hosts:
        raise ConfigurationError(
            f"kafka URL {mask_url(url)!r} names no host; use kafka://host:9092"
        )
    return [h if ":" in h.rsplit("]", 1)[-1] else f"{h}:9092" for h in hosts]


# -- errors ---------------------------------------------------------------------------------------


def translate_error(exc: BaseException, url: str, what: str) -> BrokerError:
    """The :mod:`broker.errors` exception for an aiokafka error raised while doing ``what``."""
    where = mask_url(url)
    auth = (
        kerr.AuthenticationFailedError,
        kerr.SaslAuthenticationFailed,
        kerr.AuthenticationMethodNotSupported,
        kerr.UnsupportedSaslMechanismError,
        kerr.IllegalSaslStateError,
    )
    if isinstance(exc, auth):
        return BrokerUnavailableError(
            f"Kafka at {where} refused the credentials while {what} ({exc}); check "
            "security_protocol, sasl_mechanism, sasl_plain_username and sasl_plain_password"
        )
    if isinstance(
        exc, kerr.KafkaConnectionError | kerr.NoBrokersAvailable | kerr.NodeNotReadyError
    ):
        return BrokerUnavailableError(
            f"cannot reach Kafka at {where} while {what} ({exc}); check that the broker runs, "
            "the host and port, and the advertised listeners"
        )
    if isinstance(exc, kerr.KafkaTimeoutError | kerr.RequestTimedOutError | TimeoutError):
        return PublishTimeoutError(f"Kafka at {where} did not answer in time while {what}")
    if isinstance(exc, kerr.UnknownTopicOrPartitionError):
        return TopicNotFoundError(
            f"topic missing on Kafka at {where} while {what}; create it (choreo topics create) "
            "or set auto_create=true"
        )
    authz = (
        kerr.TopicAuthorizationFailedError,
        kerr.GroupAuthorizationFailedError,
        kerr.ClusterAuthorizationFailedError,
        kerr.TransactionalIdAuthorizationFailed,
    )
    if isinstance(exc, authz):
        return PublishError(f"Kafka at {where} denied access while {what} ({exc}); check the ACLs")
    if isinstance(exc, kerr.KafkaConfigurationError | kerr.IllegalArgumentError):
        return ConfigurationError(f"invalid Kafka configuration for {where}: {exc}")
    return PublishError(f"Kafka at {where} failed while {what}: {type(exc).__name__}: {exc}")


def _retriable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retriable", False)) or isinstance(exc, kerr.KafkaTimeoutError)


# -- deliveries -----------------------------------------------------------------------------------


class _Partition:
    """One assigned partition of a subscription: deliveries in flight, in offset order."""

    __slots__ = ("committable", "committed", "live", "pending", "sub", "tp")

    def __init__(self, sub: _KafkaSubscription, tp: TopicPartition) -> None:
        self.sub = sub
        self.tp = tp
        self.pending: deque[_KafkaDelivery] = deque()
        self.committable = -1  # offset to commit next (highest contiguous acked + 1)
        self.committed = -1
        self.live = True

    def settle(self) -> None:
        pending = self.pending
        while pending and pending[0].done:
            self.committable = pending.popleft().offset + 1
        if self.live:
            self.sub.settled(self)


class _KafkaDelivery(Delivery):
    __slots__ = ("done", "offset", "part")

    def __init__(
        self, part: _Partition, offset: int, topic: str, event: Event | None, **kwargs: Any
    ) -> None:
        super().__init__(topic, event, **kwargs)
        self.part = part
        self.offset = offset
        self.done = False

    async def ack(self) -> None:
        if not self.done:
            self.done = True
            self.part.settle()

    async def nack(self) -> None:
        if not self.done and self.part.live:
            self.redelivered += 1
            self.part.sub.give_back(self)


def _delivery(part: _Partition, record: Any) -> _KafkaDelivery:
    headers = {name: raw.decode("utf-8", "replace") for name, raw in record.headers or ()}
    body: bytes = record.value or b""
    try:
        event = from_binary(headers, body, KAFKA_PREFIXES)
    except EnvelopeError as exc:
        return _KafkaDelivery(
            part, record.offset, record.topic, None, body=body, headers=headers, decode_error=exc
        )
    extensions = event.extensions
    if record.key is not None and "partitionkey" not in extensions:
        extensions["partitionkey"] = record.key.decode("utf-8", "replace")
    attempts = extensions.get("dlqattempts")
    if isinstance(attempts, str) and attempts.isdigit():  # an Integer attribute, sent as text
        extensions["dlqattempts"] = int(attempts)
    return _KafkaDelivery(part, record.offset, record.topic, event, headers=headers)


# -- subscriptions --------------------------------------------------------------------------------


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sub: _KafkaSubscription) -> None:
        self._sub = sub

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._sub.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._sub.assigned(assigned)


class _KafkaSubscription:
    """A consumer-group member: yields deliveries, commits what the core acked."""

    def __init__(
        self,
        adapter: KafkaAdapter,
        consumer: AIOKafkaConsumer,
        topics: Sequence[str],
        group: str,
        *,
        from_beginning: bool,
        prefetch: int,
    ) -> None:
        self._adapter = adapter
        self._consumer = consumer
        self._topics = list(topics)
        self._group = group
        self._from_beginning = from_beginning
        self._prefetch = prefetch
        self._settings = adapter.settings
        self._parts: dict[TopicPartition, _Partition] = {}
        self._buffer: deque[tuple[_Partition, Any]] = deque()
        self._redeliver: deque[_KafkaDelivery] = deque()
        self._dirty: set[_Partition] = set()
        self._inflight = 0
        self._acks = 0
        self._space = asyncio.Event()
        self._commit_due = asyncio.Event()
        self._assigned_once = asyncio.Event()
        self._joining = True
        self._closed = False
        self._committer: asyncio.Task[None] | None = None

    # -- joining -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the group; return once every partition of the topics has a committed position."""
        await self._consumer.start()
        self._consumer.subscribe(self._topics, listener=_Listener(self))
        deadline = time.monotonic() + self._settings.subscribe_timeout_ms / 1000
        try:
            await asyncio.wait_for(self._assigned_once.wait(), deadline - time.monotonic())
            while await self._unpositioned():
                if time.monotonic() > deadline:
                    raise TimeoutError
                await asyncio.sleep(0.05)
        except TimeoutError:
            await self.close()
            raise BrokerUnavailableError(
                f"group {self._group!r} on {self._adapter.url} got no position for "
                f"{', '.join(self._topics)} within {self._settings.subscribe_timeout_ms} ms; "
                "check the broker, or raise subscribe_timeout_ms / lower session_timeout_ms"
            ) from None
        self._joining = False
        self._committer = asyncio.create_task(
            self._commit_loop(), name=f"kafka-commit:{self._group}"
        )

    async def _unpositioned(self) -> list[TopicPartition]:
        tps = [
            TopicPartition(t, p)
            for t in self._topics
            for p in sorted(self._consumer.partitions_for_topic(t) or ())
        ]
        committed = await asyncio.gather(*(self._consumer.committed(tp) for tp in tps))
        return [tp for tp, offset in zip(tps, committed, strict=True) if offset is None]

    async def assigned(self, tps: set[TopicPartition]) -> None:
        """Rebalance listener: position every new partition at its committed offset."""
        consumer = self._consumer
        parts = {tp: _Partition(self, tp) for tp in tps}
        self._parts.update(parts)
        consumer.pause(*tps)  # nothing is handed out before the position is known
        try:
            starts = await self._starts(tps)
            for tp, offset in starts.items():
                consumer.seek(tp, offset)
                parts[tp].committable = parts[tp].committed = offset
        except (kerr.KafkaError, TimeoutError) as exc:  # aiokafka falls back to committed/earliest
            _log.warning("kafka positioning failed", group=self._group, error=repr(exc))
        finally:
            consumer.resume(*tps)
            self._assigned_once.set()

    async def _starts(self, tps: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Where each partition resumes: its committed offset, else a fresh position (committed).

        A committed offset beyond the log end means the broker lost the log (a memory-only
        broker restarted, or the topic was recreated): the group then reads from the beginning.
        """
        consumer = self._consumer
        listed = list(tps)
        found = await asyncio.gather(*(consumer.committed(tp) for tp in listed))
        ends = await consumer.end_offsets(listed)
        starts = {
            tp: off
            for tp, off in zip(listed, found, strict=True)
            if off is not None and off <= ends[tp]
        }
        missing = [tp for tp in listed if tp not in starts]
        if not missing:
            return starts
        if self._joining and not self._from_beginning:
            fresh = {tp: ends[tp] for tp in missing}
        else:
            fresh = await consumer.beginning_offsets(missing)
            if not self._joining:
                _log.warning(
                    "kafka group lost its position; reading from the beginning",
                    group=self._group,
                    partitions=[str(tp) for tp in missing],
                )
        with contextlib.suppress(kerr.KafkaError, TimeoutError):
            await asyncio.wait_for(consumer.commit(dict(fresh)), 10)
        return {**starts, **fresh}

    def _member(self) -> bool:
        """Whether the consumer still holds a group generation (offsets it commits count)."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        return getattr(coordinator, "generation", 0) != -1

    async def revoked(self, tps: set[TopicPartition]) -> None:
        """Rebalance listener: commit what was acked; unacked deliveries go to the next owner."""
        offsets = {}
        for tp in tps:
            part = self._parts.pop(tp, None)
            if part is None:
                continue
            part.live = False
            self._inflight -= sum(1 for d in part.pending if not d.done)
            self._dirty.discard(part)
            if part.committable > part.committed:
                offsets[tp] = part.committable
        self._wake_space()
        # After the broker forgot this member (a restart), a commit would be a stale write.
        if offsets and self._member():
            with contextlib.suppress(kerr.KafkaError, TimeoutError):
                await asyncio.wait_for(self._consumer.commit(offsets), 5)

    # -- delivering --------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        while not self._closed:
            if self._redeliver:
                delivery = self._redeliver.popleft()
                if delivery.part.live:
                    self._inflight += 1
                    return delivery
            elif self._inflight >= self._prefetch:
                self._space.clear()
                await self._space.wait()
            elif self._buffer:
                part, record = self._buffer.popleft()
                if part.live:
                    delivery = _delivery(part, record)
                    part.pending.append(delivery)
                    self._inflight += 1
                    return delivery
            else:
                await self._fill()
        raise StopAsyncIteration

    async def _fill(self) -> None:
        try:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=self._prefetch)
        except (kerr.ConsumerStoppedError, kerr.IllegalStateError):
            if not self._closed:
                raise
            return
        except kerr.KafkaError as exc:
            _log.warning("kafka fetch failed; retrying", group=self._group, error=repr(exc))
            await asyncio.sleep(0.5)
            return
        for tp, records in batch.items():
            part = self._parts.get(tp)
            if part is not None:
                self._buffer.extend((part, record) for record in records)

    def settled(self, part: _Partition) -> None:
        self._inflight -= 1
        if part.committable > part.committed:
            self._dirty.add(part)
        self._acks += 1
        if self._acks >= self._settings.commit_batch:
            self._commit_due.set()
        if self._inflight < self._prefetch:
            self._space.set()

    def give_back(self, delivery: _KafkaDelivery) -> None:
        self._inflight -= 1
        self._redeliver.append(delivery)
        self._space.set()

    def _wake_space(self) -> None:
        if self._inflight < self._prefetch or self._closed:
            self._space.set()

    # -- committing --------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        interval = self._settings.commit_interval_ms / 1000
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._commit_due.wait(), interval)
            self._commit_due.clear()
            await self._commit()

    async def _commit(self) -> None:
        parts = [p for p in self._dirty if p.live and p.committable > p.committed]
        self._dirty.clear()
        self._acks = 0
        if not parts:
            return
        offsets = {p.tp: p.committable for p in parts}
        try:
            await asyncio.wait_for(self._consumer.commit(offsets), 10)
        except (kerr.CommitFailedError, kerr.IllegalStateError):
            return  # a rebalance took the partitions; revocation committed what it could
        except (kerr.KafkaError, TimeoutError) as exc:
            _log.warning("kafka commit failed; will retry", group=self._group, error=repr(exc))
            self._dirty.update(parts)
            return
        for part in parts:
            part.committed = max(part.committed, offsets[part.tp])

    async def close(self) -> None:
        """Commit what was acked and leave the group; unacked deliveries come back later."""
        if self._closed:
            return
        self._closed = True
        self._space.set()
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        with contextlib.suppress(kerr.KafkaError, TimeoutError):
            await asyncio.wait_for(self._commit(), 5)
        for part in self._parts.values():
            part.live = False
        with contextlib.suppress(kerr.KafkaError, TimeoutError):
            await asyncio.wait_for(self._consumer.stop(), 10)
        self._adapter.forget(self)


# -- the adapter ----------------------------------------------------------------------------------


class KafkaAdapter:
    """The Kafka backend (``kafka://host:9092[,host2:9092]?options``)."""

    def __init__(self, url: str, **options: str) -> None:
        self._url = url
        self._bootstrap = _bootstrap(url)
        self.settings, self._client_options = _split_options(url, options)
        userinfo = urlsplit(url)
        if userinfo.username and "sasl_plain_username" not in options:
            for client_options in self._client_options.values():
                client_options.setdefault("security_protocol", "SASL_PLAINTEXT")
                client_options["sasl_plain_username"] = userinfo.username
                client_options["sasl_plain_password"] = userinfo.password or ""
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._subscriptions: set[_KafkaSubscription] = set()
        self._topics: dict[str, asyncio.Future[None]] = {}
        self._delete_records = True
        self._closed = False

    @property
    def url(self) -> str:
        return mask_url(self._url)

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    def _options(self, client: str, **extra: Any) -> dict[str, Any]:
        return {
            "bootstrap_servers": self._bootstrap,
            "client_id": "choreograph",
            **extra,
            **self._client_options[client],
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._producer is not None:
            return
        self._closed = False
        try:
            self._producer = await self._start_producer()
            self._admin = AIOKafkaAdminClient(**self._options("admin"))
            await self._admin.start()
        except kerr.KafkaError as exc:
            await self.close()
            raise translate_error(exc, self._url, "connecting") from exc

    async def _start_producer(self) -> AIOKafkaProducer:
        mode = self.settings.idempotence
        servers = tuple(self._bootstrap)
        if mode == "true" or (mode == "auto" and servers not in _NOT_IDEMPOTENT):
            producer = AIOKafkaProducer(
                **self._options("producer", acks="all", enable_idempotence=True)
            )
            try:
                await producer.start()
                return producer
            except (
                kerr.UnknownError,
                kerr.UnsupportedVersionError,
                kerr.ClusterAuthorizationFailedError,
            ) as exc:
                await producer.stop()
                _NOT_IDEMPOTENT.add(servers)
                if mode == "true":
                    raise ConfigurationError(
                        f"Kafka at {self.url} refused an idempotent producer ({exc!r}); "
                        "set idempotence=auto or idempotence=false"
                    ) from exc
                _log.warning(
                    "kafka broker refused an idempotent producer; publishing with "
                    "acks=all without idempotence",
                    url=self.url,
                    error=repr(exc),
                )
        producer = AIOKafkaProducer(**self._options("producer", acks="all"))
        await producer.start()
        return producer

    async def close(self) -> None:
        self._closed = True
        for sub in list(self._subscriptions):
            await sub.close()
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if producer is not None:
            with contextlib.suppress(kerr.KafkaError):
                await producer.stop()  # flushes what is still in flight
        if admin is not None:
            with contextlib.suppress(kerr.KafkaError):
                await admin.close()

    def forget(self, sub: _KafkaSubscription) -> None:
        self._subscriptions.discard(sub)

    def _require(self) -> tuple[AIOKafkaProducer, AIOKafkaAdminClient]:
        if self._producer is None or self._admin is None:
            state = "closed" if self._closed else "not connected (call connect())"
            raise ClosedError(f"the Kafka adapter for {self.url} is {state}")
        return self._producer, self._admin

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, topic: str, event: Event, *, ttl: float | None = None) -> None:
        producer, _ = self._require()
        if topic not in self._topics or not self._topics[topic].done():
            await self._ensure_topic(topic)
        key, headers, value = to_kafka(event)
        deadline = time.monotonic() + self.settings.publish_timeout_ms / 1000
        while True:
            try:
                await (await producer.send(topic, value, key=key, headers=headers))
                return
            except kerr.KafkaError as exc:
                if not _retriable(exc) or time.monotonic() > deadline:
                    raise translate_error(exc, self._url, f"publishing to {topic!r}") from exc
                _log.info("kafka publish failed; retrying", topic=topic, error=repr(exc))
                await asyncio.sleep(0.25)

    async def _ensure_topic(self, topic: str) -> None:
        future = self._topics.get(topic)
        if future is None or (future.done() and future.exception() is not None):
            future = self._topics[topic] = asyncio.ensure_future(self._create(topic, None))
        await asyncio.shield(future)

    # -- subscribing -------------------------------------------------------------------------

    async def subscribe(
        self,
        topics: Sequence[str],
        group: str,
        *,
        from_beginning: bool = False,
        prefetch: int = 100,
    ) -> _KafkaSubscription:
        self._require()
        for topic in topics:
            await self._ensure_topic(topic)
        consumer = AIOKafkaConsumer(
            **self._options(
                "consumer",
                group_id=self.settings.group_prefix + group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
        )
        sub = _KafkaSubscription(
            self, consumer, topics, group, from_beginning=from_beginning, prefetch=max(1, prefetch)
        )
        self._subscriptions.add(sub)
        try:
            await sub.start()
        except kerr.KafkaError as exc:
            await sub.close()
            raise translate_error(exc, self._url, f"joining group {group!r}") from exc
        return sub

    # -- topics ------------------------------------------------------------------------------

    async def create_topic(self, topic: str, *, partitions: int | None = None) -> None:
        self._require()
        await self._create(topic, partitions)

    async def _create(self, topic: str, partitions: int | None) -> None:
        if not self.settings.auto_create and partitions is None:
            return
        _, admin = self._require()
        count = partitions or self.settings.partitions
        new = NewTopic(topic, count, self.settings.replication_factor)
        deadline = time.monotonic() + 30
        while True:
            try:
                response = await admin.create_topics([new])
            except kerr.KafkaError as exc:  # a stale connection after a broker restart is retried
                if not _retriable(exc) or time.monotonic() > deadline:
                    raise translate_error(exc, self._url, f"creating topic {topic!r}") from exc
                await asyncio.sleep(0.2)
                continue
            code = _topic_error(response)
            error = kerr.for_code(code) if code else None
            if error is None or error is kerr.TopicAlreadyExistsError:
                return
            if not error.retriable or time.monotonic() > deadline:  # a deletion still in progress
                raise translate_error(error(), self._url, f"creating topic {topic!r}")
            await asyncio.sleep(0.2)

    async def list_topics(self) -> list[TopicInfo]:
        _, admin = self._require()
        try:
            names = sorted(n for n in await admin.list_topics() if not n.startswith("__"))
            partitions = await self._partitions(names)
            counts = await self._counts(partitions)
        except kerr.KafkaError as exc:
            raise translate_error(exc, self._url, "listing topics") from exc
        return [TopicInfo(n, messages=counts.get(n), partitions=len(partitions[n])) for n in names]

    async def _partitions(self, names: Iterable[str]) -> dict[str, list[TopicPartition]]:
        _, admin = self._require()
        names = list(names)
        if not names:
            return {}
        described = await admin.describe_topics(names)
        return {
            d["topic"]: [TopicPartition(d["topic"], p["partition"]) for p in d["partitions"]]
            for d in described
            if d["error_code"] == 0
        }

    async def _counts(self, partitions: Mapping[str, list[TopicPartition]]) -> dict[str, int]:
        tps = [tp for group in partitions.values() for tp in group]
        if not tps:
            return {}
        async with self._reader() as reader:
            first = await reader.beginning_offsets(tps)
            last = await reader.end_offsets(tps)
        counts = dict.fromkeys(partitions, 0)
        for tp in tps:
            counts[tp.topic] += last[tp] - first[tp]
        return counts

    @contextlib.asynccontextmanager
    async def _reader(self) -> AsyncIterator[AIOKafkaConsumer]:
        reader = AIOKafkaConsumer(
            **self._options("consumer", group_id=None, enable_auto_commit=False)
        )
        await reader.start()
        try:
            yield reader
        finally:
            await reader.stop()

    # -- dead letters ------------------------------------------------------------------------

    async def browse(self, topic: str, *, limit: int = 100) -> list[Event]:
        self._require()
        try:
            tps = (await self._partitions([topic])).get(topic, [])
            if not tps or limit <= 0:
                return []
            async with self._reader() as reader:
                records = await _read_retained(reader, tps, limit)
        except kerr.KafkaError as exc:
            raise translate_error(exc, self._url, f"reading {topic!r}") from exc
        records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        events = []
        for record in records[:limit]:
            delivery = _delivery(_Partition.__new__(_Partition), record)
            if delivery.event is not None:
                events.append(delivery.event)
        return events

    async def purge(self, topic: str, ids: Collection[str] | None = None) -> int:
        self._require()
        if ids is not None:
            raise CapabilityError(
                f"Kafka topics cannot lose single events; purge all of {topic} instead"
            )
        try:
            tps = (await self._partitions([topic])).get(topic, [])
            if not tps:
                return 0
            async with self._reader() as reader:
                first = await reader.beginning_offsets(tps)
                last = await reader.end_offsets(tps)
            count: int = sum(last[tp] - first[tp] for tp in tps)
            if count:
                await self._truncate(topic, tps, last)
        except kerr.KafkaError as exc:
            raise translate_error(exc, self._url, f"purging {topic!r}") from exc
        return count

    async def _truncate(
        self, topic: str, tps: list[TopicPartition], last: Mapping[TopicPartition, int]
    ) -> None:
        _, admin = self._require()
        if self._delete_records:
            try:
                await admin.delete_records({tp: RecordsToDelete(last[tp]) for tp in tps})
                return
            except kerr.KafkaError as exc:  # e.g. Tansu closes the connection on DeleteRecords
                self._delete_records = False
                _log.warning(
                    "kafka DeleteRecords unsupported; purging by recreating the topic",
                    topic=topic,
                    error=repr(exc),
                )
        await admin.delete_topics([topic])
        self._topics.pop(topic, None)
        await self._create(topic, len(tps))


async def _read_retained(
    reader: AIOKafkaConsumer, tps: list[TopicPartition], limit: int
) -> list[Any]:
    """Up to ``limit`` records from the start of each partition, without a group."""
    reader.assign(tps)
    first = await reader.beginning_offsets(tps)
    last = await reader.end_offsets(tps)
    wanted = {tp: min(last[tp], first[tp] + limit) for tp in tps if last[tp] > first[tp]}
    for tp in tps:
        reader.seek(tp, first[tp])
    records: list[Any] = []
    while wanted:
        batch = await reader.getmany(*wanted, timeout_ms=500)
        for tp, found in batch.items():
            records.extend(r for r in found if r.offset < wanted.get(tp, -1))
        for tp in list(wanted):
            if await reader.position(tp) >= wanted[tp]:
                del wanted[tp]
    return records


def _topic_error(response: Any) -> int:
    for entry in getattr(response, "topic_errors", ()) or ():
        if entry[1]:
            return int(entry[1])
    return 0
