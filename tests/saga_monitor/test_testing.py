"""A saga of three services tested on virtual time: stuck after two hours, in milliseconds,
the same way every run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from broker import Bus, Event
from broker.testing import ChoreoKit, VirtualClock
from saga_monitor import SagaMonitor, open_saga_store, parse_definitions
from saga_monitor.testing import start_monitor

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)

SAGAS = """
topics: [orders, payments, shipping]
sagas:
  - name: order-fulfilment
    start: [order.placed]
    steps:
      - event: payment.authorized
        within: 5m
        compensation: payment.refunded
      - event: order.shipped
        within: 1h
    complete: [order.shipped]
    fail: [payment.failed]
"""


@dataclass
class Shop:
    """Three services that only talk through events."""

    kit: ChoreoKit
    orders: Bus
    monitor: SagaMonitor

    async def place(self, order_id: str, *, in_stock: bool) -> None:
        await self.orders.publish(
            "orders",
            type="order.placed",
            data={"id": order_id, "in_stock": in_stock},
            correlation_id=order_id,
        )

    def states(self) -> dict[str, str]:
        return {i.correlation_id: i.state for i in self.monitor.store.instances()}


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    """Order, payment and shipping services and a saga monitor on one kit; shipping never
    ships what is out of stock (the bug the monitor has to find)."""
    async with ChoreoKit(clock=VirtualClock(start=T0)) as kit:
        monitor = await start_monitor(kit, parse_definitions(SAGAS))
        orders = await kit.bus("order-service").start()
        payments = await kit.bus("payment-service").start()
        shipping = await kit.bus("shipping-service").start()

        async def charge(event: Event) -> None:
            await payments.publish("payments", type="payment.authorized", data=event.data)

        async def ship(event: Event) -> None:
            if event.data["in_stock"]:
                await shipping.publish("shipping", type="order.shipped", data=event.data)

        await payments.subscribe("orders", charge, group="payment-service")
        await shipping.subscribe("payments", ship, group="shipping-service")
        yield Shop(kit, orders, monitor)


async def test_a_saga_is_stuck_after_two_hours_of_virtual_time(shop: Shop) -> None:
    """The order that is never shipped is running until its deadline passes and stuck after,
    with a saga.stuck alert naming what it waits for; the shipped one completed."""
    await shop.place("o-1", in_stock=True)
    await shop.place("o-2", in_stock=False)
    await shop.kit.wait_for("payments", count=2)
    await shop.kit.advance(timedelta(minutes=59))
    assert {"o-1": "completed", "o-2": "running"} == shop.states()
    shop.kit.assert_not_published("saga.alerts", type="saga.stuck")
    await shop.kit.advance(timedelta(hours=2) - timedelta(minutes=59))
    assert {"o-1": "completed", "o-2": "stuck"} == shop.states()
    (alert,) = shop.kit.assert_published("saga.alerts", type="saga.stuck", count=1)
    assert ("o-2", ["order.shipped"], "2030-01-01T10:00:00Z") == (
        alert.correlationid,
        alert.data["expected_next"],
        alert.data["deadline"][:19] + "Z",
    )
    assert T0 + timedelta(hours=2) == shop.kit.clock.now()


async def test_the_verdict_comes_at_the_same_virtual_moment_every_run(shop: Shop) -> None:
    """The stuck alert is stamped at the first tick after the deadline plus the monitor's
    allowed delivery delay: one hour, one second and a tick, on every run."""
    await shop.place("o-3", in_stock=False)
    await shop.kit.wait_for("payments")
    await shop.kit.advance(timedelta(hours=3))
    (alert,) = shop.kit.assert_published("saga.alerts", type="saga.stuck")
    assert T0 + timedelta(hours=1, seconds=10) == alert.time


async def test_a_monitor_follows_the_clock_of_its_bus() -> None:
    """Given no clock, the monitor judges deadlines on its bus's clock (here virtual)."""
    async with ChoreoKit(clock=VirtualClock(start=T0)) as kit:
        monitor = SagaMonitor(
            parse_definitions(SAGAS),
            kit.bus("saga-monitor"),
            open_saga_store("memory://"),
            tick_interval=30,
        )
        await monitor.start()
        kit.on_close(monitor.stop)
        bus = await kit.bus("order-service").start()
        await bus.publish("orders", type="order.placed", correlation_id="o-9")
        await kit.settle()
        await kit.advance(timedelta(minutes=10))
        assert ["stuck"] == [i.state for i in monitor.store.instances()]
        assert T0 == monitor.store.instances()[0].started
