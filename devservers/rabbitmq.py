"""RabbitMQ for tests and benchmarks: the local broker (or ``CHOREO_TEST_AMQP_URL``) in a fresh
vhost, and a private node that fault tests may kill.

:func:`rabbitmq_session` opens the server at ``CHOREO_TEST_AMQP_URL`` (default
``amqp://guest:guest@127.0.0.1:5672/``). When that is the local default and ``rabbitmqctl``
works, it creates a private vhost (deleted by :meth:`RabbitMQServer.close`), so no run ever sees
another run's queues; with an external URL the callers rely on unique names. It raises unless a
real AMQP handshake succeeds.

:class:`RabbitMQNode` starts a RabbitMQ node of its own (the installed ``rabbitmq-server`` with a
temporary data directory, node name, cookie and free ports) that a test can kill with -9 and
start again without disturbing anybody else's broker. It costs a few seconds, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from devservers.common import ServerUnavailableError, free_port

__all__ = [
    "DEFAULT_URL",
    "ENV_URL",
    "SERVER_SCRIPT",
    "TEST_OPTIONS",
    "RabbitMQNode",
    "RabbitMQServer",
    "handshake",
    "open_rabbitmq",
    "rabbitmq_session",
    "rabbitmqctl",
]

ENV_URL = "CHOREO_TEST_AMQP_URL"
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


async def handshake(url: str) -> None:
    """Open and close one AMQP connection to ``url`` (raises when that fails)."""
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

    def close(self) -> None:
        """Delete this session's vhost (with everything in it), if it made one."""
        if self.vhost is not None:
            rabbitmqctl("delete_vhost", self.vhost)


def _private_vhost() -> str | None:
    """A new vhost on the local broker that guest may use, or None if rabbitmqctl cannot."""
    if not shutil.which("rabbitmqctl"):
        return None
    vhost = f"choreo-test-{uuid.uuid4().hex[:10]}"
    try:
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return None  # not allowed to administer it: share "/" with unique names
    return vhost


def open_rabbitmq() -> RabbitMQServer:
    """The server at ``CHOREO_TEST_AMQP_URL`` as is, or the local default in a fresh vhost;
    raises :class:`ServerUnavailableError` unless an AMQP handshake succeeds. Call
    :meth:`RabbitMQServer.close` when done."""
    external = os.environ.get(ENV_URL)
    server = RabbitMQServer(external or DEFAULT_URL, None if external else _private_vhost())
    try:
        asyncio.run(handshake(server.url))
    except Exception as exc:
        raise ServerUnavailableError(
            f"RabbitMQ is not reachable at {server.url.replace('guest:guest', 'guest:***')}: "
            f"{exc!r}; start it or set {ENV_URL}"
        ) from exc
    return server


@contextlib.contextmanager
def rabbitmq_session() -> Iterator[RabbitMQServer]:
    """:func:`open_rabbitmq`, closed (its vhost deleted) on exit."""
    server = open_rabbitmq()
    try:
        yield server
    finally:
        server.close()


class RabbitMQNode:
    """A private RabbitMQ node (own data directory, name, cookie and ports) to kill at will."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="choreo-rabbitmq-"))
        self.port = free_port()
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
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    @property
    def url(self) -> str:
        """The node's AMQP URL (guest, default vhost)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self, timeout: float = 90) -> None:
        """Start the node and wait for a real AMQP handshake."""
        with (self.home / "server.out").open("ab") as log:  # the node keeps its own copy
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
                asyncio.run(handshake(self.url))
                return
            except Exception as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise ServerUnavailableError(
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

    def remove(self) -> None:
        """Kill the node and delete its data directory."""
        self.kill()
        shutil.rmtree(self.home, ignore_errors=True)
