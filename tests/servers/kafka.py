"""Kafka live-server fixtures: a spawned Tansu broker (``devservers.kafka``), or
``CHOREO_TEST_KAFKA_URL``. ``kafka_server`` can restart it on the same port for fault tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from devservers import free_port
from devservers.kafka import ENV_URL, KafkaServer, api_versions_ok, running_kafka

__all__ = [
    "KafkaServer",
    "api_versions_ok",
    "free_port",
    "kafka_server",
    "kafka_url",
    "own_kafka_url",
]


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[KafkaServer | None]:
    """The session's spawned Tansu broker, or None when CHOREO_TEST_KAFKA_URL names a server."""
    with running_kafka() as server:
        yield server


@pytest.fixture
def kafka_url(kafka_server: KafkaServer | None) -> str:
    """A kafka:// URL of a live broker (external servers must answer, or the test fails)."""
    external = os.environ.get(ENV_URL)
    if external:
        return external
    assert kafka_server is not None
    # Groups get a per-test namespace: Tansu ignores LeaveGroup and can keep a closed member as
    # the leader of a reused group name, which would stall the next test's join.
    return f"{kafka_server.url}&group_prefix=t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def own_kafka_url() -> Iterator[str]:
    """A kafka:// URL of a Tansu broker started for this test alone (or CHOREO_TEST_KAFKA_URL):
    for the long multi-process tests, which must not depend on what hundreds of earlier tests
    left in the session's broker (groups, topics, members Tansu never forgets)."""
    with running_kafka() as server:
        external = os.environ.get(ENV_URL)
        if external:
            yield external
        else:
            assert server is not None
            yield f"{server.url}&group_prefix=t{uuid.uuid4().hex[:8]}."
