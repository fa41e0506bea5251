"""A :class:`~broker.clock.Clock` that moves only when a test says so."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = ["VirtualClock"]

#: Sleepers due this close after the target of an advance wake with it (float rounding:
#: three advances of 0.1 s reach a sleep of 0.3 s).
_EPSILON = 1e-9
#: Rounds of the event loop :meth:`VirtualClock.settle` runs before it gives up.
_MAX_ROUNDS = 100_000
#: Consecutive rounds with nothing ready that count as settled.
_QUIET_ROUNDS = 3
#: Real seconds a sleep on a closed clock pauses (at most): what still loops on the clock while
#: a test shuts down sees its stop promptly without spinning.
_CLOSED_PAUSE = 0.01


def _seconds(delta: timedelta | float) -> float:
    return delta.total_seconds() if isinstance(delta, timedelta) else float(delta)


class VirtualClock:
    """Virtual time for tests: ``now()`` starts at ``start`` and moves only in :meth:`advance`.

    Whatever sleeps on this clock (retry backoff, the breaker's cool-down, the saga monitor's
    timer) or set a timer on it (:meth:`call_later`: a delayed delivery) wakes when an advance
    passes its time, in time order, with the clock showing that time and the event loop run
    until nothing is ready before the next one wakes. ``start`` defaults to the current time
    to the second (so events built with their default time look recent); pass one for fixed
    timestamps.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime.now(UTC).replace(microsecond=0)
        if start.tzinfo is None:
            raise ValueError("a VirtualClock starts at a timezone-aware time, e.g. tzinfo=UTC")
        self._start = start
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._closed = False
        #: The pending futures of call_later (a closed clock cancels them, never fires them).
        self._timers: set[asyncio.Future[None]] = set()

    def __repr__(self) -> str:
        return f"VirtualClock(now={self.now().isoformat()}, sleepers={self.sleepers})"

    # -- reading ---------------------------------------------------------------------------

    def now(self) -> datetime:
        """The virtual time."""
        return self._start + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        """Virtual seconds since the clock was made."""
        return self._elapsed

    @property
    def elapsed(self) -> timedelta:
        """How far the clock was advanced in all."""
        return timedelta(seconds=self._elapsed)

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting for the clock."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    @property
    def next_wakeup(self) -> timedelta | None:
        """How far the earliest sleeper is from now (None: nobody sleeps)."""
        self._drop_finished()
        if not self._sleepers:
            return None
        return timedelta(seconds=max(0.0, self._sleepers[0][0] - self._elapsed))

    # -- waiting ---------------------------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock was advanced by ``seconds``."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if self._closed:  # time stands still; a short real pause keeps loops from spinning
            await asyncio.sleep(min(seconds, _CLOSED_PAUSE))
            return
        if seconds < _EPSILON:  # below the resolution: done, and time moved that much
            self._elapsed = max(self._elapsed + seconds, math.nextafter(self._elapsed, math.inf))
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._elapsed + seconds, next(self._order), future))
        try:
            await future
        finally:
            future.cancel()  # a no-op once woken; a cancelled sleep is skipped by advance

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait until ``event`` is set or the clock was advanced by ``timeout``."""
        if event.is_set():
            await asyncio.sleep(0)
            return True
        if self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(timeout, _CLOSED_PAUSE))
            return event.is_set()
        waiter = asyncio.ensure_future(event.wait())
        sleeper = asyncio.ensure_future(self.sleep(timeout))
        try:
            await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()
        return event.is_set()

    def call_later(self, seconds: float, callback: Callable[[], object]) -> asyncio.Future[None]:
        """Call ``callback`` when an advance passes ``seconds`` from now (cancel the returned
        future to call it off). A closed clock calls off what is still pending."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda done: None if done.cancelled() else callback())
        if self._closed:
            future.cancel()
        else:
            due = self._elapsed + max(0.0, seconds)
            heapq.heappush(self._sleepers, (due, next(self._order), future))
            self._timers.add(future)
            future.add_done_callback(self._timers.discard)
        return future

    # -- moving ----------------------------------------------------------------------------

    async def advance(self, delta: timedelta | float) -> None:
        """Move the clock forward by ``delta`` (a timedelta or seconds), waking every sleeper
        due by then in time order, each at its own time, and let the event loop settle after
        each (so a retry's next backoff, scheduled on waking, wakes in the same advance when
        it falls due within it)."""
        seconds = _seconds(delta)
        if seconds < 0:
            raise ValueError(f"a clock only moves forward; advance got {seconds}s")
        target = self._elapsed + seconds
        await self.settle()
        while True:
            self._drop_finished()
            if not self._sleepers or self._sleepers[0][0] > target + _EPSILON:
                break
            due = self._sleepers[0][0]
            self._elapsed = max(self._elapsed, due)
            while self._sleepers and self._sleepers[0][0] <= due:  # all due at that instant
                _, _, future = heapq.heappop(self._sleepers)
                if not future.done():
                    future.set_result(None)
            await self.settle()
        self._elapsed = max(self._elapsed, target)
        await self.settle()

    async def advance_to(self, moment: datetime) -> None:
        """Advance until ``now()`` is ``moment`` (which must not lie in the past)."""
        await self.advance(moment - self.now())

    async def settle(self) -> None:
        """Run the event loop until no task is ready to run: every task waits on the clock,
        on an event or on I/O. Raises RuntimeError when something keeps rescheduling itself
        without ever waiting (a busy loop would otherwise hang the test)."""
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)  # asyncio's run queue; unknown loops: 50 rounds
        needed = _QUIET_ROUNDS if ready is not None else 50
        quiet = 0
        for _ in range(_MAX_ROUNDS):
            await asyncio.sleep(0)
            quiet = 0 if ready else quiet + 1
            if quiet >= needed:
                return
        raise RuntimeError(
            f"the event loop did not settle within {_MAX_ROUNDS} rounds: a task keeps running "
            "without waiting (a loop around a sleep of 0?)"
        )

    def close(self) -> None:
        """Wake every sleeper; from now on time stands still and a sleep returns after a
        short real pause. Used when a test shuts down, so that what waits on virtual time
        (a retry's backoff, a monitor's timer) sees it is being stopped."""
        self._closed = True
        sleepers, self._sleepers = self._sleepers, []
        for _, _, future in sleepers:
            if future in self._timers:
                future.cancel()
            elif not future.done():
                future.set_result(None)

    def _drop_finished(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
