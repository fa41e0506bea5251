"""The parts of the :mod:`broker.ports` that every backend implements alike.

An adapter may subclass :class:`BaseAdapter` (as an httpx transport subclasses its base
transport): it then gets the masked :attr:`~BaseAdapter.url`, the ``subscribe`` entry point and
a ``publish_many`` that publishes one event after the other (override it to pipeline), and
implements :meth:`~BaseAdapter.open_subscription` with the arguments already checked.

A subscription may subclass :class:`BaseSubscription`: it says which delivery is ready now
(:meth:`~BaseSubscription.poll`) and how to wait for more (:meth:`~BaseSubscription.wait_ready`),
and gets iteration, batches (``take``, built on :meth:`~BaseSubscription.poll_many`, which a
backend may override to hand out many at once) and ``ack_many`` built on those.
"""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator, Sequence

from broker.clock import SYSTEM_CLOCK, Clock
from broker.envelope import Event
from broker.ports import Delivery, Subscription
from broker.urls import mask_url

__all__ = ["BaseAdapter", "BaseSubscription"]


class BaseAdapter(abc.ABC):
    """Shared behaviour of the adapters; the rest of the port is the backend's own."""

    #: The clock of the :class:`~broker.Bus` using this adapter, for what the adapter
    #: schedules itself (delayed delivery); the system clock unless the bus was given one.
    clock: Clock = SYSTEM_CLOCK

    def __init__(self, url: str) -> None:
        self._shown_url = mask_url(url)

    def use_clock(self, clock: Clock) -> None:
        """Follow ``clock`` (a :class:`~broker.Bus` built with ``clock=`` calls this)."""
        self.clock = clock

    @property
    def url(self) -> str:
        """The URL this adapter was built from, secrets masked."""
        return self._shown_url

    async def subscribe(
        self,
        topics: Sequence[str],
        group: str,
        *,
        from_beginning: bool = False,
        prefetch: int = 100,
    ) -> Subscription:
        """Join ``group`` on ``topics``; returns once the group's position exists."""
        return await self.open_subscription(tuple(topics), group, from_beginning, max(1, prefetch))

    @abc.abstractmethod
    async def open_subscription(
        self, topics: tuple[str, ...], group: str, from_beginning: bool, prefetch: int
    ) -> Subscription:
        """:meth:`subscribe` with at least one unit of ``prefetch``."""

    @abc.abstractmethod
    async def publish(self, topic: str, event: Event, *, ttl: float | None = None) -> None:
        """Durably publish one event."""

    async def publish_many(
        self, topic: str, events: Sequence[Event], *, ttl: float | None = None
    ) -> list[Exception | None]:
        """Publish ``events`` one after the other (in order); one outcome per event."""
        outcomes: list[Exception | None] = []
        for event in events:
            try:
                await self.publish(topic, event, ttl=ttl)
            except Exception as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes


class BaseSubscription(abc.ABC):
    """Iteration, batches and ``ack_many`` for a subscription that can say which delivery is
    ready now and wait for more."""

    @abc.abstractmethod
    def poll(self) -> Delivery | None:
        """The next delivery that is ready, handed out (prefetch permitting); None if there is
        none now or the subscription is closed. Never waits."""

    @abc.abstractmethod
    async def wait_ready(self, timeout: float | None) -> None:
        """Return once a delivery may be ready (or the subscription closed), or after
        ``timeout`` seconds (None: no limit). May fetch from the broker meanwhile."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop receiving; unacked deliveries will be delivered again later."""

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        while not self.closed:
            delivery = self.poll()
            if delivery is not None:
                return delivery
            await self.wait_ready(None)
        raise StopAsyncIteration

    def poll_many(self, limit: int) -> list[Delivery]:
        """Up to ``limit`` deliveries that are ready now (:meth:`poll` until there is none):
        override where a backend hands out many at once more cheaply. Never waits."""
        batch: list[Delivery] = []
        while len(batch) < limit:
            delivery = self.poll()
            if delivery is None:
                break
            batch.append(delivery)
        return batch

    async def take(self, limit: int, wait: float) -> list[Delivery]:
        """Up to ``limit`` deliveries: the first whenever it comes, then up to ``wait`` seconds
        more while fewer than ``limit`` are ready. Empty once closed."""
        batch: list[Delivery] = []
        while not batch:
            if self.closed:
                return []
            batch = self.poll_many(limit)
            if not batch:
                await self.wait_ready(None)
        deadline = time.monotonic() + wait
        while len(batch) < limit:
            more = self.poll_many(limit - len(batch))
            if more:
                batch += more
                continue
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                break
            await self.wait_ready(left)
        return batch

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Ack each delivery (override where the broker acks several in one call)."""
        for delivery in deliveries:
            await delivery.ack()
