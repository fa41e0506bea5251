"""Where the delivery machinery reads the time: one small :class:`Clock` interface.

Everything time-driven on the delivery path asks a clock instead of :mod:`time`,
:mod:`datetime` or :func:`asyncio.sleep` directly: the TTL stamped on publish and checked
before a handler, the event time a :class:`~broker.Bus` stamps, ``dlqtime``, the backoff
between retries, the circuit breaker's cool-down, and the saga monitor's deadlines and timer.
An adapter built on :class:`~broker.adapters.kit.BaseAdapter` gets the bus's clock too
(``adapter.clock``), for what it schedules itself: a delayed-delivery scheduler sets its timer
with ``adapter.clock.call_later(seconds, release)`` and reads "now" from ``clock.now()``.

:data:`SYSTEM_CLOCK` (a :class:`SystemClock`) is the default and costs what the direct calls
cost. :class:`broker.testing.VirtualClock` is the other one: time moves only when a test says
``await clock.advance(timedelta(hours=2))``, and every sleeper due by then wakes in order.

    bus = Bus("memory://", clock=VirtualClock())

What stays on the wall clock on purpose: network timeouts and reconnect backoff of the
adapters, batch-collection windows, lease bookkeeping and a subscription's shutdown grace; they
bound how long the machine waits for I/O, not business time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock", "Timer"]


@runtime_checkable
class Clock(Protocol):
    """Wall time, a monotonic reading, and waiting, as one object."""

    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (only differences mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        ...

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait until ``event`` is set or ``timeout`` seconds passed on this clock; whether
        it is set."""
        ...

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        """Call ``callback`` (in the running event loop) once ``seconds`` passed on this
        clock, unless the returned timer is cancelled first: a scheduler's timer."""
        ...


class Timer(Protocol):
    """What :meth:`Clock.call_later` returns (an :class:`asyncio.TimerHandle` is one)."""

    def cancel(self) -> object:
        """Do not call the callback."""
        ...


class SystemClock:
    """The real clock: :func:`datetime.now`, :func:`time.monotonic`, :func:`asyncio.sleep`."""

    __slots__ = ("monotonic", "now", "sleep")

    def __init__(self) -> None:
        # Bound as attributes: a call costs what the direct call costs (the hot path stamps
        # an event time per publish).
        self.now = functools.partial(datetime.now, UTC)
        self.monotonic = time.monotonic
        self.sleep = asyncio.sleep

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if not event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        return event.is_set()

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, seconds), callback)

    def __repr__(self) -> str:
        return "SystemClock()"


#: The clock everything uses unless given another.
SYSTEM_CLOCK: Clock = SystemClock()
