"""The demo's order-fulfilment choreography: four small services that only react to events.

    order.placed -> inventory: inventory.reserved | inventory.unavailable
    inventory.reserved -> payment: payment.authorized | payment.failed
    payment.authorized -> shipping: order.shipped
    payment.failed -> inventory: inventory.released (compensation), order: order.cancelled
    inventory.unavailable -> order: order.cancelled

Nobody orchestrates: each service subscribes to the topics it cares about with its own group
and publishes what it decided. Deterministic "faults" come from the order number so every run
shows the same mix: declined cards (compensation), out-of-stock items (failure), a shipping
service that stalls on some orders (stuck sagas) and one poison order (dead letter).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from broker import Bus, Event
from connectors import add_event, init_outbox

__all__ = ["ORDER_TOPICS", "OrderStore", "Services", "order_payload"]

ORDER_TOPICS = ("orders", "inventory", "payments", "shipping")
Publish = Callable[..., Awaitable[Any]]


def order_payload(number: int) -> dict[str, Any]:
    """The order the demo places as its ``number``-th order."""
    return {
        "orderId": f"order-{number:04d}",
        "customer": f"customer-{number % 17}",
        "amount": round(10 + (number * 37) % 490 + 0.99, 2),
        "items": 1 + number % 4,
        "poison": number == 13,
    }


@dataclass(frozen=True, slots=True)
class Faults:
    """Which orders go wrong, and how (every n-th order)."""

    declined_every: int = 9
    out_of_stock_every: int = 23
    stalled_every: int = 31

    def declined(self, n: int) -> bool:
        return n % self.declined_every == 4

    def out_of_stock(self, n: int) -> bool:
        return n % self.out_of_stock_every == 7

    def stalled(self, n: int) -> bool:
        return n % self.stalled_every == 11


class OrderStore:
    """The order service's own database: an ``orders`` table and its transactional outbox.

    The order service never publishes directly: it changes an order and records the event in
    the same SQLite transaction, and the outbox relay publishes what committed.
    """

    def __init__(self, path: str) -> None:
        init_outbox(f"sqlite:///{path}")
        self.conn = sqlite3.connect(path)
        self.conn.execute("PRAGMA journal_mode=WAL")
        with self.conn:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT,"
                " amount REAL, status TEXT NOT NULL)"
            )

    def place(self, order: dict[str, Any]) -> None:
        """Insert the order and its ``order.placed`` event in one transaction."""
        with self.conn:
            self.conn.execute(
                "INSERT INTO orders VALUES (?, ?, ?, 'placed')",
                (order["orderId"], order["customer"], order["amount"]),
            )
            self._event(order, "order.placed", {})

    def cancel(self, order: dict[str, Any], cause: Event) -> None:
        """Mark the order cancelled and record ``order.cancelled``, caused by ``cause``."""
        with self.conn:
            self.conn.execute(
                "UPDATE orders SET status = 'cancelled' WHERE id = ?", (order["orderId"],)
            )
            headers = {"causationid": cause.id, "traceparent": cause.traceparent or ""}
            self._event(order, "order.cancelled", headers)

    def _event(self, order: dict[str, Any], kind: str, headers: dict[str, str]) -> None:
        add_event(
            self.conn,
            aggregatetype="orders",
            aggregateid=order["orderId"],
            type=kind,
            payload=order,
            headers={"correlationid": order["orderId"], **{k: v for k, v in headers.items() if v}},
        )

    def statuses(self) -> dict[str, int]:
        """How many orders per status."""
        rows = self.conn.execute("SELECT status, count(*) FROM orders GROUP BY status")
        return {status: count for status, count in rows}

    def close(self) -> None:
        self.conn.close()


def _number(event: Event) -> int:
    return int(str(event.data["orderId"]).rsplit("-", 1)[1])


class Services:
    """The four services, each a set of handlers on its own Bus."""

    def __init__(
        self, orders: OrderStore | None = None, faults: Faults | None = None, *, work: float = 0.0
    ) -> None:
        self.orders = orders
        self.faults = faults or Faults()
        self.work = work

    async def start(self, make_bus: Callable[[str], Bus]) -> list[Bus]:
        """Start the services; ``make_bus(name)`` builds each one's Bus."""
        plan = {
            "inventory-service": [("orders", self.reserve), ("payments", self.release)],
            "payment-service": [("inventory", self.charge)],
            "shipping-service": [("payments", self.ship)],
            "order-service": [("payments", self.cancel), ("inventory", self.cancel)],
        }
        buses = []
        for name, subscriptions in plan.items():
            bus = await make_bus(name).start()
            for topic, handler in subscriptions:
                await bus.subscribe(topic, _bound(bus, handler), group=name)
            buses.append(bus)
        return buses

    async def reserve(self, bus: Bus, event: Event) -> None:
        """inventory-service: reserve stock for a placed order."""
        if event.type != "order.placed":
            return
        if event.data.get("poison"):
            raise ValueError(f"cannot parse items of {event.data['orderId']}: malformed SKU")
        await asyncio.sleep(self.work)
        kind = (
            "inventory.unavailable"
            if self.faults.out_of_stock(_number(event))
            else ("inventory.reserved")
        )
        await bus.publish("inventory", type=kind, data=event.data, key=event.data["orderId"])

    async def charge(self, bus: Bus, event: Event) -> None:
        """payment-service: charge the customer once stock is reserved."""
        if event.type != "inventory.reserved":
            return
        await asyncio.sleep(self.work)
        kind = "payment.failed" if self.faults.declined(_number(event)) else "payment.authorized"
        await bus.publish("payments", type=kind, data=event.data, key=event.data["orderId"])

    async def release(self, bus: Bus, event: Event) -> None:
        """inventory-service: give the stock back when the payment failed (compensation)."""
        if event.type == "payment.failed":
            await bus.publish(
                "inventory", type="inventory.released", data=event.data, key=event.data["orderId"]
            )

    async def ship(self, bus: Bus, event: Event) -> None:
        """shipping-service: ship paid orders (and stall on some, so their sagas get stuck)."""
        if event.type != "payment.authorized" or self.faults.stalled(_number(event)):
            return
        await asyncio.sleep(self.work)
        await bus.publish(
            "shipping", type="order.shipped", data=event.data, key=event.data["orderId"]
        )

    async def cancel(self, bus: Bus, event: Event) -> None:
        """order-service: cancel the order when payment failed or stock is missing."""
        if event.type not in ("payment.failed", "inventory.unavailable"):
            return
        if self.orders is not None:
            self.orders.cancel(event.data, event)  # through the outbox
        else:
            await bus.publish(
                "orders", type="order.cancelled", data=event.data, key=event.data["orderId"]
            )


def _bound(
    bus: Bus, handler: Callable[[Bus, Event], Awaitable[None]]
) -> Callable[[Event], Awaitable[None]]:
    async def handle(event: Event) -> None:
        await handler(bus, event)

    return handle
