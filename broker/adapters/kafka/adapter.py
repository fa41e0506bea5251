"""The Kafka adapter: a producer and an admin client per adapter, one consumer per
subscription (:mod:`broker.adapters.kafka.consumer`), and topic inspection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Collection, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kerr
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete

from broker.adapters.kafka.consumer import KafkaSubscription
from broker.adapters.kafka.errors import retriable, translate_error
from broker.adapters.kafka.publish import KafkaPublisher
from broker.adapters.kafka.settings import bootstrap_servers, split_options
from broker.adapters.kafka.wire import decode_record, encode_event
from broker.adapters.kit import Backoff, BaseAdapter, keep_trying
from broker.envelope import Event
from broker.errors import (
    BrokerUnavailableError,
    CapabilityError,
    ClosedError,
    ConfigurationError,
)
from broker.observability import get_logger
from broker.ports import Capabilities, TopicInfo

__all__ = ["CAPABILITIES", "KafkaAdapter"]

#: Ordered keys and replay; no native TTL or DLQ, a log cannot lose single records, and Kafka
#: does not count deliveries.
CAPABILITIES = Capabilities(ordered_keys=True, replay=True)

_log = get_logger("choreo.kafka")
_BACKOFF = Backoff(initial=0.1, maximum=1.0)
_CREATE_TIMEOUT = 30.0
_CLOSE_TIMEOUT = 10.0
#: How many groups' offsets are asked for at once when listing topics (every group is asked).
_GROUPS_AT_ONCE = 50
#: Default longest wait of a fetch for new records (aiokafka's is 500 ms). Apache Kafka answers
#: a fetch as soon as records arrive, whatever the wait; Tansu and some Kafka-compatible brokers
#: answer only when the wait is over, so this bounds their delivery latency. Raise it for many
#: idle consumers on Apache Kafka (an idle consumer sends about 1000/N fetches a second).
FETCH_MAX_WAIT_MS = 10
#: Default largest record batch (aiokafka's is 16 KiB): ``publish_many`` and busy publishers
#: send fewer, larger produce requests; ``linger_ms`` stays 0, so no event waits for a batch.
PRODUCER_BATCH_BYTES = 256 * 1024
# Bootstrap lists whose broker refused an idempotent producer (Tansu): probe once per process.
_NOT_IDEMPOTENT: set[tuple[str, ...]] = set()
# What brokers answer to InitProducerId when they cannot do idempotence (Tansu: UnknownError).
_REFUSED_IDEMPOTENCE = (
    kerr.UnknownError,
    kerr.UnsupportedVersionError,
    kerr.ClusterAuthorizationFailedError,
)


# -- the adapter ----------------------------------------------------------------------------------


class KafkaAdapter(BaseAdapter):
    """The Kafka backend (``kafka://host:9092[,host2:9092]?options``)."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url)
        self._url = url
        self._bootstrap = bootstrap_servers(url)
        self.settings, self._client_options = split_options(url, options)
        userinfo = urlsplit(url)
        if userinfo.username and "sasl_plain_username" not in self._client_options["producer"]:
            for client_options in self._client_options.values():
                client_options.setdefault("security_protocol", "SASL_PLAINTEXT")
                client_options["sasl_plain_username"] = userinfo.username
                client_options["sasl_plain_password"] = userinfo.password or ""
        self._producer: AIOKafkaProducer | None = None
        self._publisher: KafkaPublisher | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._subscriptions: set[KafkaSubscription] = set()
        self._topics: dict[str, asyncio.Future[None]] = {}
        self._delete_records = True
        #: Where each partition of a topic ended when :meth:`browse` last read it whole: what a
        #: replay's :meth:`purge` may delete (a record appended since is not the replay's).
        self._browsed: dict[str, dict[TopicPartition, int]] = {}
        self._closed = False

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
        limit = self.settings.connect_timeout_ms
        try:
            await asyncio.wait_for(self._start_clients(), limit / 1000)
        except kerr.KafkaError as exc:
            await self.close()
            raise translate_error(exc, self._url, "connecting") from exc
        except TimeoutError as exc:
            await self.close()
            raise BrokerUnavailableError(
                f"cannot reach Kafka at {self.url} while connecting (no answer within {limit} "
                "ms); check that the host and port are a Kafka listener (not another service) "
                "and that the broker runs, or raise connect_timeout_ms"
            ) from exc

    async def _start_clients(self) -> None:
        self._producer = producer = await self._start_producer()
        self._publisher = KafkaPublisher(
            producer,
            self._url,
            self.settings.publish_timeout_ms / 1000,
            self._client_options["producer"].get("partitioner"),
        )
        self._admin = AIOKafkaAdminClient(**self._options("admin"))
        await self._admin.start()

    async def _start_producer(self) -> AIOKafkaProducer:
        mode = self.settings.idempotence
        servers = tuple(self._bootstrap)
        if mode == "true" or (mode == "auto" and servers not in _NOT_IDEMPOTENT):
            try:
                return await _started(
                    self._options(
                        "producer",
                        acks="all",
                        enable_idempotence=True,
                        max_batch_size=PRODUCER_BATCH_BYTES,
                    )
                )
            except _REFUSED_IDEMPOTENCE as exc:
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
        return await _started(
            self._options("producer", acks="all", max_batch_size=PRODUCER_BATCH_BYTES)
        )

    async def close(self) -> None:
        self._closed = True
        for sub in list(self._subscriptions):
            await sub.close()
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        self._publisher = None
        # Closing is bounded: a broker that stops answering must not hold a shutdown forever.
        if producer is not None:
            flush = self.settings.publish_timeout_ms / 1000
            await _bounded_close(producer.stop(), flush, "producer")
        if admin is not None:
            await _bounded_close(admin.close(), _CLOSE_TIMEOUT, "admin client")

    def forget(self, sub: KafkaSubscription) -> None:
        self._subscriptions.discard(sub)

    def _require(self) -> tuple[AIOKafkaProducer, AIOKafkaAdminClient]:
        if self._producer is None or self._admin is None:
            state = "closed" if self._closed else "not connected (call connect())"
            raise ClosedError(f"the Kafka adapter for {self.url} is {state}")
        return self._producer, self._admin

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, topic: str, event: Event, *, ttl: float | None = None) -> None:
        publisher = self._publisher
        created = self._topics.get(topic)  # _ready(topic), inlined: this runs per event
        if publisher is None or created is None or not created.done():
            publisher = await self._publisher_for(topic)
        # tried once here (no coroutine more per event); the publisher retries a failure
        record = encode_event(event)
        key, headers, value = record
        try:
            await (await publisher.send(topic, key, value, headers))
        except kerr.KafkaError as exc:
            await publisher.retry(topic, record, exc)

    async def publish_many(
        self, topic: str, events: Sequence[Event], *, ttl: float | None = None
    ) -> list[Exception | None]:
        publisher = await self._publisher_for(topic)
        return await publisher.publish_many(topic, events)

    def _ready(self, topic: str) -> bool:
        future = self._topics.get(topic)
        return future is not None and future.done()

    async def _publisher_for(self, topic: str) -> KafkaPublisher:
        self._require()
        if not self._ready(topic):
            await self._ensure_topic(topic)
        assert self._publisher is not None
        return self._publisher

    async def _ensure_topic(self, topic: str) -> None:
        future = self._topics.get(topic)
        if future is None or (future.done() and future.exception() is not None):
            future = self._topics[topic] = asyncio.ensure_future(self._create(topic, None))
        await asyncio.shield(future)

    # -- subscribing -------------------------------------------------------------------------

    async def open_subscription(
        self, topics: tuple[str, ...], group: str, from_beginning: bool, prefetch: int
    ) -> KafkaSubscription:
        self._require()
        for topic in topics:
            await self._ensure_topic(topic)
        consumer = AIOKafkaConsumer(
            **self._options(
                "consumer",
                group_id=self.settings.group_prefix + group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            )
        )
        sub = KafkaSubscription(
            self, consumer, topics, group, from_beginning=from_beginning, prefetch=prefetch
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

        async def attempt(_: float) -> None:
            code = _topic_error(await admin.create_topics([new]))
            error = kerr.for_code(code) if code else None
            if error is not None and error is not kerr.TopicAlreadyExistsError:
                raise error()  # a deletion still in progress is retriable

        try:  # a stale connection after a broker restart is retried too
            await keep_trying(
                attempt, timeout=_CREATE_TIMEOUT, retriable=_retriable, backoff=_BACKOFF
            )
        except kerr.KafkaError as exc:
            raise translate_error(exc, self._url, f"creating topic {topic!r}") from exc

    async def list_topics(self) -> list[TopicInfo]:
        _, admin = self._require()
        try:
            names = sorted(n for n in await admin.list_topics() if not n.startswith("__"))
            partitions = await self._partitions(names)
            counts = await self._counts(partitions)
            groups = await self._groups(partitions)
        except kerr.KafkaError as exc:
            raise translate_error(exc, self._url, "listing topics") from exc
        return [
            TopicInfo(
                name,
                messages=counts.get(name),
                partitions=len(partitions.get(name, ())),
                groups=tuple(sorted(groups.get(name, ()))),
            )
            for name in names
        ]

    async def _groups(self, partitions: Mapping[str, list[TopicPartition]]) -> dict[str, set[str]]:
        """Per topic, the groups (of this ``group_prefix``) holding a committed offset in it."""
        _, admin = self._require()
        prefix = self.settings.group_prefix
        listed = await admin.list_consumer_groups()
        names = sorted(g[0] for g in listed if g[0].startswith(prefix))
        tps = [tp for group in partitions.values() for tp in group]
        if not names or not tps:
            return {}
        found: list[Any] = []
        for start in range(0, len(names), _GROUPS_AT_ONCE):  # all of them: a group left out
            found += await asyncio.gather(  # would read as one that never read the topic
                *(
                    admin.list_consumer_group_offsets(g, partitions=tps)
                    for g in names[start : start + _GROUPS_AT_ONCE]
                ),
                return_exceptions=True,
            )
        by_topic: dict[str, set[str]] = {}
        for name, offsets in zip(names, found, strict=True):
            if isinstance(offsets, BaseException):
                continue
            for tp, committed in offsets.items():
                if committed.offset >= 0:
                    by_topic.setdefault(tp.topic, set()).add(name[len(prefix) :])
        return by_topic

    async def _existing_partitions(self, topic: str) -> list[TopicPartition]:
        """The partitions of ``topic``, none when the cluster lacks it: a metadata request naming
        a missing topic creates it (Tansu, and Kafka's default ``auto.create.topics.enable``), so
        a read of a misspelt name (``dlq ls``, ``saga discover``) would leave that topic behind."""
        _, admin = self._require()
        if topic not in await admin.list_topics():
            return []
        return (await self._partitions([topic])).get(topic, [])

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
            tps = await self._existing_partitions(topic)
            if not tps or limit <= 0:
                return []
            async with self._reader() as reader:
                records, ends = await _read_retained(reader, tps, limit)
        except kerr.KafkaError as exc:
            raise translate_error(exc, self._url, f"reading {topic!r}") from exc
        if len(records) <= limit:  # read whole: each partition up to ``ends``
            self._browsed[topic] = ends
        else:
            self._browsed.pop(topic, None)
        records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        events = []
        for record in records[:limit]:
            event, _ = decode_record(record)
            if event is not None:
                events.append(event)
        return events

    async def purge(
        self, topic: str, ids: Collection[str] | None = None, *, among: int | None = None
    ) -> int:
        """Delete every record of ``topic``. A Kafka log cannot lose single records, so ids
        are refused, unless ``among`` says they are the whole topic as browsed (a replay of a
        whole DLQ): then the records the last :meth:`browse` read go. A record appended since
        (a replayed event that failed again) stays: on a broker with DeleteRecords the records
        before it are deleted; on one without (Tansu: the topic is recreated to empty it) the
        whole topic is kept, with a warning, so the replayed events would be replayed again
        rather than the new dead letter lost."""
        self._require()
        if ids is not None and among is None:
            raise CapabilityError(
                f"Kafka topics cannot lose single events; purge all of {topic} instead"
            )
        browsed = self._browsed.pop(topic, None) if among is not None else None
        try:
            tps = await self._existing_partitions(topic)
            if not tps:
                return 0
            async with self._reader() as reader:
                first = await reader.beginning_offsets(tps)
                last = await reader.end_offsets(tps)
            if among is not None and browsed is None:
                _log.warning(
                    f"could not tell which records of {topic} the replay read: the whole DLQ "
                    f"was kept (check with: choreo dlq ls {topic})",
                    topic=topic,
                )
                return 0
            if browsed is not None and any(last[tp] > browsed.get(tp, 0) for tp in tps):
                upto = {tp: browsed.get(tp, first[tp]) for tp in tps}
                return await self._purge_read(topic, tps, first, upto)
            count: int = sum(last[tp] - first[tp] for tp in tps)
            if count:
                await self._truncate(topic, tps, last)
        except kerr.KafkaError as exc:
            raise translate_error(exc, self._url, f"purging {topic!r}") from exc
        return count

    async def _purge_read(
        self,
        topic: str,
        tps: list[TopicPartition],
        first: Mapping[TopicPartition, int],
        upto: Mapping[TopicPartition, int],
    ) -> int:
        """Delete the records before ``upto`` (what a replay read) and keep those appended
        since: DeleteRecords where the broker has it, else nothing (warned)."""
        count = sum(max(0, upto[tp] - first[tp]) for tp in tps)
        if count and self._delete_records:
            _, admin = self._require()
            try:
                await admin.delete_records(
                    {tp: RecordsToDelete(upto[tp]) for tp in tps if upto[tp] > first[tp]}
                )
                return count
            except kerr.KafkaError as exc:  # e.g. Tansu closes the connection on DeleteRecords
                self._delete_records = False
                _log.debug("kafka DeleteRecords unsupported", topic=topic, error=repr(exc))
        if count:
            _log.warning(
                f"dead letters arrived in {topic} during the replay and this Kafka server cannot "
                "delete records up to a point: the whole DLQ was kept, so the replayed events "
                f"are still in it (check with: choreo dlq ls {topic}; purge once they are handled)",
                topic=topic,
            )
        return 0

    async def delete_topic(self, topic: str) -> None:
        """Delete ``topic`` from the cluster."""
        _, admin = self._require()
        self._topics.pop(topic, None)
        try:
            await admin.delete_topics([topic])
        except kerr.KafkaError as exc:
            raise translate_error(exc, self._url, f"deleting {topic!r}") from exc

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


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, kerr.KafkaError) and retriable(exc)


async def _started(options: dict[str, Any]) -> AIOKafkaProducer:
    """A started producer; a failed start releases what it opened."""
    producer = AIOKafkaProducer(**options)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


async def _read_retained(
    reader: AIOKafkaConsumer, tps: list[TopicPartition], limit: int
) -> tuple[list[Any], dict[TopicPartition, int]]:
    """Up to ``limit`` records from the start of each partition, without a group, and the
    offset each partition was read up to."""
    reader.assign(tps)
    first = await reader.beginning_offsets(tps)
    last = await reader.end_offsets(tps)
    wanted = {tp: min(last[tp], first[tp] + limit) for tp in tps if last[tp] > first[tp]}
    ends = {tp: wanted.get(tp, first[tp]) for tp in tps}
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
    return records, ends


def _topic_error(response: Any) -> int:
    for entry in getattr(response, "topic_errors", ()) or ():
        if entry[1]:
            return int(entry[1])
    return 0


async def _bounded_close(closing: Awaitable[None], timeout: float, what: str) -> None:
    """Await ``closing`` (a producer's flush, an admin client's close) for at most ``timeout``
    seconds; a broker error or a stall is logged, never raised: the caller is shutting down."""
    try:
        await asyncio.wait_for(closing, timeout)
    except (kerr.KafkaError, TimeoutError) as exc:
        _log.warning(f"kafka {what} did not close cleanly", error=repr(exc), timeout=timeout)
