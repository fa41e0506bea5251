"""Fixtures for the schema registry tests: a registry on a fresh SQLite file, a live server."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import uvicorn

from schemas.registry import Registry
from schemas.server import Auth, create_app

POSTGRES_URL = os.environ.get(
    "CHOREO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry over a new SQLite file."""
    reg = Registry.open(f"sqlite:///{tmp_path}/registry.db")
    yield reg
    reg.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL storage URL with a table prefix of its own; its tables are dropped after."""
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    yield f"{POSTGRES_URL}?table_prefix={prefix}"
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE %s", (f"{prefix}%",)
            ).fetchall()
            for (table,) in tables:
                conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    except psycopg.OperationalError:
        pass  # the test itself already failed on the unreachable server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A uvicorn server running the registry app in a thread."""

    url: str
    registry: Registry
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_server(registry: Registry, auth: Auth | None = None) -> LiveServer:
    port = free_port()
    config = uvicorn.Config(
        create_app(registry, auth=auth),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        ws="none",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the registry server did not start")
        time.sleep(0.01)
    return LiveServer(f"http://127.0.0.1:{port}", registry, server, thread)


@pytest.fixture
def live(registry: Registry) -> Iterator[LiveServer]:
    """A live registry server on a free port."""
    srv = start_server(registry)
    yield srv
    srv.stop()
