"""NATS JetStream live-server fixtures: a spawned ``nats-server`` (``devservers.nats``), or
``CHOREO_TEST_NATS_URL`` (then the test streams a session created there are deleted at the end).
``restartable_nats`` is a private server a fault test may kill and restart."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devservers import free_port
from devservers.nats import (
    ENV_URL,
    NATS_OPTIONS,
    NatsServer,
    running_nats,
    streams_removed_after,
    system_nats_binary,
    with_options,
)
from tests.servers import unavailable

__all__ = [
    "NATS_OPTIONS",
    "NatsServer",
    "free_port",
    "nats_server",
    "nats_url",
    "older_nats_url",
    "own_nats_url",
    "restartable_nats",
    "with_options",
]

#: Subjects of the streams the tests create on an external server.
TEST_PREFIXES = ("contract-", "faults-", "interop.", "legacy", "bench-")


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer | None]:
    """The session's spawned nats-server, or None when CHOREO_TEST_NATS_URL names a server
    (then the test streams this session created there are deleted at the end)."""
    external = os.environ.get(ENV_URL)
    if external:
        with streams_removed_after(external, TEST_PREFIXES):
            yield None
        return
    with running_nats() as server:
        yield server


@pytest.fixture
def nats_url(nats_server: NatsServer | None) -> str:
    """A nats:// URL of a live JetStream server (an external one must answer, or tests fail)."""
    external = os.environ.get(ENV_URL)
    if external:
        return with_options(external)
    assert nats_server is not None
    return nats_server.url


@pytest.fixture
def restartable_nats() -> Iterator[NatsServer]:
    """A private nats-server (fsync on every write) that a test may kill and restart."""
    server = NatsServer(sync_always=True)
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def own_nats_url() -> Iterator[str]:
    """A nats:// URL of a JetStream server started for this test alone (or the external one):
    for the long multi-process tests, which must not depend on what hundreds of earlier tests
    left in the session's server."""
    external = os.environ.get(ENV_URL)
    if external:
        yield with_options(external)
        return
    with running_nats() as server:
        assert server is not None
        yield server.url


@pytest.fixture(scope="module")
def older_nats_url() -> Iterator[str]:
    """A nats:// URL of a JetStream server older than 2.14 (no fast-ingest batches): the
    system's nats-server (Debian's is 2.9), spawned for this module."""
    binary = system_nats_binary()
    if binary is None:
        unavailable("no nats-server on PATH besides the venv's (Debian: apt install nats-server)")
    server = NatsServer(binary=binary)
    server.start()
    try:
        yield server.url
    finally:
        server.remove()
