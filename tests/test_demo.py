"""`choreo demo` as a newcomer runs it: on the embedded default, and with --broker on each
real broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

STATES = ("completed", "compensated", "failed", "stuck")


def _demo(tmp_path: Path, *extra: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "choreo", "demo", "--orders", "60", *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert 0 == result.returncode, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result.stdout


def _check_summary(out: str) -> None:
    for state in STATES:
        assert state in out, f"no {state} sagas in:\n{out}"
    assert "1 dead letter(s) in orders.dlq" in out
    assert "cannot parse items of order-0013" in out
    assert "choreo saga show order-" in out
    cause = (
        "inventory.reserved for order-0013: the order.placed event is in orders.dlq "
        "(group inventory-service), ValueError: cannot parse items of order-0013"
    )
    assert cause in " ".join(out.split()), out
    assert "who owes what: shipping-service (2 stuck), inventory-service (1 stuck)" in out


@pytest.mark.slow
def test_demo_on_the_embedded_default(tmp_path: Path) -> None:
    """The demo shows completed, compensated, failed and stuck sagas and one dead letter, and
    the commands it prints work on what it left behind."""
    out = _demo(tmp_path)
    _check_summary(out)
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "choreo",
            "saga",
            "ls",
            "--state",
            "stuck",
            "--output",
            "json",
            "--store",
            "sqlite:///.choreo/demo/sagas.db",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    stuck = json.loads(listed.stdout)
    assert {"order-0011", "order-0013", "order-0042"} <= {i["correlation_id"] for i in stuck}
    (blocked,) = [i for i in stuck if i["correlation_id"] == "order-0013"]
    assert blocked["cause"].startswith("inventory.reserved for order-0013: the order.placed")
    dead = subprocess.run(
        [
            sys.executable,
            "-m",
            "choreo",
            "dlq",
            "ls",
            "orders",
            "--output",
            "json",
            "--broker",
            "sqlite:///.choreo/demo/broker.db",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert ["handler-error"] == [e["dlqreason"] for e in json.loads(dead.stdout)]


@pytest.mark.slow
def test_demo_says_when_it_lists_only_some_stuck_orders(tmp_path: Path) -> None:
    """With 200 orders, 7 are stuck: the first six are named, then an ellipsis."""
    result = subprocess.run(
        [sys.executable, "-m", "choreo", "demo", "--orders", "200"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert 0 == result.returncode, result.stderr[-3000:]
    listed = "7 stuck: order-0011, order-0013, order-0042, order-0073, order-0104, order-0135, …"
    assert listed in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend",
    [
        pytest.param(name, marks=getattr(pytest.mark, name))
        for name in ("kafka", "rabbitmq", "nats")
    ],
)
def test_demo_on_a_real_broker(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """`choreo demo --broker URL` runs the same choreography on Kafka, RabbitMQ and NATS."""
    url: str = request.getfixturevalue(f"{backend}_url")
    _check_summary(_demo(tmp_path, "--broker", url))
