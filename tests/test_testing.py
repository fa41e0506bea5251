"""broker.testing: the virtual clock drives retries, TTLs and the breaker of real buses, and
captured events are asserted on with messages that say what was published instead."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker import Bus, CircuitBreaker, Event, Policy, Retry
from broker.clock import SYSTEM_CLOCK, Clock
from broker.testing import ChoreoKit, VirtualClock

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


class Failing:
    """A handler that fails while ``down``, noting the virtual time of each call."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.down = True
        self.calls: list[float] = []

    async def __call__(self, event: Event) -> None:
        self.calls.append(self.clock.monotonic())
        if self.down:
            raise ConnectionError("downstream unavailable")


# -- the clock --------------------------------------------------------------------------------


async def test_sleepers_wake_in_time_order_each_at_its_own_time() -> None:
    """An advance wakes every sleep due within it, in order, with the clock at its time."""
    clock = VirtualClock(start=T0)
    woke: list[tuple[str, datetime]] = []

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    tasks = [asyncio.create_task(nap(n, s)) for n, s in (("c", 30), ("a", 10), ("b", 20))]
    await clock.advance(timedelta(seconds=25))
    assert [("a", T0 + timedelta(seconds=10)), ("b", T0 + timedelta(seconds=20))] == woke
    assert (T0 + timedelta(seconds=25), 1) == (clock.now(), clock.sleepers)
    await clock.advance(5)
    await asyncio.gather(*tasks)
    assert ["a", "b", "c"] == [name for name, _ in woke]


async def test_a_chain_of_sleeps_completes_within_one_advance() -> None:
    """A sleep started by a sleeper that woke is due within the same advance (0.1 + 0.2)."""
    clock = VirtualClock(start=T0)

    async def twice() -> float:
        await clock.sleep(0.1)
        await clock.sleep(0.2)
        return clock.monotonic()

    task = asyncio.create_task(twice())
    await clock.advance(0.3)
    assert task.done()
    assert pytest.approx(0.3) == task.result()


async def test_wait_returns_on_the_event_or_after_the_virtual_timeout() -> None:
    """``wait`` returns True once the event is set, False when the virtual timeout passed."""
    clock = VirtualClock(start=T0)
    event = asyncio.Event()
    timed_out = asyncio.create_task(clock.wait(event, 5.0))
    await clock.advance(5)
    assert timed_out.done()
    assert timed_out.result() is False
    set_later = asyncio.create_task(clock.wait(event, 5.0))
    await clock.settle()
    event.set()
    await clock.settle()
    assert set_later.result() is True
    assert 0 == clock.sleepers


async def test_timers_fire_at_their_virtual_time_unless_cancelled() -> None:
    """``call_later`` (a scheduler's timer) fires when an advance passes it; a cancelled timer
    and one still pending when the clock closes never fire."""
    clock = VirtualClock(start=T0)
    fired: list[tuple[str, float]] = []
    clock.call_later(10, lambda: fired.append(("due", clock.monotonic())))
    clock.call_later(5, lambda: fired.append(("cancelled", clock.monotonic()))).cancel()
    clock.call_later(60, lambda: fired.append(("pending at close", clock.monotonic())))
    await clock.advance(9)
    assert [] == fired
    await clock.advance(1)
    assert [("due", 10.0)] == fired
    clock.close()
    await clock.settle()
    assert [("due", 10.0)] == fired


async def test_the_clock_only_moves_forward_and_needs_an_aware_start() -> None:
    """A negative advance and a naive start time are refused."""
    clock = VirtualClock(start=T0)
    with pytest.raises(ValueError, match="only moves forward"):
        await clock.advance(-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        VirtualClock(start=datetime(2030, 1, 1))


def test_both_clocks_are_clocks() -> None:
    """The system clock and the virtual clock satisfy the Clock protocol; a bus defaults to
    the system clock."""
    assert isinstance(SYSTEM_CLOCK, Clock)
    assert isinstance(VirtualClock(), Clock)
    assert SYSTEM_CLOCK is Bus("memory://").clock


async def test_the_system_clock_sets_real_timers() -> None:
    """The system clock's ``call_later`` is the event loop's timer."""
    fired = asyncio.Event()
    SYSTEM_CLOCK.call_later(0, fired.set)
    assert await SYSTEM_CLOCK.wait(fired, 30)


# -- the delivery pipeline on virtual time ----------------------------------------------------


async def test_retry_backoff_moves_only_with_the_virtual_clock() -> None:
    """Attempts wait out their backoff on the virtual clock: nothing happens until it is
    advanced, then each attempt comes exactly at its delay, and the last failure is
    dead-lettered with the virtual time."""
    async with ChoreoKit(clock=VirtualClock(start=T0)) as kit:
        retry = Retry(max_attempts=3, initial_delay=10, multiplier=2, jitter=0)
        bus = await kit.bus("billing", policy=Policy(retry=retry)).start()
        handler = Failing(kit.clock)
        await bus.subscribe("invoices", handler, group="billing")
        await bus.publish("invoices", type="invoice.issued", data={"n": 1})
        await kit.settle()
        assert [0.0] == handler.calls
        await kit.advance(9.999)
        assert [0.0] == handler.calls
        await kit.advance(0.001)
        assert pytest.approx([0.0, 10.0]) == handler.calls
        await kit.advance(timedelta(seconds=19))
        kit.assert_not_published("invoices.dlq")
        await kit.advance(1)
        assert pytest.approx([0.0, 10.0, 30.0]) == handler.calls
        (dead,) = kit.dead_letters("invoices")
        assert ("handler-error", 3) == (
            dead.extensions["dlqreason"],
            dead.extensions["dlqattempts"],
        )
        assert "2030-01-01T09:00:30Z" == dead.extensions["dlqtime"]


async def test_ttl_expiry_follows_the_virtual_clock() -> None:
    """An event with a 60 s TTL is handled before 60 virtual seconds passed and dead-lettered
    as expired after, by a group reading it then."""
    async with ChoreoKit(clock=VirtualClock(start=T0)) as kit:
        bus = await kit.bus("shop").start()
        sent = await bus.publish("quotes", type="quote.given", data={"price": 3}, ttl=60)
        assert "2030-01-01T09:01:00Z" == sent.extensions["expiration"]
        handled: list[str] = []

        async def handle(event: Event) -> None:
            handled.append(event.id)

        await kit.advance(59)
        await bus.subscribe("quotes", handle, group="early", from_beginning=True)
        await kit.settle()
        await kit.advance(2)
        await bus.subscribe("quotes", handle, group="late", from_beginning=True)
        await kit.settle()
        assert [sent.id] == handled
        (dead,) = kit.dead_letters("quotes")
        assert ("expired", "late", sent.id) == (
            dead.extensions["dlqreason"],
            dead.extensions["dlqgroup"],
            dead.id,
        )


async def test_the_breaker_cool_down_follows_the_virtual_clock() -> None:
    """An open breaker holds the next event for its whole virtual cool-down, then tries it
    once (half-open) and, the downstream being back, handles it instead of dead-lettering."""
    async with ChoreoKit() as kit:
        policy = Policy(retry=Retry(max_attempts=1), breaker=CircuitBreaker(1, cooldown=30))
        bus = await kit.bus("mailer", policy=policy).start()
        handler = Failing(kit.clock)
        subscriber = await bus.subscribe("mails", handler, group="mailer")
        for n in (1, 2):
            await bus.publish("mails", type="mail.requested", data={"n": n}, key="k")
        await kit.settle()
        assert (1, 2) == (len(kit.dead_letters("mails")), len(handler.calls))
        await kit.advance(29.5)
        assert (1, 2) == (len(kit.dead_letters("mails")), len(handler.calls))
        handler.down = False
        await kit.advance(0.5)
        assert pytest.approx([0.0, 0.0, 30.0]) == handler.calls
        assert 1 == len(kit.dead_letters("mails"))
        assert 1 == subscriber.handled


async def test_delayed_delivery_follows_the_virtual_clock() -> None:
    """An event published with a delay reaches no group before the virtual clock passed its
    time, and is handled as soon as it did; ``deliver_at`` counts on the same clock."""
    async with ChoreoKit(clock=VirtualClock(start=T0)) as kit:
        bus = await kit.bus("reminders").start()
        handled: list[tuple[str, float]] = []

        async def handle(event: Event) -> None:
            handled.append((event.type, kit.clock.monotonic()))

        await bus.subscribe("reminders", handle, group="mailer")
        sent = await bus.publish("reminders", type="reminder.due", delay=timedelta(hours=1))
        await bus.publish("reminders", type="reminder.noon", deliver_at=T0 + timedelta(hours=3))
        assert "2030-01-01T10:00:00Z" == sent.extensions["deliverat"]
        await kit.advance(timedelta(minutes=59, seconds=59))
        assert [] == handled
        await kit.advance(timedelta(seconds=1))
        assert [("reminder.due", 3600.0)] == handled
        await kit.advance(timedelta(hours=2))
        assert [("reminder.due", 3600.0), ("reminder.noon", 10800.0)] == handled


async def test_a_kit_closes_while_a_handler_waits_out_a_virtual_backoff() -> None:
    """Closing wakes what sleeps on the clock, so the subscription stops instead of waiting
    for an advance that never comes."""
    kit = ChoreoKit()
    bus = await kit.bus(policy=Policy(retry=Retry(max_attempts=5, initial_delay=3600))).start()
    handler = Failing(kit.clock)
    await bus.subscribe("jobs", handler, group="worker")
    await bus.publish("jobs", type="job.queued")
    await kit.settle()
    assert (1, 1) == (len(handler.calls), kit.clock.sleepers)
    await asyncio.wait_for(kit.close(), timeout=30)
    assert 0 == kit.clock.sleepers


def test_a_bus_hands_its_clock_to_its_adapter() -> None:
    """What an adapter schedules itself (delayed delivery) follows the bus's clock."""
    clock = VirtualClock()
    bus = Bus("memory://", clock=clock)
    assert (clock, clock) == (bus.clock, getattr(bus.adapter, "clock", None))


async def test_a_batch_subscription_without_a_window_is_handled_by_settling() -> None:
    """With ``max_wait=0`` a batch is what is there: ``settle`` sees it handled."""
    async with ChoreoKit() as kit:
        bus = await kit.bus().start()
        batches: list[int] = []

        async def handle(events: list[Event]) -> None:
            batches.append(len(events))

        await bus.subscribe_batch("rows", handle, group="loader", max_batch=10, max_wait=0)
        await bus.publish_many("rows", [{"type": "row.added"}] * 3)
        await kit.settle()
        assert 3 == sum(batches)


# -- captured events --------------------------------------------------------------------------


async def test_published_events_are_captured_in_order_and_filtered() -> None:
    """Every event on the kit's broker is there, in publish order, filtered by attributes."""
    async with ChoreoKit() as kit:
        bus = await kit.bus("orders").start()
        await bus.publish("orders", type="order.placed", data={"id": 1}, correlation_id="o-1")
        await bus.publish("orders", type="order.paid", data={"id": 1}, correlation_id="o-1")
        await bus.publish("audit", type="order.placed", data={"id": 2}, key="2")
        assert ["order.placed", "order.paid"] == [e.type for e in kit.published("orders")]
        assert [{"id": 1}, {"id": 2}] == [e.data for e in kit.published(type="order.placed")]
        assert [{"id": 2}] == [e.data for e in kit.published(key="2")]
        (paid,) = kit.assert_published("orders", type="order.paid", correlation_id="o-1", count=1)
        assert {"id": 1} == paid.data
        kit.assert_published(where=lambda e: e.data["id"] == 2)
        kit.assert_not_published("orders", type="order.cancelled")


async def test_a_failed_assertion_lists_what_was_published() -> None:
    """The message names the criteria, how many matched, and each event on the topic."""
    async with ChoreoKit() as kit:
        bus = await kit.bus("orders").start()
        await bus.publish("orders", type="order.placed", data={"id": 1}, correlation_id="o-1")
        with pytest.raises(AssertionError) as missing:
            kit.assert_published("orders", type="order.placed", data={"id": 2})
        assert (
            "expected at least one event on 'orders' with type='order.placed', data={'id': 2}; "
            "0 matched, of 1 published on 'orders':\n"
            "  1. order.placed from orders correlationid='o-1' data={'id': 1}"
        ) == str(missing.value)
        with pytest.raises(AssertionError, match=r"expected no event on 'orders' .*; 1 matched"):
            kit.assert_not_published("orders", type="order.placed")
        with pytest.raises(AssertionError, match=r"expected exactly 2 events .*; 1 matched"):
            kit.assert_published("orders", count=2)
        with pytest.raises(AssertionError) as empty:
            kit.assert_published("payments")
        assert str(empty.value).endswith(
            "Nothing was published on 'payments'; topics with events: orders"
        )
        with pytest.raises(TypeError, match="unknown event criteria typ; use correlation_id"):
            kit.published("orders", typ="order.placed")


async def test_wait_for_returns_what_handlers_publish_and_fails_clearly() -> None:
    """``wait_for`` returns the events handlers publish in reaction; when they never come it
    fails naming the virtual time it did not advance."""
    async with ChoreoKit(clock=VirtualClock(start=T0)) as kit:
        bus = await kit.bus("payments").start()

        async def pay(event: Event) -> None:
            await bus.publish("payments", type="payment.authorized", data=event.data)

        await bus.subscribe("orders", pay, group="payments")
        await bus.publish("orders", type="order.placed", data={"id": 7})
        (paid,) = await kit.wait_for("payments", type="payment.authorized")
        assert {"id": 7} == paid.data
        with pytest.raises(AssertionError) as late:
            await kit.wait_for("payments", type="payment.refunded", timeout=0.05)
        assert "waited 0.05s for 1 event on 'payments' with type='payment.refunded'" in str(
            late.value
        )
        assert "(virtual time 2030-01-01T09:00:00+00:00, not advanced while waiting)" in str(
            late.value
        )


async def test_kits_do_not_see_each_others_events() -> None:
    """Each kit has its own broker."""
    async with ChoreoKit() as first, ChoreoKit() as second:
        await (await first.bus().start()).publish("t", type="x")
        assert ([1], []) == ([len(first.published("t"))], second.published("t"))


# -- the pytest plugin ------------------------------------------------------------------------


async def test_the_plugin_fixtures_give_a_kit_on_the_virtual_clock(
    choreo_kit: ChoreoKit, virtual_clock: VirtualClock
) -> None:
    """``choreo_kit`` runs on ``virtual_clock``."""
    assert virtual_clock is choreo_kit.clock
    bus = await choreo_kit.bus().start()
    await bus.publish("t", type="x")
    choreo_kit.assert_published("t", type="x", count=1)


def test_loading_the_plugin_imports_nothing_of_ours() -> None:
    """pytest loads plugins before coverage starts: the plugin module must not import broker
    (or coverage would miss broker's module-level lines in every test run)."""
    code = (
        "import sys, pytest_choreograph\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'broker', 'schemas', 'connectors', 'saga_monitor', 'choreo'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert "[]" == result.stdout.strip(), result.stderr


def test_the_plugin_is_registered_for_users_test_suites(tmp_path: Path) -> None:
    """A user's test suite (strict asyncio mode, no conftest) gets the fixtures from the
    installed entry point."""
    (tmp_path / "test_user.py").write_text(
        "from datetime import timedelta\n"
        "import pytest\n\n"
        "@pytest.mark.asyncio\n"
        "async def test_kit(choreo_kit, virtual_clock):\n"
        "    bus = await choreo_kit.bus('svc').start()\n"
        "    await bus.publish('t', type='x', ttl=60)\n"
        "    await virtual_clock.advance(timedelta(hours=2))\n"
        "    choreo_kit.assert_published('t', type='x', count=1)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == result.returncode, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
