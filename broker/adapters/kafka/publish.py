"""The publishing side of the Kafka adapter: one event at a time, or a list as record batches.

A single publish is one record (:meth:`KafkaPublisher.send`: keyless ones to a sticky
partition, appended to the producer's accumulator directly where aiokafka allows it) and its
future, tried once straight away by the adapter's own ``publish`` (no coroutine more per
event); only a failure comes here (:meth:`KafkaPublisher.retry`), and a retriable one enters
the retry loop (:func:`~broker.adapters.kit.keep_trying`) until ``publish_timeout_ms``.

A list is split by partition (the producer's partitioner for keyed events; the
keyless events of a call fill a record batch for one partition chosen at random, as the Java
client's sticky partitioner does, and the next batch for the next partition: the producer
sends one batch per partition at a time), encoded one event at a time straight into record
batches (``producer.create_batch``: no list of records outlives the loop, so the garbage
collector has little to walk) and handed over with ``producer.send_batch``: the per-record
work of ``send`` is skipped and every batch is in flight before the first ack is awaited.
Keyless events are handed over batch by batch as they are encoded, and a list of at least
:data:`SPLIT_EVENTS` of them fills its first batch with half of them only, which goes on the
wire before the other half is encoded: the broker stores the first half while the client
encodes the second (aiokafka has one produce request in flight per broker, so the halves
are two requests; a smaller list gains less than a request costs).

A batch that fails with a retriable error is encoded, built and sent again (the others keep
their outcome), so events of one key keep their order unless a retry puts a failed batch
behind a later one.

``send`` refuses a record over the producer's ``max_request_size``; batches built here skip
that check, so :meth:`KafkaPublisher.publish_many` makes it itself: such an event fails alone
(:func:`oversized`, the same error a single publish of it raises) and the others are sent.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kerr
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition

from broker.adapters.kafka.errors import retriable, translate_error
from broker.adapters.kafka.wire import iter_records, record_key
from broker.adapters.kit import Backoff, keep_trying, keep_trying_each
from broker.envelope import Event
from broker.observability import get_logger

__all__ = ["KafkaPublisher", "oversized"]

_log = get_logger("choreo.kafka")
_BACKOFF = Backoff(initial=0.1, maximum=1.0)
Record = tuple[bytes | None, list[tuple[str, bytes]], bytes]
_estimate = DefaultRecordBatchBuilder.estimate_size_in_bytes
#: Bytes of keyless single publishes sent to one partition before another is chosen.
STICKY_BYTES = 256 * 1024
#: Seconds a sticky partition is kept at most (a slow publisher still moves on, and a
#: partition that lost its leader is left within that time).
STICKY_SECONDS = 1.0
#: Keyless events of a ``publish_many`` call from which the list is sent as two record
#: batches: the first half's goes on the wire while the second half is encoded.
SPLIT_EVENTS = 256
#: Turns of the event loop that take a batch handed to aiokafka onto the wire: its sender
#: task wakes up, drains the batch into a produce request task, which writes it.
_SENDER_TURNS = 3


class _Direct:
    """The producer internals :meth:`KafkaPublisher.send` appends records with."""

    __slots__ = ("accumulator", "partitions", "timeout")

    def __init__(self, accumulator: Any, timeout: float) -> None:
        self.accumulator = accumulator
        self.timeout = timeout
        self.partitions: dict[tuple[str, int], TopicPartition] = {}

    @classmethod
    def of(cls, producer: Any) -> _Direct | None:
        """The internals of ``producer`` when they look as this module expects (aiokafka
        0.14's), else None: every record then goes through ``send``."""
        accumulator = getattr(producer, "_message_accumulator", None)
        add = getattr(accumulator, "add_message", None)
        parameters = list(inspect.signature(add).parameters) if callable(add) else []
        transactions = getattr(producer, "_txn_manager", None)
        timeout_ms = getattr(producer, "_request_timeout_ms", None)
        if (
            add is None
            or not inspect.iscoroutinefunction(add)
            or parameters[:4] != ["tp", "key", "value", "timeout"]
            or "headers" not in parameters
            or getattr(producer, "_key_serializer", True) is not None
            or getattr(producer, "_value_serializer", True) is not None
            or getattr(transactions, "transactional_id", None) is not None
            or not isinstance(timeout_ms, int)
        ):
            return None
        return cls(accumulator, timeout_ms / 1000)

    def partition(self, topic: str, partition: int) -> TopicPartition:
        """The (shared) TopicPartition of ``topic``'s ``partition``."""
        tp = self.partitions.get((topic, partition))
        if tp is None:
            tp = self.partitions[(topic, partition)] = TopicPartition(topic, partition)
        return tp


def _inner_append(builder: Any) -> Callable[..., Any] | None:
    """The record batch builder's own ``append(offset, timestamp, key, value, headers)`` under
    aiokafka's ``BatchBuilder`` (its per-record wrapper only serializes, which ours does not
    need, and counts offsets, which :meth:`KafkaPublisher._batches` does), or None when this
    aiokafka builds batches otherwise."""
    inner = getattr(builder, "_builder", None)
    append = getattr(inner, "append", None)
    if (
        append is None
        or getattr(builder, "_relative_offset", None) != 0
        or getattr(builder, "_key_serializer", True) is not None
        or getattr(builder, "_value_serializer", True) is not None
        or builder.closed()
    ):
        return None
    return append  # type: ignore[no-any-return]


def _retrying(topic: str) -> Callable[[BaseException, float], None]:
    def log(exc: BaseException, _: float) -> None:
        _log.info("kafka publish failed; retrying", topic=topic, error=repr(exc))

    return log


class KafkaPublisher:
    """Publishes with one started producer, awaiting ``acks=all``."""

    def __init__(
        self, producer: AIOKafkaProducer, url: str, timeout: float, partitioner: Any = None
    ) -> None:
        self.producer = producer
        self._url = url
        self._timeout = timeout
        self._partitioner = partitioner or DefaultPartitioner()
        #: Per topic, the sticky partition of keyless single publishes, the bytes left and
        #: the time (monotonic) before another is chosen.
        self._sticky: dict[str, tuple[int, list[int], float]] = {}
        self._direct = _Direct.of(producer)
        #: The producer's max_request_size: the largest record it may send.
        self._max_size: int = getattr(producer, "_max_request_size", 1048576)
        #: Whether a record that fits in a started batch may still be over _max_size (a
        #: max_batch_size above max_request_size, or one this module cannot read).
        batch_size = getattr(getattr(producer, "_message_accumulator", None), "_batch_size", None)
        self._check_every = not isinstance(batch_size, int) or batch_size > self._max_size

    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> Awaitable[asyncio.Future[Any]]:
        """``producer.send`` of one record: a keyless one to the sticky partition, a keyed one
        where the partitioner puts its key (as ``send`` would), appended to the producer's
        record accumulator directly where this aiokafka allows it (no serializers, not
        transactional, the topic's partitions known; else ``producer.send`` itself). That skips
        ``send``'s metadata wait, serializers, partitioner lists, debug log line and a
        coroutine (its size check is kept: a record over ``max_request_size`` raises
        :func:`oversized` when awaited): about 3 us of CPU per event."""
        size = _estimate(key, value, headers)
        if size > self._max_size:
            return _raise(oversized(size, self._max_size))
        partition = self.sticky(topic, len(value)) if key is None else self._keyed(topic, key)
        direct = self._direct
        if partition is None or direct is None:
            sending: Awaitable[asyncio.Future[Any]] = self.producer.send(
                topic, value, key=key, partition=partition, headers=headers
            )
            return sending
        tp = direct.partition(topic, partition)
        sending = direct.accumulator.add_message(tp, key, value, direct.timeout, headers=headers)
        return sending

    def _keyed(self, topic: str, key: bytes) -> int | None:
        """The partition of a keyed record, chosen as ``producer.send`` chooses it (None while
        the topic's partitions are unknown)."""
        if self._direct is None:
            return None
        cluster = self.producer.client.cluster
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            return None
        available = cluster.available_partitions_for_topic(topic) or ()
        partition: int = self._partitioner(key, sorted(partitions), sorted(available))
        return partition

    def sticky(self, topic: str, size: int) -> int | None:
        """The partition for a keyless record of ``size`` bytes: one partition until about a
        record batch (:data:`STICKY_BYTES`) went to it or :data:`STICKY_SECONDS` passed,
        then another at random among those with a leader, as the Java client's sticky
        partitioner does; concurrent publishes then fill one batch instead of one per
        partition (about 2 us of CPU less per event). None while the topic's partitions are
        unknown (the producer's partitioner chooses)."""
        state = self._sticky.get(topic)
        if state is None or state[1][0] <= 0 or time.monotonic() > state[2]:
            return self._next_sticky(topic, size)
        state[1][0] -= size
        return state[0]

    def _next_sticky(self, topic: str, size: int) -> int | None:
        partitions = self.producer.client.cluster.available_partitions_for_topic(topic)
        if not partitions:
            self._sticky.pop(topic, None)
            return None
        partition: int = random.choice(sorted(partitions))
        deadline = time.monotonic() + STICKY_SECONDS
        self._sticky[topic] = (partition, [STICKY_BYTES - size], deadline)
        return partition

    def _error(self, exc: BaseException, topic: str) -> Exception:
        if isinstance(exc, kerr.KafkaError):
            return translate_error(exc, self._url, f"publishing to {topic!r}")
        return exc if isinstance(exc, Exception) else RuntimeError(repr(exc))

    # -- one event: after its first attempt failed ------------------------------------------

    async def retry(self, topic: str, record: Record, error: kerr.KafkaError) -> None:
        """After a first attempt failed with ``error``: try again while that is retriable,
        until ``publish_timeout_ms``; raises the broker error once retries end."""
        if not retriable(error):
            raise self._error(error, topic) from error
        key, headers, value = record
        producer = self.producer

        async def attempt(_: float) -> None:
            await (await producer.send(topic, value, key=key, headers=headers))

        try:
            await keep_trying(
                attempt,
                timeout=self._timeout,
                retriable=retriable,
                backoff=_BACKOFF,
                before_retry=_retrying(topic),
            )
        except kerr.KafkaError as exc:
            raise self._error(exc, topic) from exc

    # -- a list ----------------------------------------------------------------------------

    async def publish_many(self, topic: str, events: Sequence[Event]) -> list[Exception | None]:
        """Send ``events`` as record batches; one outcome per event."""
        outcomes: list[Exception | None] = [None] * len(events)
        refused: dict[int, Exception] = {}  # data JSON cannot hold: never sent
        failed = await keep_trying_each(
            lambda indices, _: self._send_batches(topic, events, indices, refused),
            range(len(events)),
            timeout=self._timeout,
            retriable=retriable,
            backoff=_BACKOFF,
            before_retry=_retrying(topic),
        )
        for index, error in failed.items():
            outcomes[index] = self._error(error, topic)
        for index, exc in refused.items():  # (over max_request_size: as a single publish)
            outcomes[index] = self._error(exc, topic) if isinstance(exc, kerr.KafkaError) else exc
        return outcomes

    async def _send_batches(
        self,
        topic: str,
        events: Sequence[Event],
        indices: list[int],
        refused: dict[int, Exception],
    ) -> dict[int, BaseException]:
        """Encode the events (by index) into batches per partition, send them all, await
        every ack; the failed events by index (those that cannot be encoded go to
        ``refused`` instead)."""
        producer = self.producer
        direct = self._direct
        known = producer.client.cluster.partitions_for_topic(topic) if direct else None
        partitions = sorted(known or await producer.partitions_for(topic))
        by_partition, keyless = self._assign(events, indices, partitions, refused)
        at = int(time.time() * 1000)  # every record's timestamp: the time of the call
        batches = [
            (partition, batch)
            for partition, members in by_partition.items()
            for batch in self._batches(events, members, at, refused)
        ]
        sent: list[tuple[asyncio.Future[Any], list[int]]] = []
        hand_over = self._hand_over(topic, sent, direct if known else None)
        for partition, batch in _round_robin(batches):
            await hand_over(partition, batch)
        if keyless:  # batch k to the k-th partition from a random one
            first, count = random.randrange(len(partitions)), len(partitions)
            split = len(keyless) >= SPLIT_EVENTS
            limit = len(keyless) // 2 if split else 0
            for k, batch in enumerate(self._batches(events, keyless, at, refused, limit)):
                await hand_over(partitions[(first + k) % count], batch)
                if k == 0 and split:
                    await _on_the_wire()
        results = await asyncio.gather(*(future for future, _ in sent), return_exceptions=True)
        failed: dict[int, BaseException] = {}
        for result, (_, members) in zip(results, sent, strict=True):
            if isinstance(result, BaseException):
                failed.update(dict.fromkeys(members, result))
        return failed

    def _hand_over(
        self,
        topic: str,
        sent: list[tuple[asyncio.Future[Any], list[int]]],
        direct: _Direct | None,
    ) -> Callable[[int, tuple[Any, list[int]]], Awaitable[None]]:
        """``hand_over(partition, (builder, members))``: the batch given to the producer
        for ``partition`` of ``topic``, its future and indices added to ``sent``; through
        the accumulator directly where ``direct`` (``send_batch`` without its metadata wait
        and log line), else ``send_batch``."""
        producer = self.producer

        async def hand_over(partition: int, batch: tuple[Any, list[int]]) -> None:
            builder, members = batch
            if direct is not None:
                tp = direct.partition(topic, partition)
                future = await direct.accumulator.add_batch(builder, tp, direct.timeout)
            else:
                future = await producer.send_batch(builder, topic, partition=partition)
            sent.append((future, members))

        return hand_over

    def _assign(
        self,
        events: Sequence[Event],
        indices: list[int],
        partitions: list[int],
        refused: dict[int, Exception],
    ) -> tuple[dict[int, list[int]], list[int]]:
        """The indices of the keyed events per partition (the partitioner's choice), in
        order, and those of the keyless ones (a key that cannot be encoded goes to
        ``refused``)."""
        for index in indices:  # (a loop: a third cheaper than any() of a generator)
            if events[index].extensions.get("partitionkey") is not None:
                break
        else:
            return {}, indices  # the common case: no per-event work
        by_partition: dict[int, list[int]] = {}
        keyless: list[int] = []
        partitioner = self._partitioner
        for index in indices:
            try:
                key = record_key(events[index])
            except ValueError as exc:  # text UTF-8 cannot hold
                refused[index] = exc
                continue
            if key is None:
                keyless.append(index)
            else:
                partition = partitioner(key, partitions, partitions)
                by_partition.setdefault(partition, []).append(index)
        return by_partition, keyless

    def _batches(
        self,
        events: Sequence[Event],
        members: list[int],
        timestamp: int,
        refused: dict[int, Exception],
        first: int = 0,
    ) -> Iterator[tuple[Any, list[int]]]:
        """The events of one partition encoded into as few batches as they fit in, each with
        the indices it holds, with ``timestamp`` (ms) where the builder is reached directly
        (aiokafka's wrapper stamps each record with its own time); the first batch holds at
        most ``first`` events when that is not 0. Each batch is yielded as soon as it is
        closed, before the next event is encoded. An event that cannot be encoded goes to
        ``refused``, and so does one over ``max_request_size``: the first record of a batch
        always fits whatever its size, so it is checked as ``send`` checks it (every record
        when a batch may outgrow that limit)."""
        create = self.producer.create_batch
        every, fits = self._check_every, self._fits
        builder, taken = create(), list[int]()
        direct = self._direct is not None and _inner_append(builder) is not None
        append, take = _appender(builder, direct), taken.append
        count, limit = 0, first or sys.maxsize  # records in the batch, and at most
        for index, (key, headers, value) in iter_records(events, members, refused):
            if every and not fits(index, key, value, headers, refused):
                continue
            if count:
                if count != limit and append(count, timestamp, key, value, headers) is not None:
                    take(index)
                    count += 1
                    continue
                yield _closed(builder, taken, direct)  # full: this one starts the next
                builder, taken, limit = create(), [], sys.maxsize
                append, take = _appender(builder, direct), taken.append
            if not every and not fits(index, key, value, headers, refused):
                count = 0
                continue
            append(0, timestamp, key, value, headers)
            take(index)
            count = 1
        if taken:
            yield _closed(builder, taken, direct)

    def _fits(
        self,
        index: int,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        refused: dict[int, Exception],
    ) -> bool:
        """Whether a record is within ``max_request_size``; if not, ``refused[index]`` is
        its error."""
        size = _estimate(key, value, headers)
        if size <= self._max_size:
            return True
        refused[index] = oversized(size, self._max_size)
        return False


def _appender(builder: Any, direct: bool) -> Callable[..., Any]:
    """``append(offset, timestamp, key, value, headers)`` of ``builder``: its inner builder's
    where ``direct``, else through aiokafka's wrapper (which numbers and stamps each record
    itself); None when the batch is full."""
    if direct:
        return builder._builder.append  # type: ignore[no-any-return]

    def wrapped(_: int, __: int, key: bytes | None, value: bytes, headers: Any) -> Any:
        return builder.append(key=key, value=value, timestamp=None, headers=headers)

    return wrapped


def _closed(builder: Any, members: list[int], direct: bool) -> tuple[Any, list[int]]:
    """``builder`` and the indices of its records, sealed where filled directly."""
    if direct:
        _seal(builder, len(members))
    return builder, members


def oversized(size: int, limit: int) -> kerr.MessageSizeTooLargeError:
    """The error of a record of ``size`` bytes over the producer's ``max_request_size``."""
    return kerr.MessageSizeTooLargeError(
        f"the event is {size} bytes when serialized, more than max_request_size={limit} "
        "(a URL option; the broker's message.max.bytes caps it too)"
    )


async def _on_the_wire() -> None:
    """Let the producer's sender write the batches handed over so far (the broker then
    stores them while this task encodes the next)."""
    for _ in range(_SENDER_TURNS):
        await asyncio.sleep(0)


async def _raise(error: Exception) -> Any:
    raise error


def _seal(builder: Any, count: int) -> None:
    """Close a batch filled through its inner builder, with the record count its wrapper
    would have kept."""
    builder._relative_offset = count
    builder.close()


def _round_robin(batches: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """Batches ordered first of every partition, then second...: the producer waits for a
    partition's earlier batch to be sent before it takes the next, so none waits behind
    another partition's queue."""
    rank: dict[int, int] = {}
    ordered = []
    for partition, batch in batches:
        rank[partition] = rank.get(partition, -1) + 1
        ordered.append((rank[partition], partition, batch))
    ordered.sort(key=lambda item: (item[0], item[1]))
    return [(partition, batch) for _, partition, batch in ordered]
