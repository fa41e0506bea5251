"""A deferred retry whose copy RabbitMQ refuses waits in the consumer instead: nothing is lost."""

from __future__ import annotations

import uuid

import pytest

from broker import Bus, Event, Policy, Retry
from tests.helpers import Collector, eventually

pytestmark = pytest.mark.rabbitmq

#: A backoff longer than RabbitMQ's longest x-message-ttl (about 49.7 days): the copy is refused.
TOO_LONG = Retry(
    max_attempts=2, initial_delay=60 * 86_400, max_delay=60 * 86_400, jitter=0, defer_after=1
)


async def test_a_refused_retry_copy_keeps_the_event_held(
    rabbitmq_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """When the broker refuses the retry copy, the consumer keeps the event unacked (waiting out
    the backoff itself), and a stop gives it back to the group: it is neither acked nor lost."""
    topic = f"deferred-{uuid.uuid4().hex[:12]}"
    calls: list[str] = []

    async def fails(event: Event) -> None:
        calls.append(event.id)
        raise ConnectionError("down")

    logged: list[str] = []

    def fell_back() -> bool:
        logged.append(capfd.readouterr().err)
        return "retry not deferred, waiting in the consumer" in "".join(logged)

    async with Bus(rabbitmq_url, policy=Policy(retry=TOO_LONG)) as bus:
        first = await bus.subscribe(topic, fails, group="g")
        sent = await bus.publish(topic, type="t")
        await eventually(fell_back, timeout=30, what="the fallback's warning")
        await first.stop()
        got = Collector()
        await bus.subscribe(topic, got, group="g")
        await eventually(lambda: sent.id in got.ids, timeout=30)
        assert [sent.id] == calls
        assert [sent.id] == got.ids
        assert [] == await bus.dead_letters(f"{topic}.dlq")
