"""The ports the bus talks to: what an adapter must provide, and what it declares it can do.

An adapter is an object the :class:`broker.Bus` is given (see ``broker/adapters/``). It moves
CloudEvents to and from one kind of broker and nothing more: retries, dead-lettering, TTL checks,
de-duplication and the circuit breaker are applied once, in :mod:`broker.policies`, for every
adapter alike.

Contract every adapter keeps (pinned by ``tests/contract``):

* ``publish`` returns only once the broker durably accepted the event, else raises
  :class:`~broker.errors.PublishError` (or :class:`~broker.errors.BrokerUnavailableError`).
* ``subscribe`` returns once the group's position exists on the broker: an event published
  after it returns is delivered to the group, even if no consumer is connected at that moment.
  A new group starts at the end of the topic unless ``from_beginning`` (needs ``replay``).
* Every group gets every event; a group's subscriptions share the events between them.
* A delivery that is neither acked nor nacked before its subscription closes (or its process
  dies) is delivered again later; ``nack`` gives it back at once.
* Within a group, deliveries with the same ``partitionkey`` arrive in publish order when
  ``Capabilities.ordered_keys`` is true (for ``publish_many``: in the order of the list).
* No group gets an event before its ``deliverat`` (:func:`broker.delay.held_until`), and an
  event held back holds up no later event.
* ``take`` hands out deliveries exactly as iterating does (the same prefetch and order), several
  at a time; ``ack_many`` is ``ack`` of each.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

from broker.envelope import Event
from broker.errors import EnvelopeError

__all__ = [
    "Adapter",
    "Backlog",
    "Capabilities",
    "Chooser",
    "Delivery",
    "PayloadCodec",
    "Subscription",
    "TopicInfo",
    "chosen_purger",
    "publisher_now",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend does natively; the core emulates or refuses the rest, never silently."""

    #: The broker itself drops (or dead-letters) a message whose TTL passed.
    native_ttl: bool = False
    #: The broker can route failed messages to a dead-letter destination by itself.
    native_dlq: bool = False
    #: Same-``partitionkey`` events reach a group in publish order.
    ordered_keys: bool = True
    #: A new group can read the retained history (``from_beginning``).
    replay: bool = True
    #: Single entries can be deleted from a topic (``purge`` with ids).
    selective_delete: bool = False
    #: Deliveries carry a broker-side redelivery count.
    delivery_count: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Backlog:
    """Where a subscription's group - all its members, not just this one - stands on the broker.

    Both maps have one entry per partition (a log) or queue, and a group has caught up with
    the moment of an earlier report when ``acked`` reached what ``appended`` was then:
    ``all(now.acked[p] >= then.appended[p] for p in then.appended)``.

    * A **log** (memory, SQLite, Kafka: ``topic/partition``; NATS: ``stream/consumer``):
      ``appended[p]`` is the position the next event of ``p`` will get and ``acked[p]`` the
      position below which the group acknowledged everything (its committed position, or this
      member's acks not flushed yet where they are ahead; never above the truth). A partition
      held by another member, or by a dead one, counts as acked only as far as it is.
    * A **queue** (RabbitMQ: ``<topic>.<group>``) has no positions, so its subscription counts
      its reports: ``appended[q]`` is the number of this report, ``acked[q]`` the number of
      the latest report at which nothing was waiting in the queue and every delivery this
      member had received by then has been acked since. Deliveries other members hold unacked
      are not visible to the protocol.

    Reports are cheap (a few requests at most) and never disturb consumption.
    """

    appended: Mapping[str, int]
    acked: Mapping[str, int]

    def caught_up_with(self, earlier: Backlog) -> bool:
        """Whether the group acked everything that was appended when ``earlier`` was taken."""
        return all(self.acked.get(part, 0) >= mark for part, mark in earlier.appended.items())


@dataclasses.dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as listed by ``choreo topics ls``; ``None`` means the broker does not say."""

    name: str
    messages: int | None = None
    partitions: int | None = None
    groups: tuple[str, ...] = ()


class Delivery(abc.ABC):
    """One message handed to a subscription, to be acked once handled.

    ``event`` is ``None`` when the bytes were not a CloudEvent; ``decode_error`` then says why
    and ``body``/``headers`` keep what arrived, so the core can dead-letter or wrap it.
    """

    __slots__ = ("body", "decode_error", "event", "headers", "position", "redelivered", "topic")

    def __init__(
        self,
        topic: str,
        event: Event | None,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        redelivered: int = 0,
        decode_error: EnvelopeError | None = None,
        position: str | None = None,
    ) -> None:
        self.topic = topic
        #: Where the message sits on the broker (topic, partition, offset or stream sequence;
        #: on RabbitMQ, whose queues have none, the name choreograph gave the message when it
        #: published it), when known: the same position again is the same message.
        self.position = position
        self.event = event
        self.body = body
        self.headers: Mapping[str, str] = headers or {}
        self.redelivered = redelivered
        self.decode_error = decode_error

    #: ``ack`` without a coroutine, for a backend whose ack never waits (``memory://``): a
    #: method taking no argument, or None (then the consumer awaits :meth:`ack`).
    ack_now: ClassVar[Callable[[Any], None] | None] = None

    @abc.abstractmethod
    async def ack(self) -> None:
        """Mark the delivery handled: it is never delivered to this group again."""

    @abc.abstractmethod
    async def nack(self) -> None:
        """Give the delivery back so that it is delivered again (to this or another consumer)."""

    async def keep_alive(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Tell the broker the delivery is still being worked on (extends a lease)."""


@runtime_checkable
class Subscription(Protocol):
    """The stream of deliveries of one (topics, group) subscription.

    Optional: ``async def backlog(self) -> Backlog``, where the subscription's group stands on
    the broker (see :class:`Backlog`), cheap enough to call every second and group-wide; it
    raises a :class:`~broker.errors.BrokerError` when the broker cannot tell right now. A
    backend that can tell should offer it: the saga monitor's watermark follows it
    (:meth:`broker.Subscriber.backlog` is ``None`` without it, and the monitor then falls back
    on a maximum delivery delay).

    Optional: ``def merge_partitions(self) -> None``, called once by a batch subscription
    before it takes anything: from then on the records a fetch brings from several partitions
    (or topics) are handed out merged by event time, each partition's own order kept
    (:mod:`broker.adapters.kit.merge`), so a batch spans them. Plain subscriptions never call
    it.
    """

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    async def take(self, limit: int, wait: float) -> list[Delivery]:
        """Up to ``limit`` deliveries at once: wait as long as it takes for the first, then up
        to ``wait`` seconds more while fewer than ``limit`` are there. Empty once closed."""
        ...

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Ack ``deliveries`` (all of this subscription) in as few broker calls as it can."""
        ...

    async def close(self) -> None:
        """Stop receiving; unacked deliveries will be delivered again later."""
        ...


@runtime_checkable
class Adapter(Protocol):
    """A backend: one broker connection that publishes, subscribes and inspects topics.

    Optional: ``async def delete_topic(self, topic: str) -> None``, which removes a topic with
    its events and group positions; a requester's reply topic (:mod:`broker.reply`) is
    deleted with it when its bus stops, and stays behind on a backend without it.

    Optional: ``def publish_now(self, topic: str, event: Event, ttl: float | None) -> bool``,
    ``publish`` without a coroutine, for a backend whose publish never waits (``memory://``):
    the bus calls it instead when the class that defines ``publish`` defines it too (see
    :func:`publisher_now`). True asks the caller to yield to the event loop once
    (``await asyncio.sleep(0)``) before going on: a subscriber lags far behind.

    Optional: ``async def purge_chosen(self, topic: str, choose: Chooser) -> int``, a purge
    that reads ``topic`` once: it reads the retained events, oldest first, calls ``choose``
    with them (which returns the ids to delete, or raises: then nothing is deleted), deletes
    the events with those ids among those it read (never one appended since) and returns how
    many. The bus uses it, where the class that defines ``purge`` defines it too (see
    :func:`chosen_purger`), for a purge of chosen dead letters instead of ``browse`` then
    ``purge(ids, among=)``, which read the topic twice.
    """

    @property
    def url(self) -> str:
        """The URL this adapter was built from, password masked."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def connect(self) -> None:
        """Open connections; raise BrokerUnavailableError naming the URL when it cannot."""
        ...

    async def close(self) -> None:
        """Flush pending publishes and release everything. Idempotent."""
        ...

    async def publish(self, topic: str, event: Event, *, ttl: float | None = None) -> None:
        """Durably publish one event; ``ttl`` (seconds) lets a native-TTL broker drop it."""
        ...

    async def publish_many(
        self, topic: str, events: Sequence[Event], *, ttl: float | None = None
    ) -> list[Exception | None]:
        """Publish ``events`` in order with as few broker round trips as the client allows;
        one outcome per event: None once the broker durably accepted it, else the error
        ``publish`` would have raised. Raises only when nothing could be tried (closed)."""
        ...

    async def subscribe(
        self,
        topics: Sequence[str],
        group: str,
        *,
        from_beginning: bool = False,
        prefetch: int = 100,
    ) -> Subscription:
        """Join ``group`` on ``topics``; returns once the group's position exists."""
        ...

    async def create_topic(self, topic: str, *, partitions: int | None = None) -> None:
        """Create a topic (idempotent)."""
        ...

    async def list_topics(self) -> list[TopicInfo]:
        """The topics this broker knows, sorted by name."""
        ...

    async def browse(self, topic: str, *, limit: int = 100) -> list[Event]:
        """Read up to ``limit`` retained events of ``topic`` without consuming them."""
        ...

    async def purge(
        self, topic: str, ids: Collection[str] | None = None, *, among: int | None = None
    ) -> int:
        """Delete all events of ``topic`` (or only ``ids``); returns how many were deleted.

        With ``among``, only the topic's first ``among`` events (what ``browse`` with that limit
        returned) are looked at: an event appended since stays, even with one of ``ids`` (a
        replayed event dead-lettered again)."""
        ...


class PayloadCodec(Protocol):
    """Encodes an event's data on publish and decodes it on consume (e.g. a schema registry).

    ``encode`` raises :class:`ValueError` (naming the field) for data that does not validate;
    ``decode`` raises :class:`ValueError` for bytes it cannot read.
    """

    async def encode(self, topic: str, event: Event) -> Event: ...

    async def decode(self, topic: str, event: Event) -> Event: ...


def publisher_now(adapter: object) -> Callable[[str, Event, float | None], bool] | None:
    """The adapter's ``publish_now`` (see :class:`Adapter`), or None: when it has none, or when
    ``publish`` is not defined beside it (a subclass or a wrapper that changes ``publish`` is
    then called as it asks, never bypassed)."""
    found: Callable[[str, Event, float | None], bool] | None = _beside(
        adapter, "publish", "publish_now"
    )
    return found


#: What a purge that chooses (:func:`chosen_purger`) asks: the ids to delete among the events
#: it read, oldest first; raising deletes nothing.
Chooser = Callable[[list[Event]], Collection[str]]


def chosen_purger(adapter: object) -> Callable[[str, Chooser], Awaitable[int]] | None:
    """The adapter's ``purge_chosen`` (see :class:`Adapter`), or None: when it has none, or
    when ``purge`` is not defined beside it (a wrapper that changes ``purge`` is never
    bypassed)."""
    found: Callable[[str, Chooser], Awaitable[int]] | None = _beside(
        adapter, "purge", "purge_chosen"
    )
    return found


def _beside(adapter: object, method: str, optional: str) -> Any:
    """``adapter``'s bound ``optional`` method when the class that defines ``method`` (the
    nearest in the MRO that defines either) defines it too; else None."""
    kind = type(adapter)
    if getattr(kind, optional, None) is None:
        return None
    owners = [k for k in kind.__mro__ if method in vars(k) or optional in vars(k)]
    if not owners or not {method, optional} <= vars(owners[0]).keys():
        return None
    return getattr(adapter, optional)
