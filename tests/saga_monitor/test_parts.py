"""A store that bounds the instances of a transaction (PostgreSQL's, see
:class:`saga_monitor.store.LockingStore`) gets a batch touching more in several transactions,
each with every event of its instances: the outcomes, instances, orphans and alerts are those
of the batch in one transaction (the differential check's random scripts: two sagas sharing
event types, redeliveries, duplicates, orphans, ticks), only alerts of different instances may
come in another order."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from saga_monitor import Definitions, MemoryStore, load_definitions
from saga_monitor.store import LockingStore
from tests.saga_monitor import differential


class OneInstanceTransactions(MemoryStore):
    """A memory store whose transactions touch one instance each."""

    instances_per_transaction = 1


class TwoInstanceTransactions(MemoryStore):
    """A memory store whose transactions touch two instances each."""

    instances_per_transaction = 2


@pytest.fixture(scope="module")
def definitions(tmp_path_factory: pytest.TempPathFactory) -> Definitions:
    path: Path = tmp_path_factory.mktemp("parts") / "sagas.yaml"
    path.write_text(differential.SAGAS)
    return load_definitions(path)


def normalised(log: list[Any]) -> list[Any]:
    """``log`` with each outcome's alerts, anomalies and steps, and the outbox, in a sorted
    order (the only thing the parts may change)."""

    def sort(value: Any) -> Any:
        if isinstance(value, dict) and "alerts" in value:
            return {k: sorted(map(repr, v)) if isinstance(v, list) else v for k, v in value.items()}
        if isinstance(value, dict) and "pending" in value:
            return {**value, "pending": sorted(map(repr, value["pending"]))}
        if isinstance(value, list):
            return [sort(item) for item in value]
        return value

    return sort(log)


@pytest.mark.parametrize("store_type", [OneInstanceTransactions, TwoInstanceTransactions])
def test_batches_in_parts_give_what_one_transaction_gives(
    definitions: Definitions, store_type: type[MemoryStore]
) -> None:
    """300 random scripts through batches in parts and in one transaction: the same logs."""
    assert isinstance(store_type(), LockingStore)
    differing = []
    for seed in range(300):
        rng = random.Random(seed)
        events, deliveries = differential.script(rng)
        again = rng.random()
        logs = [
            normalised(
                differential.run_store(
                    definitions, events, deliveries, random.Random(again), store, None
                )
            )
            for store in (MemoryStore(), store_type())
        ]
        if logs[0] != logs[1]:
            differing.append(seed)
    assert [] == differing
