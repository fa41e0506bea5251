"""Retries whose backoff is longer than ``Retry.defer_after`` go back to the broker as delayed
copies for the failing group only, on every backend (see docs/delivery.md, "Retries longer than
a lease"): the attempt count carries on, other groups never see the copies, and no lease is
held while the retry waits."""

from __future__ import annotations

from collections.abc import Callable

from broker import Bus, Event, MemoryInbox, PartialFailure, Policy, Retry, Subscriber
from tests.helpers import Collector, eventually

#: Every backoff (1 s) is longer than defer_after (0.2 s): each retry is deferred.
DEFERRED = Retry(
    max_attempts=3, initial_delay=1.0, max_delay=1.0, multiplier=1.0, jitter=0, defer_after=0.2
)
ADDED = {"retrygroup", "retryattempt", "deliverat"}


async def _settled(subscriber: Subscriber) -> None:
    """Wait until the subscriber's group acked everything appended so far."""
    mark = await subscriber.backlog()
    assert mark is not None

    async def caught_up() -> bool:
        report = await subscriber.backlog()
        return report is not None and report.caught_up_with(mark)

    await eventually(caught_up, timeout=30, what="the group to ack what was appended")


class FailsTwice:
    """A handler that raises on its first two calls and records every event it is given."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)
        if len(self.events) <= 2:
            raise ConnectionError(f"downstream down (call {len(self.events)})")


async def test_a_deferred_retry_reaches_only_its_group(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """A handler failing twice with deferred backoffs succeeds on the third attempt, once; another
    group on the topic handles the original once and never sees the copies."""
    bus = await make_bus(policy=Policy(retry=DEFERRED)).start()
    failing, other = FailsTwice(), Collector()
    owner = await bus.subscribe(topic, failing, group="owner")
    bystander = await bus.subscribe(topic, other, group="bystander")
    sent = await bus.publish(topic, type="order.placed", data={"n": 1}, key="k")
    await eventually(lambda: owner.handled == 1, timeout=30, what="the third attempt")
    await _settled(owner)
    await _settled(bystander)
    assert [sent.id] * 3 == [event.id for event in failing.events]
    assert [set()] * 3 == [ADDED & set(event.extensions) for event in failing.events]
    assert [{"n": 1}] * 3 == [event.data for event in failing.events]
    assert (1, 1) == (owner.handled, bystander.handled)
    assert [sent.id] == other.ids
    assert [] == await bus.dead_letters(f"{topic}.dlq")


async def test_the_inbox_lets_a_retry_copy_through_once(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """With an inbox, the copies of a failed event are no duplicates for their group: the third
    attempt succeeds; the same event published again afterwards is skipped as a duplicate."""
    bus = await make_bus(policy=Policy(retry=DEFERRED, inbox=MemoryInbox())).start()
    failing = FailsTwice()
    owner = await bus.subscribe(topic, failing, group="owner")
    sent = await bus.publish(topic, type="order.placed", key="k")
    await eventually(lambda: owner.handled == 1, timeout=30, what="the third attempt")
    await bus.publish(topic, sent, key="k")
    await _settled(owner)
    assert ([sent.id] * 3, 1) == ([event.id for event in failing.events], owner.handled)


async def test_deferred_retries_dead_letter_with_every_attempt_counted(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """When the deferred attempts run out the event is dead-lettered once, untouched, with
    dlqattempts counting every attempt of the group."""
    bus = await make_bus(policy=Policy(retry=DEFERRED)).start()
    calls: list[str] = []

    async def broken(event: Event) -> None:
        calls.append(event.id)
        raise ValueError("card declined")

    owner = await bus.subscribe(topic, broken, group="payments")
    sent = await bus.publish(topic, type="payment.requested", data={"amount": 5})

    async def dead_lettered() -> bool:
        return len(await bus.dead_letters(f"{topic}.dlq")) == 1

    await eventually(dead_lettered, timeout=30)
    await _settled(owner)
    [dead] = await bus.dead_letters(f"{topic}.dlq")
    assert [sent.id] * 3 == calls
    assert (sent.id, sent.data) == (dead.id, dead.data)
    assert (3, "payments", "ValueError: card declined") == (
        dead.extensions["dlqattempts"],
        dead.extensions["dlqgroup"],
        dead.extensions["dlqerror"],
    )
    assert set() == ADDED & set(dead.extensions)
    assert 1 == len(await bus.dead_letters(f"{topic}.dlq"))


async def test_a_deferred_retry_holds_no_lease(make_bus: Callable[..., Bus], topic: str) -> None:
    """While a deferred retry waits, the group's one consumer handles the next event of the same
    key (a retry waiting in the consumer would block it until the attempts ran out)."""
    patient = Retry(
        max_attempts=20, initial_delay=0.5, max_delay=0.5, multiplier=1.0, jitter=0, defer_after=0
    )
    bus = await make_bus(policy=Policy(retry=patient)).start()
    order: list[str] = []

    async def needs_the_next(event: Event) -> None:
        order.append(event.type)
        if event.type == "first" and "second" not in order:
            raise ConnectionError("waits for the second event")

    subscriber = await bus.subscribe(topic, needs_the_next, group="g")
    await bus.publish(topic, type="first", key="k")
    await bus.publish(topic, type="second", key="k")
    await eventually(lambda: subscriber.handled == 2, timeout=30)
    assert ["first", "second", "first"] == order
    assert [] == await bus.dead_letters(f"{topic}.dlq")


async def test_a_batch_subscription_defers_its_retries_too(
    make_bus: Callable[..., Bus], topic: str
) -> None:
    """A batch handler failing twice with deferred backoffs succeeds on the third attempt; a
    second event of the batch that succeeded the first time is handled once."""
    bus = await make_bus(policy=Policy(retry=DEFERRED)).start()
    calls: list[list[str]] = []

    async def handler(events: list[Event]) -> None:
        calls.append([event.type for event in events])
        flaky = [event for event in events if event.type == "flaky"]
        if flaky and sum("flaky" in batch for batch in calls) <= 2:
            raise PartialFailure({flaky[0].id: ConnectionError("flaky is down")})

    owner = await bus.subscribe_batch(topic, handler, group="g", max_batch=10, max_wait=0.2)
    other = Collector()
    bystander = await bus.subscribe(topic, other, group="bystander")
    result = await bus.publish_many(topic, [{"type": "flaky"}, {"type": "fine"}])
    result.raise_for_failures()
    await eventually(lambda: owner.handled == 2, timeout=30, what="both events handled")
    await _settled(owner)
    await _settled(bystander)
    assert (3, 1) == (
        sum("flaky" in batch for batch in calls),
        sum("fine" in batch for batch in calls),
    )
    assert 2 == owner.handled
    assert sorted(outcome.event.id for outcome in result) == sorted(other.ids)
    assert [] == await bus.dead_letters(f"{topic}.dlq")
