"""What a bus declares it publishes and consumes: ``bus.publisher`` (a plain handle and a
decorator) and subscriptions, recorded without sending anything. Real memory bus."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel, Field

from broker import Bus, ConfigurationError, Event, PayloadError
from broker.declarations import PublicationSpec, Publisher, SubscriptionSpec
from tests.helpers import Collector, eventually


class Order(BaseModel):
    """An order."""

    order_id: str = Field(alias="orderId")
    total: float = Field(ge=0)


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    """A started bus on a memory broker of its own."""
    async with Bus(f"memory://{uuid.uuid4().hex}", source="shop") as started:
        yield started


async def _received(bus: Bus, topic: str) -> Collector:
    got = Collector()
    await bus.subscribe(topic, got, group="probe")
    return got


def test_publisher_declares_without_sending() -> None:
    """A publisher declared on a bus that never started is recorded, and nothing is sent."""
    idle = Bus("memory://", source="shop")
    publisher = idle.publisher("orders", type="order.placed", schema=Order, description="Placed.")
    assert (PublicationSpec("orders", "order.placed", Order, "Placed."),) == (
        idle.declarations.publications
    )
    assert ("orders", "order.placed") == (publisher.topic, publisher.type)


async def test_publisher_publishes_a_model_as_json(bus: Bus) -> None:
    """``publish`` sends the declared type to the declared topic, a model dumped by alias, and
    passes the publish options through."""
    got = await _received(bus, "orders")
    publisher = bus.publisher("orders", type="order.placed", schema=Order)
    sent = await publisher.publish(Order(orderId="o-1", total=9.5), key="o-1")
    await eventually(lambda: len(got.events) == 1)
    event = got.events[0]
    assert ("order.placed", "shop", {"orderId": "o-1", "total": 9.5}, "o-1") == (
        event.type,
        event.source,
        event.data,
        event.partitionkey,
    )
    assert sent.id == event.id


async def test_publisher_validates_a_mapping_against_its_model(bus: Bus) -> None:
    """A dict given to a model's publisher is validated by the model: a bad one is refused
    with one line naming the field, a good one is sent as the model dumps it."""
    publisher = bus.publisher("orders", type="order.placed", schema=Order)
    with pytest.raises(PayloadError, match=r"^data for 'order.placed' .* Order: total: ") as bad:
        await publisher.publish({"orderId": "o-1", "total": -1})
    assert "\n" not in str(bad.value)
    sent = await publisher.publish({"orderId": "o-2", "total": "3"})
    assert {"orderId": "o-2", "total": 3.0} == sent.data


async def test_publisher_decorates_sync_and_async_builders(bus: Bus) -> None:
    """Calling a decorated builder (plain or async) builds the data, publishes it and returns
    the event sent; the wrapper keeps the builder's name and doc and knows its publisher."""
    got = await _received(bus, "orders")

    @bus.publisher("orders", type="order.placed", schema=Order)
    def placed(order_id: str, total: float) -> Order:
        """Place an order."""
        return Order(orderId=order_id, total=total)

    @bus.publisher("orders", type="order.cancelled")
    async def cancelled(order_id: str) -> dict[str, str]:
        return {"orderId": order_id}

    first = await placed("o-1", 1.0)
    second = await cancelled("o-1")
    await eventually(lambda: len(got.events) == 2)
    received = {e.id: (e.type, e.data) for e in got.events}  # no key: no order between them
    assert {
        first.id: ("order.placed", {"orderId": "o-1", "total": 1.0}),
        second.id: ("order.cancelled", {"orderId": "o-1"}),
    } == received
    assert ("placed", "Place an order.") == (placed.__name__, placed.__doc__)
    assert isinstance(placed.publisher, Publisher)  # type: ignore[attr-defined]


@pytest.mark.parametrize("schema", [42, "", Order(orderId="o", total=1), [{"type": "object"}]])
def test_a_schema_of_another_kind_is_refused_at_declaration(schema: object) -> None:
    """``schema=`` takes a model class, a JSON Schema dict or a subject name; anything else is
    a ConfigurationError when declared, on publishers and subscriptions alike."""
    idle = Bus("memory://")
    with pytest.raises(ConfigurationError, match="is not a payload schema"):
        idle.publisher("orders", type="order.placed", schema=schema)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="is not a payload schema"):
        idle.subscriber("orders", group="g", schema=schema)  # type: ignore[arg-type]
    assert ((), ()) == (idle.declarations.publications, idle.declarations.subscriptions)


def test_a_publisher_needs_a_topic_and_a_type() -> None:
    """An empty topic or type is refused."""
    with pytest.raises(ConfigurationError, match="needs a topic and a CloudEvents type"):
        Bus("memory://").publisher("orders", type="")


async def test_subscriptions_are_declared_once_before_and_after_start() -> None:
    """A ``subscriber`` is declared when decorated (before start) and stays one declaration
    once started; ``subscribe`` on a started bus declares too, with what it describes."""
    bus = Bus(f"memory://{uuid.uuid4().hex}", source="shop")

    @bus.subscriber(["orders", "payments"], group="billing", type="order.placed", schema=Order)
    async def bill(event: Event) -> None:
        """Bills an order."""

    early = bus.declarations.subscriptions
    async with bus:
        other = Collector()
        await bus.subscribe("returns", other, group="returns", schema="returns-value")
        assert [
            SubscriptionSpec(("orders", "payments"), "billing", bill, "order.placed", Order),
            SubscriptionSpec(("returns",), "returns", other, None, "returns-value"),
        ] == list(bus.declarations.subscriptions)
    assert (
        "tests.test_declarations.test_subscriptions_are_declared_once_before_and_after_start"
        ".<locals>.bill",
        "Bills an order.",
    ) == (early[0].handler_name, early[0].summary)


async def test_describing_a_subscription_does_not_filter_it(bus: Bus) -> None:
    """``type=`` on a subscription describes the handler; every event still reaches it."""
    got = Collector()
    await bus.subscribe("orders", got, group="g", type="order.placed")
    await bus.publish("orders", type="order.cancelled", data={})
    await eventually(lambda: len(got.events) == 1)
    assert ["order.cancelled"] == [e.type for e in got.events]
