"""RabbitMQ live-server fixtures: the local broker (or ``CHOREO_TEST_AMQP_URL``) in a fresh vhost,
and a private node that fault tests may kill.

The contract and interop tests use the server at ``CHOREO_TEST_AMQP_URL`` (default
``amqp://guest:guest@127.0.0.1:5672/``). When that is the local default and ``rabbitmqctl``
works, the session creates a private vhost and deletes it at the end, so no run ever sees
another run's queues; with an external URL the tests rely on unique names. The session fails
(never skips) unless a real AMQP handshake succeeds.

``rabbitmq_node`` starts a RabbitMQ node of its own (the installed ``rabbitmq-server`` with a
temporary data directory, node name, cookie and free ports) so a test can kill it with -9 and
start it again without disturbing anybody else's broker. It costs a few seconds, once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

__all__ = ["RabbitMQNode", "RabbitMQServer", "rabbitmq_node", "rabbitmq_server", "rabbitmq_url"]

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
SERVER_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RabbitMQNode:
    """A private RabbitMQ node (own data directory, name, cookie and ports) to kill at will."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="choreo-rabbitmq-"))
        self.port = _free_port()
        self.name = f"choreo-{uuid.uuid4().hex[:8]}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex)
        cookie.chmod(0o400)
        (self.home / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (self.home / "enabled_plugins").write_text("[].\n")
        (self.home / "env.conf").write_text("")
        self.env = {
            **os.environ,
            "HOME": str(self.home),
            "RABBITMQ_CONF_ENV_FILE": str(self.home / "env.conf"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_DIST_PORT": str(_free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self, timeout: float = 90) -> None:
        """Start the node and wait for a real AMQP handshake."""
        log = (self.home / "server.out").open("ab")
        self.process = subprocess.Popen(
            [str(SERVER_SCRIPT)],
            cwd=self.home,
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                asyncio.run(_handshake(self.url))
                return
            except Exception as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"private RabbitMQ node {self.name} did not start: {exc!r}; "
                        f"see {self.home / 'server.out'}"
                    ) from exc
                time.sleep(0.2)

    def kill(self) -> None:
        """Kill the node with SIGKILL (a crash: only what reached the disk survives)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        self.process = None

    def restart(self) -> None:
        """Kill the node and start it again on the same port with the same data."""
        self.kill()
        self.start()


@pytest.fixture(scope="session")
def rabbitmq_node() -> Iterator[RabbitMQNode]:
    """A private RabbitMQ node for crash tests; killed and removed at the end."""
    if not SERVER_SCRIPT.exists():
        if os.environ.get("CHOREO_TEST_AMQP_URL"):
            pytest.skip("crash tests need a local RabbitMQ installation (rabbitmq-server)")
        raise RuntimeError(f"{SERVER_SCRIPT} is missing: install rabbitmq-server")
    node = RabbitMQNode()
    try:
        node.start()
        yield node
    finally:
        node.kill()
        shutil.rmtree(node.home, ignore_errors=True)
