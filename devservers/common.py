"""What every live server helper shares: free ports, the unavailable error, the CI switch."""

from __future__ import annotations

import os
import socket

__all__ = ["ServerUnavailableError", "free_port", "require_all"]


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
