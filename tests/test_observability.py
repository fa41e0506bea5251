"""The handler and publish metrics as Prometheus scrapes them: counted per event, latency
sampled one call in eight into a histogram with the usual buckets, count and sum."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from broker import Bus, Event
from broker import observability as obs
from tests.helpers import eventually


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_handled_events_are_counted_and_their_latency_sampled() -> None:
    """Sixteen handled events: the consumed counter says 16, the handler histogram holds two
    samples, each in every bucket at or above its value and in the sum."""
    group = f"metrics-{uuid.uuid4().hex[:8]}"
    handled: list[Event] = []

    async def handler(event: Event) -> None:
        handled.append(event)

    async with Bus(f"memory://{group}") as bus:
        await bus.subscribe("t", handler, group=group)
        for n in range(16):
            await bus.publish("t", type="t", data=n)
        await eventually(lambda: len(handled) == 16, what="16 handled")
    assert 16 == _sample(
        "choreo_consumed_total", {"topic": "t", "group": group, "outcome": "handled"}
    )
    count = _sample("choreo_handler_seconds_count", {"group": group})
    assert 2 == count
    assert count == _sample("choreo_handler_seconds_bucket", {"group": group, "le": "+Inf"})
    assert 0 < _sample("choreo_handler_seconds_sum", {"group": group}) < 10


def test_a_timing_lands_in_the_first_bucket_that_holds_it() -> None:
    """A sample equal to a bound counts in that bound's bucket (Prometheus' ``le``), and in
    every larger one."""
    name = f"choreo_test_{uuid.uuid4().hex[:8]}_seconds"
    timings = obs.Timings(name, "a test histogram", buckets=(0.001, 0.01))
    try:
        timings.observe(0.001)
        timings.observe(0.5)
        buckets = [_sample(f"{name}_bucket", {"le": le}) for le in ("0.001", "0.01", "+Inf")]
        assert [1, 1, 2] == buckets
        assert 0.501 == _sample(f"{name}_sum", {})
    finally:
        REGISTRY.unregister(timings)
