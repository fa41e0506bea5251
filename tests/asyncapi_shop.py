"""An example application for the AsyncAPI tests: four services of a shop, one bus each.

Each service sits on another backend (Kafka, RabbitMQ, NATS, SQLite), so one document shows
every binding. Payloads are pydantic models, a JSON Schema dict and registry subjects (Avro,
JSON Schema, Protobuf) read from the registry at ``SHOP_REGISTRY_URL``; nothing connects to a
broker on import. ``SUBJECTS`` holds the schemas the tests register there first.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from broker import Bus, Event
from schemas import RegistryClient, SchemaCodec

SUBJECTS = {
    "payments-value": (
        "AVRO",
        json.dumps(
            {
                "type": "record",
                "name": "PaymentAuthorized",
                "namespace": "shop.payments",
                "fields": [
                    {"name": "orderId", "type": "string", "doc": "The order paid for."},
                    {
                        "name": "amount",
                        "type": {
                            "type": "bytes",
                            "logicalType": "decimal",
                            "precision": 10,
                            "scale": 2,
                        },
                    },
                    {"name": "card", "type": ["null", "string"], "default": None},
                ],
            }
        ),
    ),
    "inventory-value": (
        "JSON",
        json.dumps(
            {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "title": "InventoryReserved",
                "type": "object",
                "properties": {
                    "orderId": {"type": "string"},
                    "items": {"type": "array", "items": {"$ref": "#/definitions/Item"}},
                },
                "required": ["orderId", "items"],
                "definitions": {
                    "Item": {
                        "type": "object",
                        "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                    }
                },
            }
        ),
    ),
    "shipping-value": (
        "PROTOBUF",
        'syntax = "proto3";\npackage shop;\n\nmessage OrderShipped {\n  string order_id = 1;\n'
        "  string carrier = 2;\n}\n",
    ),
}


class Line(BaseModel):
    """One line of an order."""

    sku: str
    qty: int = Field(ge=1)


class Order(BaseModel):
    """An order placed by a customer."""

    order_id: str = Field(alias="orderId")
    customer: str
    lines: list[Line]
    total: float
    placed: datetime
    channel: Literal["web", "store"] = "web"


class OrderCancelled(BaseModel):
    """Why an order was cancelled."""

    order_id: str = Field(alias="orderId")
    reason: str


PAYMENT_FAILED = {
    "title": "PaymentFailed",
    "type": "object",
    "properties": {"orderId": {"type": "string"}, "reason": {"type": "string"}},
    "required": ["orderId"],
}

registry = RegistryClient.from_url(os.environ.get("SHOP_REGISTRY_URL", "sqlite:///.choreo/shop.db"))

orders = Bus("kafka://kafka.shop.internal:9092", source="order-service")
payments = Bus(
    "amqp://shop:secret@rabbit.shop.internal:5672/shop",
    source="payment-service",
    codec=SchemaCodec(registry, {"payments": "payments-value"}),
)
inventory = Bus("nats://nats.shop.internal:4222", source="inventory-service")
shipping = Bus("sqlite:///.choreo/shop-broker.db", source="shipping-service")

order_placed = orders.publisher(
    "orders", type="order.placed", schema=Order, description="A customer placed an order."
)


@orders.publisher("orders", type="order.cancelled", schema=OrderCancelled)
def order_cancelled(order_id: str, reason: str) -> OrderCancelled:
    """Cancel an order."""
    return OrderCancelled(orderId=order_id, reason=reason)


@orders.subscriber(["payments", "inventory"], group="order-service")
async def cancel_unpaid(event: Event) -> None:
    """Cancels the order when its payment failed or its stock is missing."""


payments.publisher("payments", type="payment.authorized", schema="payments-value")
payments.publisher("payments", type="payment.failed", schema=PAYMENT_FAILED)


@payments.subscriber("inventory", group="payment-service", type="inventory.reserved")
async def charge(event: Event) -> None:
    """Charges the customer once the stock is reserved."""


inventory.publisher("inventory", type="inventory.reserved", schema="inventory-value")


@inventory.subscriber("orders", group="inventory-service", type="order.placed", schema=Order)
async def reserve(event: Event) -> None:
    """Reserves the stock of a placed order."""


shipping.publisher("shipping", type="order.shipped", schema="shipping-value")


@shipping.subscriber("payments", group="shipping-service", type="payment.authorized")
async def ship(event: Event) -> None:
    """Ships a paid order."""


@shipping.subscriber("returns", group="shipping-service")
async def take_back(event: Event) -> None:
    """Takes back returned parcels (nobody declares what is published there)."""


services = [orders, payments, inventory, shipping]


def make_services() -> list[Bus]:
    """The shop's buses, for ``MODULE:ATTR`` naming a function."""
    return services
