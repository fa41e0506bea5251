"""Discovery: from observed events to a draft saga definition, timings and drift."""

from __future__ import annotations

import uuid

from broker import Bus, Event
from saga_monitor import parse_definitions
from saga_monitor.discovery import discover, discover_from_broker, nice_deadline, percentile
from tests.saga_monitor.helpers import event, example

HAPPY = [
    ("order.placed", 0),
    ("payment.authorized", 2),
    ("inventory.reserved", 3),
    ("order.shipped", 10),
]
STOCK_OUT = [
    ("order.placed", 0),
    ("payment.authorized", 1),
    ("inventory.unavailable", 2),
    ("payment.refunded", 4),
    ("order.cancelled", 5),
]
DECLINED = [("order.placed", 0), ("payment.failed", 1), ("order.cancelled", 2)]


def traffic() -> list[tuple[str, Event]]:
    """20 shipped orders, 5 out of stock (refunded), 3 declined."""
    pairs = []
    for n, script in ((20, HAPPY), (5, STOCK_OUT), (3, DECLINED)):
        for _ in range(n):
            corr = uuid.uuid4().hex
            for type_, seconds in script:
                pairs.append((type_.split(".")[0], event(type_, corr, seconds)))
    return pairs


def test_discovers_start_main_path_failures_and_compensations() -> None:
    """The draft names the start, the steps in order, the failures and their compensations."""
    found = discover(traffic(), name="orders")
    assert ["order.placed", "payment.authorized", "inventory.reserved", "order.shipped"] == (
        found.main_path
    )
    assert {"inventory.unavailable": 5, "payment.failed": 3} == dict(found.fail)
    assert {"order.cancelled": 8} == dict(found.compensated)
    assert {"payment.authorized": "payment.refunded"} == found.compensations
    assert (28, 20) == (found.traces, found.variants[0][0])


def test_draft_yaml_is_a_valid_definition_with_deadlines_from_timings() -> None:
    """The proposed YAML loads, with deadlines of twice the observed p95, rounded up."""
    saga = parse_definitions(discover(traffic(), name="orders").yaml).get("orders")
    steps = {s.event: (s.within, s.compensation) for s in saga.steps}
    assert {
        "payment.authorized": (5.0, "payment.refunded"),
        "inventory.reserved": (2.0, None),
        "order.shipped": (15.0, None),
    } == steps
    assert (("order.shipped",), ("order.cancelled",), 30.0) == (
        saga.complete,
        saga.compensated,
        saga.deadline,
    )


def test_directly_follows_graph_counts_and_percentiles() -> None:
    """Each edge has its count and p50/p95 durations."""
    edges = {(e.source, e.target): e for e in discover(traffic()).edges}
    edge = edges[("order.placed", "payment.authorized")]
    assert (25, 2.0, 2.0) == (edge.count, edge.p50, edge.p95)
    assert 3 == edges[("order.placed", "payment.failed")].count


def test_drift_against_definitions_reports_unknown_types_and_new_paths() -> None:
    """Replaying traffic through a definition shows unknown types and the paths with anomalies."""
    pairs = [
        *traffic(),
        ("payments", event("payment.disputed", "x", 1)),
        ("orders", event("order.placed", "x", 0)),
    ]
    drift = discover(pairs, definitions=example()).drift
    assert {"payment.disputed": 1} == drift["unknown_types"]
    assert 20 == drift["states"]["completed"]
    assert any("payment.disputed" in p["path"] for p in drift["new_paths"])


def test_percentiles_and_nice_deadlines() -> None:
    """Nearest-rank percentiles; deadlines round 2x p95 up to a round duration."""
    assert (5.0, 10.0) == (percentile([1, 5, 7, 10], 0.5), percentile([1, 5, 7, 10], 0.95))
    assert [1, 5, 60, 7200] == [nice_deadline(p) for p in (0.1, 2.2, 25, 3000)]


async def test_discover_reads_history_from_a_broker_without_consuming() -> None:
    """discover browses the topics' retained events; the traffic stays for the services."""
    url = f"memory://discover-{uuid.uuid4().hex}"
    async with Bus(url) as bus:
        for topic, item in traffic():
            await bus.publish(topic, item)
        found = await discover_from_broker(url, ["order", "payment", "inventory"], since=None)
        assert 28 == found.traces
        placed = [e for e in await bus.browse("order") if e.type == "order.placed"]
        assert 28 == len(placed)
