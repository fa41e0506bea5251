"""The order service: takes orders into its own database and publishes through an outbox.

Placing an order writes the order row and its `order.placed` event in ONE transaction; the
outbox relay publishes what committed. When payment fails or stock is missing, the order is
cancelled the same way.

    python examples/order_service.py --broker sqlite:///.choreo/examples.db
    # then, in another terminal, place orders:
    python examples/place_orders.py 10
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from _common import parse_broker, serve

from broker import Bus, Event
from connectors import add_event, init_outbox
from connectors.runtime import build_relay

DATABASE = Path(".choreo/orders.db")
DATABASE.parent.mkdir(parents=True, exist_ok=True)
init_outbox(f"sqlite:///{DATABASE}")
db = sqlite3.connect(DATABASE)
db.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, status TEXT NOT NULL)")

BROKER = parse_broker(__doc__ or "")
bus = Bus(BROKER, source="order-service")


@bus.subscriber(["payments", "inventory"], group="order-service")
async def cancel(event: Event) -> None:
    if event.type not in ("payment.failed", "inventory.unavailable"):
        return
    order = event.data
    with db:  # the state change and its event commit together, or not at all
        db.execute("UPDATE orders SET status = 'cancelled' WHERE id = ?", (order["orderId"],))
        add_event(
            db,
            aggregatetype="orders",
            aggregateid=order["orderId"],
            type="order.cancelled",
            payload=order,
            headers={"correlationid": order["orderId"], "causationid": event.id},
        )


async def main() -> None:
    relay = build_relay(
        f"sqlite:///{DATABASE}",
        BROKER,
        route="{aggregatetype}",
        source="order-service",
        correlation_field="orderId",
    )
    relaying = asyncio.create_task(relay.run())
    try:
        await serve(bus)
    finally:
        relay.stop()
        await relaying


if __name__ == "__main__":
    asyncio.run(main())
