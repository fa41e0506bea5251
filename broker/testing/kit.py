"""The :class:`ChoreoKit`: real buses on one private ``memory://`` broker, a virtual clock, and
assertions on what was published."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from broker.adapters.memory import MemoryAdapter
from broker.bus import Bus
from broker.envelope import Event
from broker.policies import DeadLetter, Policy
from broker.ports import PayloadCodec
from broker.testing.clock import VirtualClock
from broker.testing.matching import Match, describe_events

__all__ = ["ChoreoKit"]

Cleanup = Callable[[], Awaitable[object]]


class ChoreoKit:
    """Everything a test of event-driven services needs, with nothing patched.

    * :meth:`bus` gives each service a real :class:`~broker.Bus` on the kit's own
      ``memory://`` broker (the full delivery pipeline: retries, DLQ, TTL, breaker, inbox);
    * :attr:`clock` is a :class:`VirtualClock` those buses follow:
      ``await kit.advance(timedelta(hours=2))``;
    * every event published on the broker stays readable: :meth:`published`,
      :meth:`assert_published`, :meth:`assert_not_published`, :meth:`wait_for`.

        async with ChoreoKit() as kit:
            bus = await kit.bus("order-service").start()
            await bus.publish("orders", type="order.placed", data={"id": 1})
            kit.assert_published("orders", type="order.placed", data={"id": 1})
    """

    def __init__(self, *, clock: VirtualClock | None = None, name: str | None = None) -> None:
        self.clock = clock or VirtualClock()
        #: The kit's broker URL: several kits (tests) never see each other's events.
        self.url = f"memory://{name or 'choreo-kit-' + uuid.uuid4().hex[:12]}"
        self._reader = MemoryAdapter(self.url)
        self._buses: list[Bus] = []
        self._cleanups: list[Cleanup] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"ChoreoKit(url={self.url!r}, clock={self.clock!r})"

    # -- buses and lifecycle ---------------------------------------------------------------

    def bus(
        self,
        source: str = "choreograph",
        *,
        policy: Policy | None = None,
        codec: PayloadCodec | None = None,
    ) -> Bus:
        """A new (not yet started) bus on the kit's broker, on the kit's clock; the kit stops
        it when it closes. ``await kit.bus("billing").start()`` returns it started."""
        bus = Bus(self.url, source=source, policy=policy, codec=codec, clock=self.clock)
        self._buses.append(bus)
        return bus

    def on_close(self, cleanup: Cleanup) -> None:
        """Call ``await cleanup()`` when the kit closes (before its buses stop), e.g. a saga
        monitor's ``stop``; the last registered runs first."""
        self._cleanups.append(cleanup)

    async def __aenter__(self) -> ChoreoKit:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Run the cleanups, wake whatever sleeps on the clock, stop every bus."""
        if self._closed:
            return
        self._closed = True
        for cleanup in reversed(self._cleanups):
            await cleanup()
        self.clock.close()  # a handler waiting out a virtual backoff can now see the stop
        await asyncio.gather(*(bus.stop() for bus in self._buses))

    # -- time ------------------------------------------------------------------------------

    async def advance(self, delta: timedelta | float) -> None:
        """Advance the virtual clock (see :meth:`VirtualClock.advance`)."""
        await self.clock.advance(delta)

    async def settle(self) -> None:
        """Let every handler run until all wait (see :meth:`VirtualClock.settle`)."""
        await self.clock.settle()

    # -- what was published ----------------------------------------------------------------

    def published(self, topic: str | None = None, **match: Any) -> list[Event]:
        """The events on ``topic`` (every topic: None), in publish order, that match:
        ``type``, ``source``, ``subject``, ``correlation_id``, ``key`` and ``data`` compare
        equal, ``where`` is a predicate (see :class:`~broker.testing.matching.Match`).
        Events published before the last ``await`` are all there; what handlers publish in
        reaction needs :meth:`settle` (or an advance) first."""
        wanted = Match.of(match)
        return [event for event in self._reader.events(topic) if wanted(event)]

    def dead_letters(self, topic: str, group: str = "", **match: Any) -> list[Event]:
        """The dead letters of ``topic`` (by ``group``) under the default naming,
        ``<topic>.dlq``."""
        return self.published(DeadLetter().topic_for(topic, group), **match)

    def assert_published(
        self, topic: str | None = None, *, count: int | None = None, **match: Any
    ) -> list[Event]:
        """The matching events; AssertionError naming what was published instead when there
        is none (or not exactly ``count``)."""
        found = self.published(topic, **match)
        if (count is None and found) or (count is not None and len(found) == count):
            return found
        wanted = "at least one event" if count is None else f"exactly {_events(count)}"
        raise AssertionError(self._mismatch(f"expected {wanted}", topic, match, len(found)))

    def assert_not_published(self, topic: str | None = None, **match: Any) -> None:
        """AssertionError listing them when a matching event was published."""
        found = self.published(topic, **match)
        if found:
            raise AssertionError(self._mismatch("expected no event", topic, match, len(found)))

    async def wait_for(
        self,
        topic: str | None = None,
        *,
        count: int = 1,
        timeout: float = 5.0,
        **match: Any,
    ) -> list[Event]:
        """Settle the event loop until ``count`` matching events were published, or fail
        after ``timeout`` real seconds naming what was published instead. The virtual clock
        does not move: advance it first when the events wait for time to pass."""
        deadline = time.monotonic() + timeout
        while True:
            await self.settle()
            found = self.published(topic, **match)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(
                    self._mismatch(
                        f"waited {timeout}s for {_events(count)}",
                        topic,
                        match,
                        len(found),
                        self.clock,
                    )
                )
            await asyncio.sleep(0.01)  # something may wait on real I/O

    def _mismatch(
        self,
        expected: str,
        topic: str | None,
        match: dict[str, Any],
        found: int,
        clock: VirtualClock | None = None,
    ) -> str:
        where = f"on {topic!r}" if topic is not None else "on any topic"
        criteria = Match.of(match).describe()
        there = self._reader.events(topic)
        head = f"{expected} {where} with {criteria}; {found} matched"
        if clock is not None:
            head += f" (virtual time {clock.now().isoformat()}, not advanced while waiting)"
        if not there:
            topics = ", ".join(self._reader.topic_names()) or "none"
            return f"{head}. Nothing was published {where}; topics with events: {topics}"
        return f"{head}, of {len(there)} published {where}:\n{describe_events(there)}"


def _events(count: int) -> str:
    return "1 event" if count == 1 else f"{count} events"
