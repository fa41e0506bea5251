"""The cyclic garbage collector while monitors run: what a batch left alive is frozen.

Nearly everything a committed batch leaves alive lives on (the instances' timelines the store
keeps, the records a catch-up fetched ahead), and each collection would walk it again: the
young ones while it is young, the middle and full ones, over the whole heap, ever after. So
after each batch a running monitor moves every tracked object to the permanent generation
(:func:`gc.freeze`, which costs the same for any heap): the collections that follow walk only
what was allocated since. Objects frozen are still freed when their last reference goes (the
fetched records, once applied); only a reference cycle made meanwhile waits, until a thaw
(:func:`gc.unfreeze` and one full collection) returns everything to the collector: when the
monitors are idle (a tick with no event applied since the previous one) and something was
frozen since the last thaw, at most every :data:`THAW_IDLE_GAP` seconds (the first idle tick
after the monitors started thaws at once: a catch-up's end is thawed); after
:data:`THAW_EVERY` events applied since the last thaw; and when the last monitor stops. The
gap keeps a trickle of events (a batch, an idle tick, a batch, ...) from making a full
collection of the whole heap every other tick.

Process-wide, for the process's started monitors together (as the collector's threshold is,
see :func:`saga_monitor.monitor._fewer_collections`). A process that froze objects of its own
before the first monitor started (a pre-forking server does) keeps them: its monitors then
freeze nothing, and never unfreeze. Nor does anything freeze while the collector is disabled.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

__all__ = ["THAW_EVERY", "THAW_IDLE_GAP", "FrozenBatches"]

#: How many events the monitors apply, busy all the time, between two thaws: a bound on the
#: cyclic garbage that waits frozen (a full collection walks the whole heap once per so many).
THAW_EVERY = 200_000
#: The fewest seconds from one thaw to a thaw for being idle.
THAW_IDLE_GAP = 60.0


class FrozenBatches:
    """Freezes the heap after each batch while monitors run, and thaws it (see the module)."""

    def __init__(
        self,
        thaw_every: int = THAW_EVERY,
        *,
        idle_gap: float = THAW_IDLE_GAP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.thaw_every = thaw_every
        self.idle_gap = idle_gap
        self._clock = clock
        #: How many started monitors use it.
        self.users = 0
        #: Whether the permanent generation is the monitors' (it was empty when the first
        #: started); when not, nothing is frozen or thawed.
        self.owned = False
        #: Events applied since the last thaw.
        self.pending = 0
        #: Whether anything was frozen since the last thaw.
        self.frozen = False
        #: When (``clock``) the last thaw ran; None: none since the monitors started.
        self.thawed_at: float | None = None
        #: How many thaws ran, and what the last one's collection found unreachable (the
        #: cyclic garbage that waited).
        self.thaws = 0
        self.collected = 0

    def hold(self) -> None:
        """A monitor starts."""
        self.users += 1
        if self.users == 1:
            self.owned = gc.get_freeze_count() == 0
            self.thawed_at = None

    def release(self) -> None:
        """A monitor stops: the last one thaws the heap."""
        self.users = max(0, self.users - 1)
        if self.users == 0:
            self.thaw()
            self.owned = False

    def settled(self, events: int) -> None:
        """A batch of ``events`` was committed: freeze what is alive, or thaw every
        :attr:`thaw_every` events."""
        if not self.owned or not gc.isenabled():
            return
        self.pending += events
        if self.pending >= self.thaw_every and self.frozen:
            self.thaw()
        else:
            gc.freeze()
            self.frozen = True

    def idle(self) -> None:
        """A monitor applied nothing since its previous tick: thaw, if anything was frozen
        since the last thaw and that was :attr:`idle_gap` seconds ago or more."""
        last = self.thawed_at
        if last is None or self._clock() - last >= self.idle_gap:
            self.thaw()

    def thaw(self) -> None:
        """Unfreeze what the monitors froze and collect the whole heap once (if they froze
        anything since the last thaw)."""
        if not self.owned or not self.frozen:
            return
        self.pending = 0
        self.frozen = False
        gc.unfreeze()
        self.collected = gc.collect()
        self.thaws += 1
        self.thawed_at = self._clock()


#: The process's one freezer (the collector and its permanent generation are process-wide).
FREEZER = FrozenBatches()
