"""NATS ``publish_many``: every event's outcome is its own, whether the list goes one PubAck per
event, as a JetStream fast-ingest batch (the default on nats-server 2.14+) or as atomic batches
(``atomic_batches=true``, nats-server 2.12+), and a duplicate ``Nats-Msg-Id`` stays a stored
event."""

from __future__ import annotations

import asyncio
import uuid

import nats
import nats.js.errors
import pytest
from nats.js import api
from nats.protocol.parser import Parser

from broker import Bus, Event, PublishError
from broker.adapters.nats import safe_name
from broker.adapters.nats.publish import JetStreamPublisher, _AckReader, header_block

pytestmark = pytest.mark.nats


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses."""
    return f"many-{uuid.uuid4().hex[:12]}"


def _with(url: str, option: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{option}"


async def _stream_with_size_limit(
    url: str, topic: str, atomic: bool = False, fast: bool = False
) -> None:
    """A stream for ``topic`` that refuses messages over 1 KiB (the server, not the client),
    taking atomic or fast-ingest batches as asked."""
    nc = await nats.connect(url.split("?", 1)[0])
    try:
        config = api.StreamConfig(
            name=safe_name(topic),
            subjects=[topic],
            max_msg_size=1024,
            allow_atomic=atomic or None,
            allow_batched=fast or None,
        )
        await nc.jetstream().add_stream(config)
    finally:
        await nc.close()


#: URL options and stream kinds of the three ways a list goes.
_MODES = {
    "per-event": ("fast_batches=false", {}),
    "fast": ("fast_batches=true", {"fast": True}),
    "atomic": ("atomic_batches=true", {"atomic": True}),
}


@pytest.mark.parametrize(
    ("mode", "refused"),
    [("per-event", 1), ("atomic", 1), ("fast", 0), ("fast", 1), ("fast", 2)],
    ids=["per-event", "atomic", "fast-first", "fast-middle", "fast-last"],
)
async def test_an_event_the_server_refuses_fails_alone(
    nats_url: str, topic: str, mode: str, refused: int
) -> None:
    """The stream refuses one event of a list (over its max_msg_size): that event fails with a
    PublishError naming the refusal, the others are stored in order (a batch the server cut
    short or refused as a whole is sent again event by event from where it stopped)."""
    option, kind = _MODES[mode]
    await _stream_with_size_limit(nats_url, topic, **kind)
    items = [{"type": "t", "data": n} for n in range(3)]
    items[refused]["data"] = "x" * 2048
    async with Bus(_with(nats_url, option)) as bus:
        result = await bus.publish_many(topic, items)
        assert [n != refused for n in range(3)] == [outcome.ok for outcome in result]
        assert isinstance(result[refused].error, PublishError)
        assert "size" in str(result[refused].error)
        stored = await bus.browse(topic)
        kept = [outcome.event.id for outcome in result if outcome.ok]
        assert kept == [event.id for event in stored]


async def test_fast_batches_store_long_lists_once_in_order_and_dedupe_a_resent_one(
    nats_url: str, topic: str
) -> None:
    """On a server with fast-ingest batches (2.14+) a list longer than the acknowledgements
    it may run ahead of is stored whole and in order, on a stream created with
    allow_batched; sending events again (already stored ones among new ones) stores each
    event once and reports every one as published."""
    async with Bus(nats_url, source="many") as bus:
        first = await bus.publish_many(topic, [{"type": "t", "data": i} for i in range(1500)])
        first.raise_for_failures()
        again = Event(type="t", source="many", data="new")
        resent = [first[5].event, again, first[7].event, first[1499].event]
        second = await bus.publish_many(topic, resent)
        second.raise_for_failures()
        stored = await bus.browse(topic, limit=2000)
        assert [o.event.id for o in first] + [again.id] == [event.id for event in stored]
        assert [*range(1500), "new"] == [event.data for event in stored]
    nc = await nats.connect(nats_url.split("?", 1)[0])
    try:
        info = await nc.jetstream().stream_info(safe_name(topic))
        assert info.config.allow_batched is True
    finally:
        await nc.close()


async def test_a_server_without_fast_batches_takes_lists_one_puback_each(
    older_nats_url: str, topic: str
) -> None:
    """On a server older than 2.14 (no fast-ingest batches) streams are created without
    allow_batched and a list is published one PubAck per event: stored whole, in order,
    a refused event failing alone."""
    async with Bus(older_nats_url, source="many") as bus:
        result = await bus.publish_many(topic, [{"type": "t", "data": i} for i in range(700)])
        result.raise_for_failures()
        stored = await bus.browse(topic, limit=1000)
        assert [*range(700)] == [event.data for event in stored]
    nc = await nats.connect(older_nats_url.split("?", 1)[0])
    try:
        info = await nc.jetstream().stream_info(safe_name(topic))
        assert not info.config.allow_batched
    finally:
        await nc.close()
    other = f"{topic}-limit"
    await _stream_with_size_limit(older_nats_url, other)
    async with Bus(older_nats_url) as bus:
        items = [{"type": "t", "data": 1}, {"type": "t", "data": "x" * 2048}, {"type": "t"}]
        outcomes = await bus.publish_many(other, items)
        assert [True, False, True] == [outcome.ok for outcome in outcomes]


async def test_atomic_batches_store_a_list_once_and_dedupe_a_resent_one(
    nats_url: str, topic: str
) -> None:
    """With atomic_batches a list is stored in order; sending events again (one already stored
    among new ones: the server refuses such an atomic batch) stores each event once and reports
    every one as published."""
    async with Bus(_with(nats_url, "atomic_batches=true"), source="many") as bus:
        first = await bus.publish_many(topic, [{"type": "t", "data": i} for i in range(300)])
        first.raise_for_failures()
        again = Event(type="t", source="many", data="new")
        second = await bus.publish_many(topic, [first[5].event, again, first[7].event])
        second.raise_for_failures()
        stored = await bus.browse(topic, limit=1000)
        assert [o.event.id for o in first] + [again.id] == [event.id for event in stored]
        assert [*range(300), "new"] == [event.data for event in stored]


class _OtherParser(Parser):
    """A parser of nats-py's kind that is not nats-py's own: the publisher leaves it alone."""


@pytest.mark.parametrize("reader", [True, False], ids=["ack-reader", "nats-py-parser"])
async def test_lists_and_single_publishes_get_their_own_pubacks_whoever_reads_them(
    nats_url: str, topic: str, reader: bool
) -> None:
    """The publisher reads the PubAcks of lists itself where nats-py parses as this nats-py
    does, else nats-py reads them: either way every message of a list and every single
    publish in flight beside it gets its own answer (a refused one its error), and the client
    counts every PubAck read."""
    await _stream_with_size_limit(nats_url, topic, atomic=False)
    nc = await nats.connect(nats_url.split("?", 1)[0])
    if not reader:
        nc._ps = _OtherParser(nc)
    publisher = JetStreamPublisher(nc)
    await publisher.start()
    try:
        assert reader is isinstance(nc._ps, _AckReader)
        blocks = [header_block({"Nats-Msg-Id": f"{topic}-{n}"}) for n in range(300)]
        messages = [(b, b"x" * 2048 if n == 7 else b"1") for n, b in enumerate(blocks)]
        before = nc.stats["in_msgs"]
        outcomes, *singles = await asyncio.gather(
            publisher.publish_all(topic, messages, 10.0),  # type: ignore[arg-type]
            *(publisher.publish(topic, b"2", {"Nats-Msg-Id": f"s{n}"}, 10.0) for n in range(5)),
        )
        assert [n == 7 for n in range(300)] == [outcome is not None for outcome in outcomes]
        assert isinstance(outcomes[7], nats.js.errors.APIError)
        assert [None] * 5 == singles
        assert before + 305 == nc.stats["in_msgs"]
        info = await nc.jetstream().stream_info(safe_name(topic))
        assert 304 == info.state.messages
    finally:
        await publisher.close()
        await nc.close()
