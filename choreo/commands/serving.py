"""Serving an HTTP app from a command (``registry serve``, ``saga serve``).

The socket is bound here, before uvicorn starts, so that a port in use is one line and exit 1
(uvicorn itself would log and exit 3) and a host that is not an address is one line and exit 2.
A server that listens beyond loopback without authentication says so on stderr.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from choreo.console import fail, warn
from choreo.errors import EXIT_FAILURE, EXIT_USAGE

__all__ = ["listen", "serve"]


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError) as exc:
        fail(f"--host {host!r} does not resolve to an address ({exc})", EXIT_USAGE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        fail(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "stop what uses it or choose another --port",
            EXIT_FAILURE,
        )
    return sock


def serve(app: Any, sock: socket.socket, *, name: str, authenticated: bool) -> None:
    """Run ``app`` on the listening ``sock`` until Ctrl-C or SIGTERM."""
    import uvicorn

    host = sock.getsockname()[0]
    if not authenticated and not ipaddress.ip_address(host.split("%", 1)[0]).is_loopback:
        warn(
            f"the {name} listens on {host} without authentication: anyone who can reach it can "
            "use it; set --auth-token or --auth-user/--auth-password"
        )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
