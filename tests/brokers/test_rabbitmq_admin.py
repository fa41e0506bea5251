"""RabbitMQ inspection and errors: the topic registry, DLQ browse and selective purge, and the
one-line errors for bad URLs, credentials and options."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiormq
import pytest

from broker import BrokerUnavailableError, Bus, ConfigurationError, Event, PublishError
from broker.adapters.kit import client_exceptions, untranslated
from broker.adapters.rabbitmq import RabbitMQAdapter
from broker.adapters.rabbitmq.errors import REFUSED, RETRYABLE
from tests.helpers import Collector, eventually

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses."""
    return f"admin-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def bus(rabbitmq_url: str) -> AsyncIterator[Bus]:
    """A started bus on the session's vhost."""
    async with Bus(rabbitmq_url, source="admin") as started:
        yield started


async def test_topics_and_groups_are_listed_once(bus: Bus, rabbitmq_url: str, topic: str) -> None:
    """Topics created, published to or subscribed are listed with their groups, once each even
    when several processes recorded them, with the count of a dead-letter store."""
    await bus.create_topic(topic)
    await bus.subscribe(topic, Collector(), group="billing")
    async with Bus(rabbitmq_url) as other:
        await other.subscribe(topic, Collector(), group="shipping")
        await other.publish(topic, type="t")
        await other.publish(f"{topic}.dlq", Event(type="dead", source="s"))
    listed = {info.name: info for info in await bus.topics()}
    assert ("billing", "shipping") == listed[topic].groups
    assert 1 == listed[f"{topic}.dlq"].messages
    again = [info.name for info in await bus.topics()]
    assert 1 == again.count(topic)


async def test_a_dead_requesters_reply_queue_expires(
    bus: Bus, rabbitmq_url: str, topic: str, tmp_path: Path
) -> None:
    """A requester process that exits without stopping leaves a reply queue that RabbitMQ
    deletes once it has had no consumer for ``reply_queue_expiry`` seconds."""
    requests = Collector()
    await bus.subscribe(topic, requests, group="oracle")
    url = f"{rabbitmq_url}&reply_queue_expiry=0.5"
    code = (
        "import asyncio, os\n"
        "from broker import Bus, RequestTimeoutError\n"
        "async def main():\n"
        f"    bus = await Bus({url!r}).start()\n"
        "    try:\n"
        f"        await bus.request({topic!r}, type='ask', timeout=0.5)\n"
        "    except RequestTimeoutError:\n"
        "        os._exit(0)  # dies without stopping the bus\n"
        "asyncio.run(main())\n"
    )
    died = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=tmp_path)
    assert 0 == await died.wait()
    await eventually(lambda: len(requests.events) == 1, what="the request")
    queue = f"{requests.events[0].extensions['replyto']}._reply"
    connection = await aiormq.connect(rabbitmq_url.partition("?")[0])
    try:
        assert await _expires(connection, queue, within=30), f"{queue} did not expire"
    finally:
        await connection.close()


async def _expires(connection: aiormq.abc.AbstractConnection, queue: str, within: float) -> bool:
    """Whether ``queue`` is gone within ``within`` s, looking every 2 s (a passive declare
    renews an ``x-expires`` lease, so looking more often than it expires would keep it)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        channel = await connection.channel()
        try:
            await channel.queue_declare(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return True
        await channel.close()
        await asyncio.sleep(2)
    return False


async def test_browse_keeps_entries_and_order(bus: Bus, topic: str) -> None:
    """Browsing a DLQ twice shows the same entries in publish order; nothing is consumed."""
    dlq = f"{topic}.dlq"
    sent = [(await bus.publish(dlq, type="dead", data=i)).id for i in range(5)]
    first = [e.id for e in await bus.dead_letters(dlq)]
    second = [e.id for e in await bus.dead_letters(dlq, limit=3)]
    assert sent == first
    assert sent[:3] == second
    assert sent == [e.id for e in await bus.dead_letters(dlq)]


async def test_selective_purge_deletes_only_chosen_ids(bus: Bus, topic: str) -> None:
    """Purging chosen ids from a DLQ removes exactly those and keeps the others in order."""
    dlq = f"{topic}.dlq"
    sent = [(await bus.publish(dlq, type="dead", data=i)).id for i in range(5)]
    assert 2 == await bus.purge(dlq, [sent[1], sent[3]])
    assert [sent[0], sent[2], sent[4]] == [e.id for e in await bus.dead_letters(dlq)]
    assert 0 == await bus.purge(f"{topic}-nothing.dlq")


async def test_unreachable_broker_is_one_clear_line() -> None:
    """An unreachable broker raises BrokerUnavailableError naming the URL, password masked."""
    bus = Bus("amqp://guest:s3cret@127.0.0.1:1/?connect_timeout=2")
    with pytest.raises(BrokerUnavailableError) as caught:
        await bus.start()
    message = str(caught.value)
    assert "s3cret" not in message
    assert "amqp://guest:***@127.0.0.1:1/" in message
    assert "\n" not in message


async def test_bad_credentials_are_reported(rabbitmq_url: str) -> None:
    """Wrong credentials raise BrokerUnavailableError that says what to check."""
    url = rabbitmq_url.replace("guest:guest@", "guest:wrong@")
    with pytest.raises(BrokerUnavailableError, match="user, password and vhost"):
        await Bus(url).start()


def test_bad_options_are_configuration_errors() -> None:
    """A malformed option value is refused when the adapter is built."""
    with pytest.raises(ConfigurationError, match="publish_timeout"):
        RabbitMQAdapter("amqp://localhost/", publish_timeout="soon")
    with pytest.raises(ConfigurationError, match="queue_type"):
        RabbitMQAdapter("amqp://localhost/", queue_type="lazy")


async def test_publish_to_a_foreign_exchange_is_refused(bus: Bus, rabbitmq_url: str) -> None:
    """Publishing to a topic whose exchange exists with another type fails fast and clearly."""
    name = f"foreign-{uuid.uuid4().hex[:8]}"
    connection = await aiormq.connect(rabbitmq_url.split("?", maxsplit=1)[0])
    channel = await connection.channel()
    await channel.exchange_declare(name, exchange_type="fanout", durable=False, auto_delete=True)
    try:
        with pytest.raises(PublishError, match=name):
            await bus.publish(name, type="t")
    finally:
        await connection.close()


def test_every_client_exception_is_mapped() -> None:
    """Every exception type aiormq defines is translated by the adapter's publish path."""
    handled = (*REFUSED, *RETRYABLE, aiormq.exceptions.AMQPError, TimeoutError)
    defined = [cls for cls in client_exceptions(aiormq.exceptions) if issubclass(cls, Exception)]
    assert [] == untranslated(defined, handled)
