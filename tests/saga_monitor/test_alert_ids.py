"""Alert ids are derived from what an alert says exactly as they always were: a re-sent alert
keeps its id across versions of the monitor."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest

from saga_monitor.model import Alert

TYPES = ("saga.stuck", "saga.completed", "saga.anomaly", "saga.resolved", "saga.failed")
TEXTS = (
    "",
    "order-1",
    "naïve",
    "日本語",
    "emoji \U0001f600",
    'quote " \\ /',
    "\x00\x1f\x7f",
    "\ud800",
)


def reference_id(alert: Alert) -> str:
    """The derivation as first written: uuid5 of the facts as ``json.dumps`` writes them."""
    data = alert.data
    facts = [
        alert.type,
        alert.saga,
        alert.correlation_id,
        (data.get("event") or {}).get("id"),
        (data.get("anomaly") or {}).get("kind"),
        data.get("previous_state"),
        data.get("deadline"),
        data.get("state"),
    ]
    if alert.type == "saga.stuck":
        facts.append(data.get("expected_next"))
    if alert.type == "saga.resolved":
        facts = [alert.type, alert.saga, alert.correlation_id, data.get("resolves")]
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "choreo-saga-alert:" + json.dumps(facts)))


def random_text(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return rng.choice(TEXTS)
    alphabet = [chr(rng.randrange(0, 0x30000)) for _ in range(4)] + list("abc-_:. ")
    text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 2 else 7)
    values: list[Any] = [
        None,
        random_text(rng),
        random_text(rng),
        rng.randrange(-(10**20), 10**20),
        rng.uniform(-1e6, 1e6),
        rng.choice([True, False, 0.1, 1e300, -0.0, float("inf"), float("nan")]),
        random_text(rng),
    ]
    if kind < len(values):
        return values[kind]
    if kind < 9:
        return [
            random_text(rng) if rng.random() < 0.8 else random_value(rng, depth + 1)
            for _ in range(rng.randrange(0, 4))
        ]
    return {random_text(rng): random_value(rng, depth + 1) for _ in range(rng.randrange(0, 3))}


def random_alert(rng: random.Random) -> Alert:
    data: dict[str, Any] = {}
    for key in ("previous_state", "deadline", "state", "expected_next", "resolves"):
        if rng.random() < 0.7:
            data[key] = random_value(rng)
    if rng.random() < 0.6:
        data["event"] = {"id": random_value(rng)} if rng.random() < 0.9 else None
    if rng.random() < 0.4:
        data["anomaly"] = {"kind": random_value(rng)} if rng.random() < 0.9 else {}
    saga, correlation_id = random_text(rng), random_text(rng)
    return Alert(rng.choice(TYPES), saga, correlation_id, data)


@pytest.mark.parametrize("seed", range(4))
def test_alert_ids_are_derived_as_json_dumps_and_uuid5_derive_them(seed: int) -> None:
    """Over many random alerts (non-ASCII and unpaired surrogates, None, numbers, nested lists
    and dicts), each id is the one uuid5 gives for the facts as json.dumps writes them."""
    rng = random.Random(seed)
    alerts = [random_alert(rng) for _ in range(5000)]
    assert [reference_id(alert) for alert in alerts] == [alert.event_id for alert in alerts]


def test_the_machines_alerts_keep_their_ids() -> None:
    """A stuck alert of text, None and a list of text has the id it always had."""
    alert = Alert(
        "saga.stuck",
        "orders",
        "order-0000067",
        {"state": "stuck", "deadline": "2026-01-01T00:01:00Z", "expected_next": ["order.shipped"]},
    )
    assert reference_id(alert) == alert.event_id
