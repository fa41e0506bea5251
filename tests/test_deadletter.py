"""Dead letters are one idea in one module: its fields, its reasons and the names of DLQ topics
(from the policy's template) live in broker.deadletter, and the Bus replays and publishes dead
letters through it."""

from __future__ import annotations

import ast
import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker import (
    Bus,
    ConfigurationError,
    DeadLetter,
    Event,
    Policy,
    Retry,
    TopicNotFoundError,
    deadletter,
)
from broker.adapters.memory import MemoryAdapter
from broker.ports import Chooser
from tests.helpers import eventually

ROOT = Path(__file__).parent.parent
# The library packages; choreo/ (the CLI) switches to broker.deadletter (dead_letter_topic,
# is_dead_letter_topic, origin_of) in a later change and joins the list then.
PACKAGES = ("broker", "connectors", "saga_monitor", "schemas")
OWNER = ROOT / "broker" / "deadletter.py"


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """The string literals of a module (f-string parts included), docstrings left out."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


def _package_sources() -> list[Path]:
    return [
        path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != OWNER
    ]


def test_only_the_deadletter_module_knows_the_suffix() -> None:
    """No package module but broker/deadletter.py spells the DLQ suffix in its code."""
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _package_sources()
        for line, text in _string_constants(path)
        if ".dlq" in text
    ]
    assert [] == found


def test_only_the_deadletter_module_names_the_dlq_extensions() -> None:
    """The dlq* extension names are spelled in broker/deadletter.py only (the envelope knows
    that dlqattempts is an integer on binary bindings, and names nothing else)."""
    allowed = {(ROOT / "broker" / "envelope.py", "dlqattempts")}
    found = [
        f"{path.relative_to(ROOT)}:{line} {text}"
        for path in _package_sources()
        for line, text in _string_constants(path)
        if text in deadletter.EXTENSIONS and (path, text) not in allowed
    ]
    assert [] == found


def test_topic_names_follow_the_template() -> None:
    """A template makes DLQ names, recognises them and tells their origin; names it did not
    make are not DLQ topics."""
    assert "orders.dlq" == deadletter.dead_letter_topic("orders")
    assert "dead.billing.orders" == deadletter.dead_letter_topic(
        "orders", "billing", "dead.{group}.{topic}"
    )
    assert "orders" == deadletter.origin_of("orders.dlq")
    assert "a.b" == deadletter.origin_of("a.b.dlq")
    assert "orders" == deadletter.origin_of("dead.billing.orders", "dead.{group}.{topic}")
    assert deadletter.is_dead_letter_topic("orders.dlq")
    assert not deadletter.is_dead_letter_topic("orders")
    assert None is deadletter.origin_of("orders")
    assert None is deadletter.origin_of("all-dead", "all-dead")
    assert deadletter.is_dead_letter_topic("all-dead", "all-dead")


def test_a_template_with_an_unknown_field_is_refused() -> None:
    """A DeadLetter template may only use {topic} and {group}."""
    with pytest.raises(ConfigurationError, match="topc"):
        DeadLetter(topic_template="{topc}.dlq")


def test_strip_gives_back_the_original_event() -> None:
    """A dead letter stripped for replay is the original event again; an expired one also
    loses its expiration, so it is not dead-lettered again at once."""
    original = Event(type="t", source="s", extensions={"correlationid": "c-1"})
    dead = deadletter.dead_letter(
        original, reason=deadletter.HANDLER_ERROR, error=ValueError("no"), topic="t", group="g"
    )
    assert "ValueError: no" == dead.extensions["dlqerror"]
    assert original == deadletter.strip(dead)
    expiring = original.with_ttl(1, now=datetime(2020, 1, 1, tzinfo=UTC))
    expired = deadletter.dead_letter(
        expiring, reason=deadletter.EXPIRED, error="expiration passed", topic="t", group="g"
    )
    assert original == deadletter.strip(expired)


def test_info_reads_the_fields_back() -> None:
    """info() returns the dlq* fields of a dead letter and None for any other event."""
    event = Event(type="t", source="s")
    dead = deadletter.dead_letter(
        event,
        reason=deadletter.UNROUTABLE,
        error="no route",
        topic="orders",
        group="relay",
        time="2026-01-01T00:00:00Z",
    )
    expected = deadletter.DeadLetterInfo(
        "unroutable", "no route", 0, "orders", "relay", "2026-01-01T00:00:00Z"
    )
    assert expected == deadletter.info(dead)
    assert None is deadletter.info(event)


async def test_replay_follows_the_policy_template() -> None:
    """With a custom template, dead letters land where it says and replay sends them back to
    the topic they came from."""
    policy = Policy(
        retry=Retry(max_attempts=1), dead_letter=DeadLetter(topic_template="dead.{topic}")
    )
    async with Bus(f"memory://{uuid.uuid4().hex}", policy=policy) as bus:

        async def broken(event: Event) -> None:
            raise RuntimeError("down")

        await bus.subscribe("orders", broken, group="g")
        sent = await bus.publish("orders", type="order.placed")

        async def dead_lettered() -> bool:
            return 1 == len(await bus.browse("dead.orders"))

        await eventually(dead_lettered)
        assert "dead.orders" == bus.dead_letter_topic("orders")
        [replayed] = await bus.replay("dead.orders")
        assert sent.id == replayed.id
        assert [] == [n for n in replayed.extensions if n in deadletter.EXTENSIONS]


async def test_replay_refuses_entries_with_no_origin() -> None:
    """Replaying a topic that is no DLQ, whose events name no original topic, replays nothing
    and says why."""
    async with Bus(f"memory://{uuid.uuid4().hex}") as bus:
        await bus.publish("plain", type="t")
        with pytest.raises(TopicNotFoundError, match="names no original topic"):
            await bus.replay("plain")
        assert 1 == len(await bus.browse("plain"))


async def test_publish_event_sends_the_event_as_it_is() -> None:
    """publish_event stamps nothing: what browse reads back is the event that was passed."""
    event = Event(type="t", source="elsewhere", extensions={"dlqreason": "unroutable"})
    async with Bus(f"memory://{uuid.uuid4().hex}", source="me") as bus:
        await bus.publish_event("outbox.dlq", event)
        assert [event] == await bus.browse("outbox.dlq")


async def test_a_subscriber_tells_its_listeners_what_it_dead_lettered_and_where() -> None:
    """on_dead_letter hears each event the subscription dead-lettered, with its dlq* fields and
    the dead-letter topic, before the next delivery: a listener that stops taking leaves the
    next event unhandled."""
    policy = Policy(retry=Retry(max_attempts=1))
    async with Bus(f"memory://{uuid.uuid4().hex}", policy=policy) as bus:
        heard: list[tuple[str, str, str]] = []
        called: list[str] = []

        async def broken(event: Event) -> None:
            called.append(event.id)
            raise RuntimeError("down")

        subscriber = await bus.subscribe("orders", broken, group="g")

        def listener(dead: Event, where: str) -> None:
            found = deadletter.info(dead)
            assert found is not None
            heard.append((dead.id, found.reason, where))
            subscriber.stop_taking()

        subscriber.on_dead_letter(listener)
        first = await bus.publish("orders", type="order.placed", key="k")
        await bus.publish("orders", type="order.placed", key="k")

        async def told() -> bool:
            return bool(heard)

        await eventually(told)
        await subscriber.stop()
        assert ([(first.id, "handler-error", "orders.dlq")], [first.id]) == (heard, called)


class _CountingAdapter(MemoryAdapter):
    """A memory adapter that counts its reads (``browse``) and the purges it is asked for
    (its own ``purge_chosen`` calls ``purge`` with what was chosen, without a ``browse``)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reads = 0
        self.purges: list[tuple[list[str] | None, int | None]] = []

    async def browse(self, topic: str, *, limit: int = 100) -> list[Event]:
        self.reads += 1
        return await super().browse(topic, limit=limit)

    async def purge(
        self, topic: str, ids: Collection[str] | None = None, *, among: int | None = None
    ) -> int:
        self.purges.append((None if ids is None else sorted(ids), among))
        return await super().purge(topic, ids, among=among)

    async def purge_chosen(self, topic: str, choose: Chooser) -> int:
        return await super().purge_chosen(topic, choose)


class _PurgeOnlyAdapter(_CountingAdapter):
    """A third-party adapter that defines ``purge`` but not ``purge_chosen``."""

    async def purge(
        self, topic: str, ids: Collection[str] | None = None, *, among: int | None = None
    ) -> int:
        return await super().purge(topic, ids, among=among)


async def _two_dead(adapter: MemoryAdapter) -> tuple[Bus, list[str]]:
    bus = await Bus(adapter).start()
    events = [_dead_letter(n) for n in range(2)]
    for event in events:
        await bus.publish("jobs.dlq", event)
    return bus, [event.id for event in events]


def _dead_letter(n: int) -> Event:
    return deadletter.dead_letter(
        Event(type="job.created", source="tests", data={"n": n}),
        reason=deadletter.HANDLER_ERROR,
        error=RuntimeError("on fire"),
        topic="jobs",
        group="printers",
    )


async def test_a_purge_of_ids_reads_the_dlq_once() -> None:
    """Where the adapter's class defines ``purge_chosen`` beside ``purge``, a purge of chosen
    dead letters reads the DLQ once (no ``browse``, no second scan by ``purge``)."""
    adapter = _CountingAdapter(f"memory://{uuid.uuid4().hex}")
    bus, ids = await _two_dead(adapter)
    assert 1 == await bus.purge("jobs.dlq", [ids[0]])
    assert (0, [([ids[0]], 2)]) == (adapter.reads, adapter.purges)
    assert [ids[1]] == [e.id for e in await bus.dead_letters("jobs.dlq")]
    await bus.stop()


async def test_an_adapter_without_purge_chosen_is_read_then_purged_among_what_was_read() -> None:
    """An adapter whose ``purge`` is defined without ``purge_chosen`` beside it (a third-party
    one, or a wrapper) keeps the contract it has: one ``browse``, then ``purge(ids,
    among=N)`` with the N events read."""
    adapter = _PurgeOnlyAdapter(f"memory://{uuid.uuid4().hex}")
    bus, ids = await _two_dead(adapter)
    assert 1 == await bus.purge("jobs.dlq", [ids[1]])
    assert (1, [([ids[1]], 2)]) == (adapter.reads, adapter.purges)
    await bus.stop()
