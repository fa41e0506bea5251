"""The inventory service: reserves stock for placed orders, releases it when payment fails.

python examples/inventory_service.py --broker sqlite:///.choreo/examples.db
"""

from __future__ import annotations

import asyncio

from _common import parse_broker, serve

from broker import Bus, Event

bus = Bus(parse_broker(__doc__ or ""), source="inventory-service")


@bus.subscriber("orders", group="inventory-service")
async def reserve(event: Event) -> None:
    if event.type != "order.placed":
        return
    order = event.data
    in_stock = order["items"] <= 3  # a warehouse that never has 4 of anything
    kind = "inventory.reserved" if in_stock else "inventory.unavailable"
    await bus.publish("inventory", type=kind, data=order, key=order["orderId"])


@bus.subscriber("payments", group="inventory-service")
async def release(event: Event) -> None:
    if event.type == "payment.failed":  # compensate the reservation
        order = event.data
        await bus.publish("inventory", type="inventory.released", data=order, key=order["orderId"])


if __name__ == "__main__":
    asyncio.run(serve(bus))
