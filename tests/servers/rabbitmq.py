"""RabbitMQ live-server fixtures: the local broker (or ``CHOREO_TEST_AMQP_URL``) in a fresh vhost.

RabbitMQ has no single-binary build to spawn per session, so the tests use the server at
``CHOREO_TEST_AMQP_URL`` (default ``amqp://guest:guest@127.0.0.1:5672/``). When that is the
local default and ``rabbitmqctl`` works, the session creates a private vhost and deletes it at
the end, so no run ever sees another run's queues; with an external URL the tests rely on
unique names. The session fails (never skips) unless a real AMQP handshake succeeds.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

__all__ = ["RabbitMQServer", "rabbitmq_server", "rabbitmq_url"]

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
#: Adapter tuning for tests: reconnect fast.
TEST_OPTIONS = "reconnect_delay=0.05&max_reconnect_delay=0.5"


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """Run ``rabbitmqctl``; raise with its output when it fails."""
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


async def _handshake(url: str) -> None:
    import aiormq

    connection = await asyncio.wait_for(aiormq.connect(url), 10)
    await connection.close()


class RabbitMQServer:
    """The broker under test: its URL (in this session's vhost) and fault injection."""

    def __init__(self, base_url: str, vhost: str | None) -> None:
        self.base_url = base_url
        self.vhost = vhost

    @property
    def url(self) -> str:
        """The AMQP URL of this session's vhost, without adapter options."""
        if self.vhost is None:
            return self.base_url
        parts = urlsplit(self.base_url)
        return urlunsplit(parts._replace(path="/" + quote(self.vhost, safe="")))

    @property
    def managed(self) -> bool:
        """Whether rabbitmqctl controls this broker (local default server)."""
        return self.vhost is not None

    def drop_connections(self) -> None:
        """Make the broker close every client connection of this session's vhost."""
        assert self.vhost is not None, "fault injection needs the local broker (rabbitmqctl)"
        rabbitmqctl("close_all_connections", "--vhost", self.vhost, "choreograph fault test")

    def restart(self) -> None:
        """Stop and start the RabbitMQ application (the Erlang node stays up)."""
        rabbitmqctl("stop_app")
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")


def _start_session() -> RabbitMQServer:
    external = os.environ.get("CHOREO_TEST_AMQP_URL")
    base = external or DEFAULT_URL
    vhost = None
    if not external and shutil.which("rabbitmqctl"):
        vhost = f"choreo-test-{uuid.uuid4().hex[:10]}"
        try:
            rabbitmqctl("add_vhost", vhost)
            rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            vhost = None  # not allowed to administer it: share "/" with unique names
    server = RabbitMQServer(base, vhost)
    try:
        asyncio.run(_handshake(server.url))
    except Exception as exc:
        raise RuntimeError(
            f"RabbitMQ is not reachable at {server.url.replace('guest:guest', 'guest:***')}: "
            f"{exc!r}; start it or set CHOREO_TEST_AMQP_URL"
        ) from exc
    return server


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQServer]:
    """The session's RabbitMQ (a fresh vhost on the local broker), deleted at the end."""
    server = _start_session()
    yield server
    if server.vhost is not None:
        rabbitmqctl("delete_vhost", server.vhost)


@pytest.fixture
def rabbitmq_url(rabbitmq_server: RabbitMQServer) -> str:
    """A broker URL for the contract suite, with test tuning in the query string."""
    return f"{rabbitmq_server.url}?{TEST_OPTIONS}"
