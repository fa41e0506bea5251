"""A deferred retry whose copy RabbitMQ refuses waits in the consumer instead: nothing is lost."""

from __future__ import annotations

import uuid

import pytest
from structlog.testing import capture_logs

from broker import Bus, Event, Policy, Retry
from broker.observability import configure_logging
from tests.helpers import Collector, eventually

pytestmark = pytest.mark.rabbitmq

#: A backoff longer than RabbitMQ's longest x-message-ttl (about 49.7 days): the copy is refused.
TOO_LONG = Retry(
    max_attempts=2, initial_delay=60 * 86_400, max_delay=60 * 86_400, jitter=0, defer_after=1
)
#: The consumer's warning when it falls back on waiting.
FELL_BACK = "retry not deferred, waiting in the consumer"


async def test_a_refused_retry_copy_keeps_the_event_held(rabbitmq_url: str) -> None:
    """When the broker refuses the retry copy, the consumer keeps the event unacked (waiting out
    the backoff itself), and a stop gives it back to the group: it is neither acked nor lost."""
    topic = f"deferred-{uuid.uuid4().hex[:12]}"
    calls: list[str] = []

    async def fails(event: Event) -> None:
        calls.append(event.id)
        raise ConnectionError("down")

    configure_logging()  # now, so that capture_logs' configuration is not replaced later
    async with Bus(rabbitmq_url, policy=Policy(retry=TOO_LONG)) as bus:
        with capture_logs() as logs:  # the consumer's logger is bound inside: it is captured
            first = await bus.subscribe(topic, fails, group="g")
            sent = await bus.publish(topic, type="t")
            await eventually(
                lambda: any(entry["event"] == FELL_BACK for entry in logs),
                timeout=30,
                what="the fallback's warning",
            )
        await first.stop()
        got = Collector()
        await bus.subscribe(topic, got, group="g")
        await eventually(lambda: sent.id in got.ids, timeout=30)
        assert [sent.id] == calls
        assert [sent.id] == got.ids
        assert [] == await bus.dead_letters(f"{topic}.dlq")
