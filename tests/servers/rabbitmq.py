"""RabbitMQ live-server fixtures (``devservers.rabbitmq``): the local broker, or
``CHOREO_TEST_AMQP_URL``, in a fresh vhost per session; and a private node that fault tests may
kill. The session fails (never skips) unless a real AMQP handshake succeeds."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devservers.rabbitmq import (
    ENV_URL,
    SERVER_SCRIPT,
    TEST_OPTIONS,
    RabbitMQNode,
    RabbitMQServer,
    rabbitmq_session,
)
from tests.servers import unavailable

__all__ = [
    "TEST_OPTIONS",
    "RabbitMQNode",
    "RabbitMQServer",
    "rabbitmq_node",
    "rabbitmq_server",
    "rabbitmq_url",
]


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQServer]:
    """The session's RabbitMQ (a fresh vhost on the local broker), deleted at the end."""
    with rabbitmq_session() as server:
        yield server


@pytest.fixture
def rabbitmq_url(rabbitmq_server: RabbitMQServer) -> str:
    """A broker URL for the contract suite, with test tuning in the query string."""
    return f"{rabbitmq_server.url}?{TEST_OPTIONS}"


@pytest.fixture(scope="session")
def rabbitmq_node() -> Iterator[RabbitMQNode]:
    """A private RabbitMQ node for crash tests; killed and removed at the end."""
    if not SERVER_SCRIPT.exists():
        if os.environ.get(ENV_URL):
            unavailable("crash tests need a local RabbitMQ installation (rabbitmq-server)")
        raise RuntimeError(f"{SERVER_SCRIPT} is missing: install rabbitmq-server")
    node = RabbitMQNode()
    try:
        node.start()
        yield node
    finally:
        node.remove()
