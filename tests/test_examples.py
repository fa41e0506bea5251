"""The example services, run as separate processes on one SQLite broker, fulfil orders."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker import Bus

EXAMPLES = Path(__file__).parent.parent / "examples"
SERVICES = ("order_service", "inventory_service", "payment_service", "shipping_service")
GROUPS = {"order-service", "inventory-service", "payment-service", "shipping-service"}


async def _topics(url: str) -> dict[str, set[str]]:
    async with Bus(url) as bus:
        return {t.name: set(t.groups) for t in await bus.topics()}


async def _types(url: str, topic: str) -> list[str]:
    async with Bus(url) as bus:
        return [e.type for e in await bus.dead_letters(topic, limit=1000)]


def _wait(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_example_services_fulfil_orders(tmp_path: Path) -> None:
    """Four service processes react to each other: cheap orders ship, big ones are cancelled."""
    url = f"sqlite:///{tmp_path}/broker.db?poll_interval=0.02"
    procs = [
        subprocess.Popen(
            [sys.executable, str(EXAMPLES / f"{name}.py"), "--broker", url],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
        )
        for name in SERVICES
    ]
    try:
        _wait(
            lambda: GROUPS <= set().union(*asyncio.run(_topics(url)).values()),
            "every service to join its group",
        )
        placed = subprocess.run(
            [sys.executable, str(EXAMPLES / "place_orders.py"), "6"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        assert 6 == placed.stdout.count("placed")
        _wait(
            lambda: (
                asyncio.run(_types(url, "shipping")).count("order.shipped") == 4
                and asyncio.run(_types(url, "orders")).count("order.cancelled") == 2
            ),
            "4 shipped and 2 cancelled orders",
        )
    finally:
        for proc in procs:
            proc.terminate()
        errors = [proc.communicate(timeout=30)[1].decode() for proc in procs]
    assert [0, 0, 0, 0] == [proc.returncode for proc in procs], errors
    assert 6 == asyncio.run(_types(url, "orders")).count("order.placed")
