"""What the monitor knows about time: its watermark, its lag, and its sources' clocks.

**The watermark** is the event time up to which the monitor knows it has seen every event of
its topics. Deadlines are judged against it (:mod:`saga_monitor.machine`), never against the
wall clock, so a monitor that is behind holds its verdicts instead of calling overdue what it has
not read yet. Each subscription contributes its own:

* where the backend can tell (:meth:`broker.Subscriber.backlog`), the monitor notes, at wall time
  ``T``, what the broker holds; once the group has acknowledged all of it (and the monitor has
  applied everything it received before ``T``), every event published before ``T`` is applied,
  so the watermark moves to ``T - max_delay``: ``max_delay`` bounds how long an event may take
  from its own time to the broker (a producer's latency, an outbox relay's);
* elsewhere it is simply ``now - max_delay``, with the same bound.

The monitor's watermark is the lowest of its subscriptions', and never moves back. Its **lag**
(``choreo_saga_monitor_lag_seconds``) is how far it trails the wall clock beyond ``max_delay``:
zero for a monitor that keeps up, growing while it reads a backlog or waits for a partition
still leased by a dead member.

**Clocks.** An event's time is its producer's clock. :class:`SourceClocks` learns, per source,
how far a clock runs ahead of the monitor's: events that claim to come from the future of their
arrival by more than ``tolerance``. Their times are corrected (the future is not trusted), so a
fast clock cannot push deadlines out and hide a stall. A clock that runs behind is caught by
causality instead: an event stamped before the event that caused it (its ``causationid``) is
ordered after its cause (:mod:`saga_monitor.machine`), so a slow clock does not fake an
``out_of_order``. Either way the instance records a ``clock_skew`` anomaly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from broker import Backlog, BrokerError

__all__ = ["SourceClocks", "Watermark"]


class Tracked(Protocol):
    """A subscription the watermark follows (a :class:`broker.Subscriber`)."""

    async def backlog(self) -> Backlog | None: ...


class _Follower:
    """One subscription's watermark, advanced by comparing backlog reports."""

    def __init__(self, subscription: Tracked) -> None:
        self.subscription = subscription
        #: (wall time, report) not caught up with yet, oldest first.
        self.reports: deque[tuple[datetime, Backlog]] = deque()
        self.caught_up: datetime | None = None
        self.blind = False
        #: Why the broker did not answer the last report asked of it (None: it answered).
        self.unanswered: str | None = None

    async def refresh(self, now: datetime, applied_before: datetime) -> None:
        """Take a report and move ``caught_up`` to the newest earlier report the group has
        acked everything of. A broker that cannot answer now holds the watermark."""
        try:
            backlog = await self.subscription.backlog()
        except BrokerError as exc:
            self.unanswered = str(exc) or type(exc).__name__
            return  # not known now: the watermark waits, and the lag grows
        self.unanswered = None
        if backlog is None:
            self.blind = True
            return
        self.reports.append((now, backlog))
        while self.reports:
            taken, report = self.reports[0]
            if taken > applied_before:
                break  # the monitor still holds an event it received before that report
            if not backlog.caught_up_with(report):
                break
            self.caught_up = taken
            self.reports.popleft()
        while len(self.reports) > 64:  # far behind: keep the newest reports only
            self.reports.popleft()


class Watermark:
    """The monitor's watermark over its subscriptions (see the module docstring)."""

    def __init__(
        self,
        subscriptions: Sequence[Tracked],
        *,
        max_delay: float = 2.0,
        floor: datetime | None = None,
    ) -> None:
        self._followers = [_Follower(s) for s in subscriptions]
        self.max_delay = timedelta(seconds=max_delay)
        #: The current watermark (None until the monitor knows anything).
        self.value: datetime | None = floor
        #: Seconds the watermark trails ``now - max_delay`` (0 while the monitor keeps up).
        self.lag = 0.0
        #: Why the broker did not answer at the last refresh (None: every subscription's did).
        self.unanswered: str | None = None

    async def refresh(self, now: datetime, applied_before: datetime) -> datetime | None:
        """Advance with what the subscriptions report at ``now``; ``applied_before`` is the
        receive time of the oldest event the monitor has not applied yet (``now`` if none)."""
        marks: list[datetime | None] = []
        for follower in self._followers:
            await follower.refresh(now, applied_before)
            marks.append(min(now, applied_before) if follower.blind else follower.caught_up)
        self.unanswered = next((f.unanswered for f in self._followers if f.unanswered), None)
        known = [mark for mark in marks if mark is not None]
        if known and len(known) == len(marks):
            candidate = min(known) - self.max_delay
            if self.value is None or candidate > self.value:
                self.value = candidate
        live = now - self.max_delay
        self.lag = max(0.0, (live - self.value).total_seconds()) if self.value else float("inf")
        return self.value


class SourceClocks:
    """Learns how far each source's clock runs ahead of the monitor's (see the module
    docstring): an event cannot arrive before it happened, so a time in the future of its
    arrival is the source's clock running ahead. ``correction`` returns the seconds to add to
    an event's time (0, or minus the lead, for a clock more than ``tolerance`` ahead).

    A clock running behind shows only against causality: an event stamped before the event
    that caused it. The saga machine orders such an event after its cause and reports it.
    """

    def __init__(self, tolerance: float = 1.0, window: int = 32) -> None:
        self.tolerance = tolerance
        self._window = window
        self._ahead: dict[str, deque[float]] = {}

    def correction(self, source: str, happened: datetime, arrived: datetime) -> float:
        """The correction for an event of ``source`` that happened (by its clock) at
        ``happened`` and arrived at ``arrived``."""
        samples = self._ahead.get(source)
        if samples is None and happened <= arrived:  # the common case: nothing to learn
            return 0.0
        lead = (happened - arrived).total_seconds()
        if lead > 0:
            if samples is None:
                samples = self._ahead[source] = deque(maxlen=self._window)
            samples.append(lead)
        if not samples:
            return 0.0
        learned = max(samples)
        if learned <= self.tolerance:
            return 0.0
        return -max(learned, lead)

    def offsets(self) -> dict[str, float]:
        """The sources whose clocks are corrected, with the seconds added to their times."""
        return {
            source: -max(samples)
            for source, samples in sorted(self._ahead.items())
            if samples and max(samples) > self.tolerance
        }
