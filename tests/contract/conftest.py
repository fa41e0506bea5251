"""The backend fixture of the contract suite: every test here runs on every backend.

``memory`` and ``sqlite`` are built in; every module ``tests/servers/<name>.py`` that defines a
fixture ``<name>_url`` (a broker URL for a live server) adds ``<name>`` to the matrix, marked
``@pytest.mark.<name>`` so ``pytest -m "not kafka"`` runs a subset.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from broker import Bus
from tests.conftest import SERVER_MODULES

BACKENDS = ["memory", "sqlite", *SERVER_MODULES]


@pytest.fixture(params=[pytest.param(name, marks=getattr(pytest.mark, name)) for name in BACKENDS])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A broker URL for a fresh namespace on one backend."""
    name = request.param
    if name == "memory":
        return f"memory://contract-{uuid.uuid4().hex}"
    if name == "sqlite":
        return f"sqlite:///{tmp_path}/broker.db?visibility_timeout=3&poll_interval=0.01"
    url: str = request.getfixturevalue(f"{name}_url")
    return url


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses."""
    return f"contract-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def make_bus(backend_url: str) -> AsyncIterator[Callable[..., Bus]]:
    """A factory of started-on-demand buses on the backend; all are stopped after the test."""
    buses: list[Bus] = []

    def factory(**options: object) -> Bus:
        bus = Bus(backend_url, **options)  # type: ignore[arg-type]
        buses.append(bus)
        return bus

    yield factory
    for bus in buses:
        await bus.stop()
