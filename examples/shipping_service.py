"""The shipping service: ships paid orders.

python examples/shipping_service.py --broker sqlite:///.choreo/examples.db
"""

from __future__ import annotations

import asyncio

from _common import parse_broker, serve

from broker import Bus, Event

bus = Bus(parse_broker(__doc__ or ""), source="shipping-service")


@bus.subscriber("payments", group="shipping-service")
async def ship(event: Event) -> None:
    if event.type == "payment.authorized":
        order = event.data
        await bus.publish("shipping", type="order.shipped", data=order, key=order["orderId"])


if __name__ == "__main__":
    asyncio.run(serve(bus))
