"""The cyclic collector while monitors run: the heap frozen after each batch, thawed when idle,
every so many events and at stop (saga_monitor/collector.py)."""

from __future__ import annotations

import gc
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from broker import Bus, Event
from saga_monitor import open_saga_store
from saga_monitor.collector import FrozenBatches
from saga_monitor.monitor import SagaMonitor
from saga_monitor.store import SagaStore
from tests.saga_monitor.helpers import ManualClock, example, until


class _Node:
    """An object of a reference cycle."""

    def __init__(self) -> None:
        self.me = self


def _garbage_cycle() -> weakref.ref[_Node]:
    """A reference cycle nothing else points to, made after a collection (so that no young
    collection meets it before the monitor's next batch): only the collector can free it."""
    gc.collect()
    return weakref.ref(_Node())


@pytest.fixture(params=["memory", "sqlite"])
async def bus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Bus]:
    url = (
        f"memory://gc-{uuid.uuid4().hex}"
        if request.param == "memory"
        else f"sqlite:///{tmp_path}/broker.db?poll_interval=0.01"
    )
    async with Bus(url, source="shop") as started:
        yield started


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SagaStore]:
    opened = open_saga_store(f"sqlite:///{tmp_path}/sagas.db")
    yield opened
    opened.close()


async def _apply_one(bus: Bus, monitor: SagaMonitor, n: int) -> None:
    event = Event(type="order.placed", source="shop", extensions={"correlationid": f"o{n}"})
    await bus.publish("orders", event)
    await until(lambda: monitor.applied == n + 1, what="the event applied")


async def test_a_batch_freezes_the_heap_and_the_stop_thaws_and_collects_it(
    bus: Bus, store: SagaStore
) -> None:
    """After a committed batch every tracked object is frozen (a collection skips it, so a
    cycle made before it survives one); the monitor's stop unfreezes everything and collects
    it, the cycle included."""
    monitor = SagaMonitor(
        example(), bus, store, clock=ManualClock(), alerts_topic=None, tick_interval=3600
    )
    assert 0 == gc.get_freeze_count()
    async with monitor:
        cycle = _garbage_cycle()
        await _apply_one(bus, monitor, 0)
        gc.collect()
        assert cycle() is not None
        assert gc.get_freeze_count() > 0
    assert cycle() is None
    assert 0 == gc.get_freeze_count()


async def test_an_idle_monitor_thaws_the_heap_and_collects_the_cycles_made_meanwhile(
    bus: Bus, store: SagaStore
) -> None:
    """The first tick with nothing applied since the previous one (the monitor's first idle
    tick: no thaw since it started) unfreezes the heap and collects it, while the monitor
    runs on."""
    monitor = SagaMonitor(
        example(), bus, store, clock=ManualClock(), alerts_topic=None, tick_interval=0.02
    )
    async with monitor:
        cycle = _garbage_cycle()
        await _apply_one(bus, monitor, 0)
        await until(lambda: cycle() is None, what="the cycle collected")
        assert 0 == gc.get_freeze_count()


async def test_a_heap_the_process_froze_itself_stays_frozen(bus: Bus, store: SagaStore) -> None:
    """A process that froze objects of its own before the monitor started keeps them frozen
    after the monitor stopped, and the monitor froze nothing more."""
    gc.freeze()
    own = gc.get_freeze_count()
    try:
        monitor = SagaMonitor(example(), bus, store, clock=ManualClock(), alerts_topic=None)
        async with monitor:
            await _apply_one(bus, monitor, 0)
            assert 0 < gc.get_freeze_count() <= own  # frozen objects still die when unused
        assert 0 < gc.get_freeze_count() <= own
    finally:
        gc.unfreeze()


def test_busy_monitors_thaw_every_so_many_events() -> None:
    """Monitors that never go idle thaw the heap (and collect it) once the events applied
    since the last thaw reach the bound; each batch before that freezes it."""
    freezer = FrozenBatches(thaw_every=10)
    freezer.hold()
    try:
        counts = []
        cycle = _garbage_cycle()
        for _ in range(3):
            freezer.settled(4)
            counts.append(gc.get_freeze_count() > 0)
        assert [True, True, False] == counts
        assert cycle() is None
        assert freezer.collected >= 1
    finally:
        freezer.release()
    assert 0 == gc.get_freeze_count()


class _Seconds:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_idle_ticks_thaw_only_what_was_frozen_and_at_most_once_per_gap() -> None:
    """An idle tick with nothing frozen since the last thaw collects nothing; one after a
    batch thaws at once when no thaw ran since the start, then not again until the gap has
    passed since the last thaw, however many batches and idle ticks alternate meanwhile."""
    clock = _Seconds()
    freezer = FrozenBatches(idle_gap=60.0, clock=clock)
    freezer.hold()
    try:
        freezer.idle()
        assert 0 == freezer.thaws
        freezer.settled(1)
        freezer.idle()
        assert (1, 0) == (freezer.thaws, gc.get_freeze_count())
        thaws = []
        for _ in range(59):  # a trickle: a batch, an idle tick, a second later the same
            clock.now += 1.0
            freezer.settled(1)
            freezer.idle()
            thaws.append(freezer.thaws)
        assert [1] * 59 == thaws
        assert gc.get_freeze_count() > 0
        clock.now += 1.0
        freezer.idle()
        assert (2, 0) == (freezer.thaws, gc.get_freeze_count())
        freezer.idle()
        assert 2 == freezer.thaws
    finally:
        freezer.release()
    assert 0 == gc.get_freeze_count()


def test_a_restart_thaws_at_the_first_idle_tick_again() -> None:
    """Once the last monitor stopped (its stop thaws), the next start's first idle tick after
    a batch thaws at once, without waiting for the gap."""
    clock = _Seconds()
    freezer = FrozenBatches(idle_gap=60.0, clock=clock)
    freezer.hold()
    freezer.settled(1)
    freezer.release()
    assert 1 == freezer.thaws
    freezer.hold()
    try:
        freezer.settled(1)
        freezer.idle()
        assert (2, 0) == (freezer.thaws, gc.get_freeze_count())
    finally:
        freezer.release()
