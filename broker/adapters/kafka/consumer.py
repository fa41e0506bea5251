"""The consumer side of the Kafka adapter: a consumer-group member that hands out deliveries,
positions new partitions and commits the highest contiguous acked offset per partition.

A batch subscription (:meth:`KafkaSubscription.merge_partitions`) takes everything the fetcher
holds for every assigned partition at once and merges it by event time, each partition's order
kept, up to the time every partition still behind its high watermark reached
(:class:`broker.adapters.kit.Horizon`): a batch then spans the partitions (and topics) instead
of holding one partition's records after another's, so the events that belong together (a
saga's steps on several topics) arrive in the same batch even when a fetch brought one
partition's backlog further than another's. A lane takes up to ``prefetch`` records at a time
from the fetcher, timed by their ``ce_time`` header and decoded only when handed out (as a
per-event read does): the fetched records wait in the fetcher in their compact form, not as
thousands of decoded events for the garbage collector to walk. An undecodable record is merged
by the time in its header (by decoding, it would have none and come first).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka import errors as kerr

from broker.adapters.kafka.errors import translate_error
from broker.adapters.kafka.settings import KafkaSettings
from broker.adapters.kafka.wire import decode_record, record_headers, record_time
from broker.adapters.kit import (
    BaseSubscription,
    HoldQueue,
    Horizon,
    OffsetTracker,
    event_time,
)
from broker.deferral import is_for_another_group
from broker.delay import DELIVER_AT, held_until
from broker.envelope import Event
from broker.errors import BrokerUnavailableError, EnvelopeError
from broker.observability import get_logger
from broker.ports import Backlog, Delivery

__all__ = ["KafkaSubscription"]

_log = get_logger("choreo.kafka")
#: The longest one fetch waits for records (seconds); the broker may answer sooner.
_FETCH_WAIT = 0.2
#: Seconds a backlog report may take (aiokafka retries a committed-offset fetch forever).
_BACKLOG_TIMEOUT = 10.0


class _Owner(Protocol):
    """What a subscription needs from its adapter."""

    @property
    def url(self) -> str: ...

    settings: KafkaSettings

    def forget(self, sub: KafkaSubscription) -> None: ...


# -- deliveries -----------------------------------------------------------------------------------


class _Partition:
    """One assigned partition of a subscription: deliveries in flight, in offset order."""

    __slots__ = ("behind", "committable", "committed", "held", "live", "sub", "tp", "tracker")

    def __init__(self, sub: KafkaSubscription, tp: TopicPartition) -> None:
        self.sub = sub
        self.tp = tp
        self.tracker: OffsetTracker[_KafkaDelivery] = OffsetTracker()
        self.held = 0  # deliveries of the tracker held back until their delivery time
        self.committable = -1  # offset to commit next (highest contiguous acked + 1)
        self.committed = -1
        self.live = True
        self.behind = False  # records past the start position when assigned (a backlog)

    def note_ack(self, delivery: _KafkaDelivery) -> None:
        """Record ``delivery`` as acked in the offset tracker (what may be committed)."""
        done = self.tracker.ack(delivery)
        if done is not None:
            self.committable = done + 1

    def settle(self, delivery: _KafkaDelivery) -> None:
        self.note_ack(delivery)
        if self.live:
            self.sub.settled(self)


class _KafkaDelivery(Delivery):
    """One record handed out: its own entry in its partition's offset tracker (``offset``,
    ``acked``); built by :func:`_delivery`, and its headers decoded only when asked."""

    __slots__ = ("acked", "offset", "part", "record")

    acked: bool
    offset: int
    part: _Partition
    record: Any

    @property
    def position(self) -> str:  # type: ignore[override]  # read-only here: never set
        """``topic/partition/offset``, built when asked (the saga monitor asks)."""
        record = self.record
        return f"{record.topic}/{record.partition}/{record.offset}"

    @property
    def headers(self) -> dict[str, str]:  # type: ignore[override]  # read-only here
        """The record's headers as text (asked for only when the event is not a CloudEvent)."""
        return record_headers(self.record)

    @property
    def body(self) -> bytes:  # type: ignore[override]  # read-only here
        """The record's value when it did not decode (the event holds the data otherwise)."""
        return b"" if self.event is not None else (self.record.value or b"")

    async def ack(self) -> None:
        if not self.acked:
            self.part.settle(self)

    def ack_now(self) -> None:
        """:meth:`ack` without awaiting (settling never waits; offsets are committed in
        batches by the commit loop): the consumer calls it after a successful handler."""
        if not self.acked:
            self.part.settle(self)

    async def nack(self) -> None:
        if not self.acked and self.part.live:
            self.redelivered += 1
            self.part.sub.give_back(self)


#: A record with what it decodes to (batch reads decode when they merge the partitions).
_Decoded = tuple[Any, tuple[Event | None, EnvelopeError | None]]
_new_delivery = object.__new__


def _delivery(part: _Partition, item: Any) -> _KafkaDelivery:
    """The delivery of a fetched record (or of a record decoded already), tracked by its
    partition. Built without ``__init__``: this runs once per event."""
    if item.__class__ is tuple:
        record, (event, error) = item
    else:
        record = item
        event, error = decode_record(record)
    delivery = _new_delivery(_KafkaDelivery)
    delivery.topic = record.topic
    delivery.record = record
    delivery.event = event
    delivery.redelivered = 0
    delivery.decode_error = error
    delivery.part = part
    delivery.offset = record.offset
    delivery.acked = False
    part.tracker.track(delivery)
    return delivery


#: A fetched record waiting in its partition's lane.
_Lane = tuple[_Partition, _Decoded]


def _time_of(item: _Lane) -> float:
    found = item[1]
    if found.__class__ is tuple:
        return event_time(found[1][0])
    moment = record_time(found)
    return event_time(decode_record(found)[0]) if moment is None else moment


def _keyed(part: _Partition, records: list[Any]) -> list[tuple[float, _Lane]]:
    """The (time, lane item) pairs of a partition's fetched records for the merge: the time
    read from the ``ce_time`` header, the record left to decode when it is handed out (as a
    per-event read does); a record whose time only decoding tells is decoded now."""
    keyed: list[tuple[float, _Lane]] = []
    append = keyed.append
    for record in records:
        moment = record_time(record)
        if moment is None:
            decoded = decode_record(record)
            append((event_time(decoded[0]), (part, (record, decoded))))
        else:
            append((moment, (part, record)))
    return keyed


# -- subscriptions --------------------------------------------------------------------------------


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sub: KafkaSubscription) -> None:
        self._sub = sub

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._sub.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._sub.assigned(assigned)


class KafkaSubscription(BaseSubscription):
    """A consumer-group member: yields deliveries, commits what the core acked."""

    def __init__(
        self,
        adapter: _Owner,
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
        #: Fetched records not handed out yet, as fetched (per partition); ``_next`` is the
        #: index of the next one in the first list. A run of the merge (``None`` for its
        #: partition) holds the records of several partitions, each with its own.
        self._buffer: deque[tuple[_Partition | None, list[Any]]] = deque()
        self._next = 0
        self._redeliver: deque[_KafkaDelivery] = deque()
        #: Delayed events read before their time: tracked (so commits stay below them) but
        #: outside the prefetch window, so later records and keys go on.
        self._held: HoldQueue[_KafkaDelivery] = HoldQueue()
        self._dirty: set[_Partition] = set()
        self._inflight = 0
        self._acks = 0
        self._space = asyncio.Event()
        self._commit_due = asyncio.Event()
        self._assigned_once = asyncio.Event()
        self._joining = True
        self._closed = False
        self._committer: asyncio.Task[None] | None = None
        #: Set by :meth:`merge_partitions`: fetched records wait here to be merged by time.
        self._horizon: Horizon[_Partition, _Lane] | None = None

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
            starts, ends = await self._starts(tps)
            for tp, offset in starts.items():
                consumer.seek(tp, offset)
                parts[tp].committable = parts[tp].committed = offset
                parts[tp].behind = offset < ends.get(tp, 0)
                if self._horizon is not None:  # a backlog holds the others back from the start
                    self._horizon.behind(parts[tp], parts[tp].behind)
        except (kerr.KafkaError, TimeoutError) as exc:  # aiokafka falls back to committed/earliest
            _log.warning("kafka positioning failed", group=self._group, error=repr(exc))
        finally:
            consumer.resume(*tps)
            self._assigned_once.set()

    async def _starts(
        self, tps: set[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """Where each partition resumes: its committed offset, else a fresh position
        (committed); and the partitions' end offsets.

        Only a group new to a topic starts at its end (or beginning with ``from_beginning``). A
        partition without a position in a topic the group already reads (a partition added
        later, a position lost) or with one beyond the log end (a broker that lost its log, a
        recreated topic) is read from the beginning: duplicates rather than loss.
        """
        consumer = self._consumer
        listed = list(tps)
        found = await asyncio.gather(*(consumer.committed(tp) for tp in listed))
        ends = await consumer.end_offsets(listed)
        known = {tp.topic for tp, off in zip(listed, found, strict=True) if off is not None}
        starts = {
            tp: off
            for tp, off in zip(listed, found, strict=True)
            if off is not None and off <= ends[tp]
        }
        missing = [tp for tp in listed if tp not in starts]
        if not missing:
            return starts, ends
        new = [tp for tp in missing if self._joining and tp.topic not in known]
        fresh = {tp: ends[tp] for tp in new if not self._from_beginning}
        rest = [tp for tp in missing if tp not in fresh]
        if rest:
            fresh.update(await consumer.beginning_offsets(rest))
        lost = [str(tp) for tp in missing if tp not in new]
        if lost:
            _log.warning(
                "kafka group has no valid position; reading from the beginning",
                group=self._group,
                partitions=lost,
            )
        with contextlib.suppress(kerr.KafkaError, TimeoutError):
            await asyncio.wait_for(consumer.commit(dict(fresh)), 10)
        return {**starts, **fresh}, ends

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
            if self._horizon is not None:
                self._horizon.drop(part)
            self._inflight -= part.tracker.unacked - part.held
            if part.held:
                self._held.discard(lambda delivery, gone=part: delivery.part is gone)  # type: ignore[misc]
            self._dirty.discard(part)
            if part.committable > part.committed:
                offsets[tp] = part.committable
        self._wake_space()
        # After the broker forgot this member (a restart), a commit would be a stale write.
        if offsets and self._member():
            with contextlib.suppress(kerr.KafkaError, TimeoutError):
                await asyncio.wait_for(self._consumer.commit(offsets), 5)

    # -- delivering --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def poll(self) -> _KafkaDelivery | None:
        while not self._closed:
            if self._redeliver:
                delivery = self._redeliver.popleft()
                if delivery.part.live and not delivery.acked:
                    self._inflight += 1
                    return delivery
            elif self._inflight >= self._prefetch:
                return None
            elif self._held and (due := self._release()) is not None:
                self._inflight += 1
                return due
            elif not self._buffer:
                return None
            else:
                part, records = self._buffer[0]
                record = records[self._next]
                self._next += 1
                if self._next == len(records):
                    self._buffer.popleft()
                    self._next = 0
                if part is None:  # a merged run
                    part, record = record
                if part.live:
                    delivery = _delivery(part, record)
                    event = delivery.event  # held_until's own test first: once per event
                    if (
                        event is not None
                        and DELIVER_AT in event.extensions
                        and self._hold(delivery, event)
                    ):
                        continue
                    self._inflight += 1
                    return delivery
        return None

    def poll_many(self, limit: int) -> list[Delivery]:
        """Up to ``limit`` deliveries ready now: :meth:`poll`'s, taken from the fetched runs
        a run at a time while nothing is to be delivered again or held (the common case)."""
        if self._redeliver or self._held or self._closed:
            return super().poll_many(limit)
        batch: list[Delivery] = []
        buffer = self._buffer
        room = min(limit, self._prefetch - self._inflight)
        while room > 0 and buffer:
            part, records = buffer[0]
            start = self._next
            end = min(len(records), start + room)
            if end == len(records):
                buffer.popleft()
                self._next = 0
            else:
                self._next = end
            if part is None:  # a merged run: each record with its partition
                self._hand_out_merged(records, start, end, batch)
            elif part.live:
                for index in range(start, end):
                    delivery = _delivery(part, records[index])
                    if self._ready(delivery):
                        batch.append(delivery)
            room = min(limit, self._prefetch - self._inflight) - len(batch)
        self._inflight += len(batch)
        return batch

    def _hand_out_merged(
        self, lanes: list[_Lane], start: int, end: int, batch: list[Delivery]
    ) -> None:
        """:meth:`poll_many`'s loop over the records ``start:end`` of a merged run."""
        for index in range(start, end):
            part, item = lanes[index]
            if not part.live:
                continue
            delivery = _delivery(part, item)
            if self._ready(delivery):
                batch.append(delivery)

    def _ready(self, delivery: _KafkaDelivery) -> bool:
        """Whether ``delivery`` is handed out now: not an early event, which is held until
        its time instead (:meth:`_hold`)."""
        event = delivery.event
        return (
            event is None or DELIVER_AT not in event.extensions or not self._hold(delivery, event)
        )

    def _hold(self, delivery: _KafkaDelivery, event: Event) -> bool:
        """Whether the delivery is early, and then held until its time (not another group's
        retry copy: the core acks that at once, so the group's offsets need not wait for it)."""
        due = held_until(event)
        if due is None or is_for_another_group(event, self._group):
            return False
        delivery.part.held += 1
        self._held.push(due, delivery)
        return True

    def _release(self) -> _KafkaDelivery | None:
        """A held delivery whose time has come, if any."""
        now = time.time()
        while self._held.next_due() is not None:
            found = self._held.pop_due(now, 1)
            if not found:
                return None
            delivery = found[0]
            delivery.part.held -= 1
            if delivery.part.live and not delivery.acked:
                return delivery
        return None

    def _until_due(self, timeout: float | None) -> float | None:
        """``timeout`` cut to the time left until the earliest held delivery is due."""
        due = self._held.next_due()
        if due is None:
            return timeout
        left = max(0.0, due - time.time())
        return left if timeout is None else min(timeout, left)

    async def wait_ready(self, timeout: float | None) -> None:
        """Wait for acks to make room under ``prefetch``, or fetch (one ``getmany``)."""
        if self._inflight >= self._prefetch and not self._redeliver:
            self._space.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._space.wait(), timeout)
        elif not self._buffer and not self._redeliver:
            wait = self._until_due(_FETCH_WAIT if timeout is None else min(timeout, _FETCH_WAIT))
            await self._fill(_FETCH_WAIT if wait is None else wait)

    def merge_partitions(self) -> None:
        """Read for a batch subscription: fetches take what the fetcher holds for every
        partition, merged by event time (see the module docstring)."""
        self._horizon = Horizon(_time_of)
        # aiokafka fetches a drained partition again only once every partition of the broker
        # it reads from was drained too, or after this backoff (0.1 s, not an option): the
        # merge waits for the drained lane while the others' records wait in the fetcher, so
        # that lane is fetched at once instead (a fetch stays one request per broker at a time).
        fetcher = getattr(self._consumer, "_fetcher", None)
        if fetcher is not None and hasattr(fetcher, "_prefetch_backoff"):
            fetcher._prefetch_backoff = 0.0
        for part in self._parts.values():  # a backlog holds the others back from the start
            self._horizon.behind(part, part.behind)

    async def _fill(self, timeout: float) -> None:
        horizon = self._horizon  # every partition's fetched records, not the first ones' only
        if horizon is not None and horizon.held:
            timeout = min(timeout, horizon.waiting() or 0.0)
        partitions: list[TopicPartition] = []
        if horizon is not None:  # the lanes short of records, up to ``prefetch`` a lane
            room = self._prefetch
            partitions = [tp for tp, p in self._parts.items() if horizon.count(p) < room]
            if not partitions and self._parts:  # every lane full: what the horizon lets go
                self._merge(horizon, {})
                if self._buffer:
                    return
            # none assigned, or nothing let go: a fetch from every partition, which waits
        try:
            batch = await self._consumer.getmany(
                *partitions,
                timeout_ms=max(1, int(timeout * 1000)),
                max_records=self._prefetch,
            )
        except (kerr.ConsumerStoppedError, kerr.IllegalStateError):
            if not self._closed:
                raise
            return
        except kerr.KafkaError as exc:
            _log.warning("kafka fetch failed; retrying", group=self._group, error=repr(exc))
            await asyncio.sleep(0.5)
            return
        if horizon is not None:
            self._merge(horizon, batch)
            return
        for tp, records in batch.items():
            part = self._parts.get(tp)
            if part is not None and records:
                self._buffer.append((part, list(records)))

    def _merge(self, horizon: Horizon[_Partition, _Lane], batch: dict[Any, Any]) -> None:
        """Decode the fetched records into their partitions' lanes (a partition whose last
        record is below its high watermark holds the others' later records back), and
        buffer what the horizon lets go as one run, each record with its partition (merged by
        time, consecutive records are mostly of different partitions)."""
        consumer = self._consumer
        for tp, records in batch.items():
            part = self._parts.get(tp)
            if part is None or not records:
                continue
            high = consumer.highwater(tp)
            more = high is not None and records[-1].offset + 1 < high
            horizon.add_keyed(part, _keyed(part, records), more=more)
        released = horizon.release()
        if released:
            self._buffer.append((None, released))

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Settle each (committed with the next batch of offsets): :meth:`_Partition.settle`
        per delivery, with the subscription's own counts updated once for the list."""
        settled = 0
        for delivery in deliveries:
            if delivery.__class__ is not _KafkaDelivery:
                await delivery.ack()
                continue
            if delivery.acked:
                continue
            part = delivery.part
            part.note_ack(delivery)
            if part.live:
                settled += 1
                if part.committable > part.committed:
                    self._dirty.add(part)
        if settled:
            self._settled_many(settled)

    def _settled_many(self, count: int) -> None:
        """:meth:`settled` for ``count`` deliveries of live partitions (marked dirty already)."""
        self._inflight -= count
        self._acks += count
        if self._acks >= self._settings.commit_batch:
            self._commit_due.set()
        if self._inflight < self._prefetch:
            self._space.set()

    def settled(self, part: _Partition) -> None:
        if part.committable > part.committed:
            self._dirty.add(part)
        self._settled_many(1)

    def give_back(self, delivery: _KafkaDelivery) -> None:
        self._inflight -= 1
        self._redeliver.append(delivery)
        self._space.set()

    def _wake_space(self) -> None:
        if self._inflight < self._prefetch or self._closed:
            self._space.set()

    # -- where the group stands ------------------------------------------------------------

    async def backlog(self) -> Backlog:
        """Per partition ``topic/partition`` of the topics, whoever it is assigned to: its end
        offset, and the group's committed offset (or this member's acked one where it is ahead,
        not committed yet). Asked with this consumer's own client: no second group member."""
        try:
            return await asyncio.wait_for(self._backlog(), _BACKLOG_TIMEOUT)
        except (kerr.KafkaError, TimeoutError) as exc:
            raise translate_error(exc, self._adapter.url, "reading the group's backlog") from exc

    async def _backlog(self) -> Backlog:
        consumer = self._consumer
        tps: list[TopicPartition] = []
        for topic in self._topics:
            known = consumer.partitions_for_topic(topic)
            if not known:  # a topic left out would look caught up
                raise kerr.UnknownTopicOrPartitionError(topic)
            tps.extend(TopicPartition(topic, p) for p in sorted(known))
        ends = await consumer.end_offsets(tps)
        committed = await asyncio.gather(*(consumer.committed(tp) for tp in tps))
        appended: dict[str, int] = {}
        acked: dict[str, int] = {}
        for tp, offset in zip(tps, committed, strict=True):
            own = self._parts.get(tp)
            done = offset or 0
            if own is not None and own.live:
                done = max(done, own.committable)
            appended[f"{tp.topic}/{tp.partition}"] = ends[tp]
            acked[f"{tp.topic}/{tp.partition}"] = done
        return Backlog(appended, acked)

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
        # every acked position, also one a commit the cancellation cut short had taken out
        self._dirty.update(self._parts.values())
        with contextlib.suppress(kerr.KafkaError, TimeoutError):
            await asyncio.wait_for(self._commit(), 5)
        for part in self._parts.values():
            part.live = False
        with contextlib.suppress(kerr.KafkaError, TimeoutError):
            await asyncio.wait_for(self._consumer.stop(), 10)
        self._adapter.forget(self)
