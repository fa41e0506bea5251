"""Who owes what, on a real broker: owners named or learned, the board, and the dead letter
that explains a stuck instance."""

from __future__ import annotations

import asyncio
from pathlib import Path

from broker import Bus, DeadLetter, Event, Policy, Retry
from saga_monitor import Correlator, SagaStore, load_definitions, open_saga_store
from saga_monitor.board import build_board, learn_owners
from saga_monitor.dead_letters import DeadLetterLinker
from saga_monitor.queries import Query
from tests.saga_monitor.helpers import EXAMPLE, at, event, example

NAMED = EXAMPLE.read_text().replace(
    "      - event: inventory.reserved\n",
    "      - event: inventory.reserved\n        service: stock-service\n",
)


def _shop(store: SagaStore) -> None:
    """Ten orders paid by payment-service in 2 s, reserved by inventory-service in 3 s (early
    ones) then 20 s (recent ones); order-stuck waits for inventory.reserved since 90 s."""
    correlator = Correlator(example())
    for n in range(10):
        corr, t = f"order-{n}", n * 5.0
        slow = 20.0 if n >= 5 else 3.0
        for type_, seconds, source in (
            ("order.placed", t, "shop"),
            ("payment.authorized", t + 2, "payment-service"),
            ("inventory.reserved", t + 2 + slow, "inventory-service"),
        ):
            correlator.apply(
                store, event(type_, corr, seconds, source=source), topic="x", now=at(0)
            )
    correlator.apply(
        store, event("order.placed", "order-stuck", 88, source="shop"), topic="o", now=at(88)
    )
    correlator.apply(
        store,
        event("payment.authorized", "order-stuck", 90, source="payment-service"),
        topic="p",
        now=at(90),
    )
    correlator.tick(store, at(200))


def test_owners_are_named_by_the_definition_or_learned_from_sources(tmp_path: Path) -> None:
    """A step's `service:` wins; otherwise the source of its events says who owes it."""
    store = open_saga_store("memory://")
    _shop(store)
    found = store.search(Query(limit=100)).items
    learned = learn_owners(example(), found)
    assert ("payment-service", "inventory-service") == (
        learned.of("payment.authorized"),
        learned.of("inventory.reserved"),
    )
    named_file = tmp_path / "named.yaml"
    named_file.write_text(NAMED)
    named = learn_owners(load_definitions(named_file), found)
    assert ("stock-service", "stock-service") == (
        named.of("inventory.reserved"),
        named.of("inventory.released"),
    )


def test_board_names_the_late_service_with_its_latency_against_its_baseline() -> None:
    """The board puts the service the stuck order waits on first, with its oldest wait, and
    shows its recent p50/p99 step latency against its earlier baseline."""
    store = open_saga_store("memory://")
    _shop(store)
    now = at(200)
    board, _ = build_board(store, example(), now, window=200 - 26)
    first = board[0].to_dict()
    assert ("inventory-service", 1, 1, "order-stuck") == (
        first["service"],
        first["waiting"],
        first["stuck"],
        first["oldest"],
    )
    assert 110.0 == first["oldest_wait_seconds"]
    assert (20.0, 3.0, True) == (
        first["latency"]["p50"],
        first["baseline"]["p50"],
        first["slower_than_baseline"],
    )
    payment = next(r.to_dict() for r in board if r.service == "payment-service")
    assert (0, 2.0) == (payment["waiting"], payment["latency"]["p99"])


async def test_a_dead_letter_explains_the_stuck_instance(tmp_path: Path) -> None:
    """The order event the inventory service dead-lettered is linked to the order stuck
    waiting for inventory.reserved, with the DLQ topic, the group and the error."""
    store = open_saga_store(f"sqlite:///{tmp_path}/sagas.db")
    correlator = Correlator(example())
    placed = event("order.placed", "order-0013", 0, source="order-service", data={"sku": "?"})
    correlator.apply(store, placed, topic="orders", now=at(0))
    correlator.apply(store, event("order.placed", "order-0014", 0), topic="orders", now=at(0))
    correlator.tick(store, at(100))
    policy = Policy(retry=Retry(max_attempts=1), dead_letter=DeadLetter())
    async with Bus(f"sqlite:///{tmp_path}/broker.db?poll_interval=0.01", policy=policy) as bus:

        async def reserve(item: Event) -> None:
            raise ValueError("malformed SKU")

        await bus.subscribe("orders", reserve, group="inventory-service", from_beginning=True)
        await bus.publish_event("orders", placed)
        linker = DeadLetterLinker(example(), bus, store)
        deadline = asyncio.get_running_loop().time() + 20
        while not await linker.link():
            assert asyncio.get_running_loop().time() < deadline, "no dead letter linked"
            await asyncio.sleep(0.05)
    causes = store.causes([("order-fulfilment", "order-0013"), ("order-fulfilment", "order-0014")])
    (cause,) = causes.values()
    assert (
        "payment.authorized for order-0013: the order.placed event is in orders.dlq "
        "(group inventory-service), ValueError: malformed SKU"
    ) == cause["text"]
    store.close()
