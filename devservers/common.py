"""What every live server helper shares: free ports, the unavailable error, the CI switch."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable

__all__ = ["ServerUnavailableError", "free_port", "require_all", "wait_until_ready"]


class ServerUnavailableError(RuntimeError):
    """A server could not be started or reached; the message says which and what to run."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_all() -> bool:
    """Whether every backend is mandatory (``CHOREO_REQUIRE_ALL=1``, as in CI): a server that
    is missing must fail a run, never skip it."""
    return os.environ.get("CHOREO_REQUIRE_ALL", "") == "1"


def wait_until_ready(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], timeout: float
) -> bool:
    """Poll ``ready`` (a protocol handshake) until it holds; False once ``process`` has exited
    or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
