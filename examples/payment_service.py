"""The payment service: charges the customer once stock is reserved.

python examples/payment_service.py --broker sqlite:///.choreo/examples.db
"""

from __future__ import annotations

import asyncio

from _common import parse_broker, serve

from broker import Bus, Event, Policy, Retry

bus = Bus(
    parse_broker(__doc__ or ""),
    source="payment-service",
    policy=Policy(retry=Retry(max_attempts=5, initial_delay=0.2)),
)


@bus.subscriber("inventory", group="payment-service")
async def charge(event: Event) -> None:
    if event.type != "inventory.reserved":
        return
    order = event.data
    approved = order["amount"] < 400  # the card limit
    kind = "payment.authorized" if approved else "payment.failed"
    await bus.publish("payments", type=kind, data=order, key=order["orderId"])


if __name__ == "__main__":
    asyncio.run(serve(bus))
