"""NATS errors reach the user as one-line broker errors naming the URL and the fix: every
nats-py exception type is translated, and connecting to a server without JetStream, with wrong
credentials or to nothing at all says which."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest

from broker import (
    BrokerError,
    BrokerUnavailableError,
    Bus,
    ClosedError,
    PublishError,
    TopicNotFoundError,
)
from broker.adapters.nats.errors import translate_error as translate
from tests.servers.nats import NatsServer, free_port

pytestmark = pytest.mark.nats

URL = "nats://127.0.0.1:4222"
CHOREO = [sys.executable, "-m", "choreo"]


def _client_errors() -> list[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for module in (nats.errors, nats.js.errors):
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, nats.errors.Error):
                found.add(value)
    return sorted(found, key=lambda cls: cls.__module__ + cls.__qualname__)


def _instance(cls: type[BaseException]) -> BaseException:
    try:
        return cls()
    except TypeError:
        return cls.__new__(cls)


@pytest.mark.parametrize("cls", _client_errors(), ids=lambda cls: cls.__name__)
def test_every_client_error_is_translated(cls: type[BaseException]) -> None:
    """Each nats-py exception type becomes a BrokerError whose message is one line with the
    URL."""
    error = translate(_instance(cls), URL, "orders")
    assert isinstance(error, BrokerError)
    assert URL in str(error)
    assert "\n" not in str(error)


def test_translation_keeps_the_meaning() -> None:
    """Closed, missing and unreachable are told apart."""
    assert ClosedError is type(translate(nats.errors.ConnectionClosedError(), URL, "t"))
    assert TopicNotFoundError is type(translate(nats.js.errors.NotFoundError(), URL, "t"))
    assert BrokerUnavailableError is type(translate(nats.errors.NoServersError(), URL, "t"))


async def test_server_without_jetstream_is_named() -> None:
    """A NATS server running without -js is refused with a message saying to enable it."""
    server = NatsServer(jetstream=False)
    server.start()
    try:
        with pytest.raises(BrokerUnavailableError, match="has no JetStream: start nats-server"):
            await Bus(f"nats://127.0.0.1:{server.port}").start()
    finally:
        server.remove()


async def test_unreachable_server_is_a_one_line_error() -> None:
    """Connecting to a port where nothing listens fails with BrokerUnavailableError naming the
    URL with its password masked and what to check."""
    port = free_port()
    with pytest.raises(BrokerUnavailableError) as caught:
        await Bus(f"nats://user:secret@127.0.0.1:{port}?connect_timeout=1").start()
    message = str(caught.value)
    assert "secret" not in message
    assert f"nats://user:***@127.0.0.1:{port}" in message
    assert "JetStream" in message
    assert "\n" not in message


def test_unknown_option_is_refused() -> None:
    """A query-string option that is neither the adapter's nor nats.connect's is refused."""
    with pytest.raises(BrokerError, match="unknown nats:// option 'ack_wiat'"):
        Bus("nats://127.0.0.1:4222?ack_wiat=5")


@pytest.fixture(scope="module")
def small_nats() -> Iterator[NatsServer]:
    """A private nats-server whose max_payload is 4 KiB."""
    server = NatsServer(max_payload=4096)
    server.start()
    try:
        yield server
    finally:
        server.remove()


async def test_payload_over_max_payload_fails_alone(small_nats: NatsServer) -> None:
    """An event over the server's max_payload fails with a one-line PublishError naming the
    limit, alone: the other events of the same publish_many are stored."""
    async with Bus(small_nats.url) as bus:
        with pytest.raises(PublishError, match="larger than the max_payload") as caught:
            await bus.publish("big", type="t", data="x" * 8000)
        assert "\n" not in str(caught.value)
        result = await bus.publish_many(
            "big", [{"type": "t"}, {"type": "t", "data": "x" * 8000}, {"type": "t"}]
        )
        assert [True, False, True] == [outcome.ok for outcome in result]
        assert isinstance(result[1].error, PublishError)
        assert 2 == len(await bus.browse("big"))


def test_cli_publish_over_max_payload_is_one_line(small_nats: NatsServer, tmp_path: Path) -> None:
    """`choreo publish` of data over the server's max_payload exits 1 with one line."""
    data = tmp_path / "big.json"
    data.write_text(json.dumps({"blob": "x" * 8000}))
    run = subprocess.run(
        [*CHOREO, "publish", "big", "-t", "t", "--data", f"@{data}", "--broker", small_nats.url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (1, "") == (run.returncode, run.stdout)
    assert 1 == len(run.stderr.splitlines()), run.stderr
    assert "larger than the max_payload" in run.stderr
