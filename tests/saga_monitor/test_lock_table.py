"""A shared PostgreSQL store locks each instance a transaction touches (an advisory lock, a
slot of the server's shared lock table until the commit), and that table holds
max_locks_per_transaction x max_connections locks in all (6,400 by default): batches, ticks and
monitors of any size fit in it, because no transaction touches more than
:data:`~saga_monitor.store_sql.LOCKED_INSTANCES` instances; and a batch cut short between its
transactions, then delivered again, ends as if applied once."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from devservers.databases import POSTGRES_URL
from saga_monitor import Correlator, SagaStore, SagaStoreError, SqlSagaStore, open_saga_store
from saga_monitor.correlator import Received
from tests.saga_monitor.helpers import at, event, example
from tests.saga_monitor.test_lock_order import row_held, run_all, stuck_alerts, waiting_on

pytestmark = pytest.mark.postgres

#: The instances' correlation ids are of this run alone (the lock numbers are the database's).
RUN = uuid.uuid4().hex[:8]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def corr(n: int | str) -> str:
    return f"{RUN}-{n}"


def lock_table() -> int:
    """How many locks the server's shared lock table holds (about)."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        rows = [
            conn.execute(f"SHOW {name}").fetchone()
            for name in ("max_locks_per_transaction", "max_connections")
        ]
    locks, connections = (int(row[0]) if row else 0 for row in rows)
    return locks * connections


def start(n: int | str, seconds: float = 0.0) -> Received:
    return Received(event("order.placed", corr(n), seconds, id_=f"s{n}"), "orders", f"m{n}")


def test_a_batch_of_more_instances_than_the_lock_table_holds_is_applied(
    shared_store: str,
) -> None:
    """One batch starting 20,000 instances (at least three times what the server's lock table
    holds) is applied, every instance stored."""
    count = max(20_000, 3 * lock_table())
    store = open_saga_store(shared_store)
    try:
        Correlator(example()).apply_many(store, [start(n) for n in range(count)], now=NOW)
        assert {"order-fulfilment": count} == {saga: n for (saga, _), n in store.counts().items()}
    finally:
        store.close()


#: Instances a tick judges in the test below, and instances each monitor's batch starts.
DUE = 4000
STARTED = 5000


def last_locked(numbers: list[int]) -> int:
    """The one of ``numbers`` whose instance's lock number is the largest (taken last)."""
    keys = [f"order-fulfilment\x1f{corr(n)}" for n in numbers]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT k FROM unnest(%s::text[]) AS k ORDER BY hashtextextended(k, 0) DESC LIMIT 1",
            (keys,),
        ).fetchone()
    return numbers[keys.index(row[0] if row else "")]


def test_three_monitors_batches_and_a_tick_held_up_together_fit_in_the_lock_table(
    shared_store: str,
) -> None:
    """Three monitors each apply a batch starting 5,000 instances while a fourth ticks over
    4,000 due ones, all held up on one instance (each batch's last event, the tick's first,
    the last lock of all) with everything before it locked: all four finish, each due instance
    is reported stuck once (the one they all waited for at most once) and that one has its
    payment once, the other copies recognised as the same message."""
    definitions = example()
    stores: list[SagaStore] = [open_saga_store(shared_store) for _ in range(4)]
    numbers = list(range(DUE + 3 * STARTED + 1))
    last = last_locked(numbers)
    numbers.remove(last)
    due, started = numbers[:DUE], numbers[DUE:]
    held = corr(last)
    try:
        setup = [start(last)] + [start(n, 1 + k / 100) for k, n in enumerate(due)]
        Correlator(definitions).apply_many(stores[0], setup, now=NOW)
        payment = Received(event("payment.authorized", held, 1, id_="pH"), "payments", "pH")
        batches = [
            [start(n, 10_000) for n in started[m * STARTED : (m + 1) * STARTED]] + [payment]
            for m in range(3)
        ]
        watermark = at(DUE / 100 + 60)  # every due instance's payment deadline passed
        with row_held(shared_store, held) as pid:
            failures, threads = run_all(
                [
                    lambda: Correlator(definitions).tick(stores[3], watermark),
                    *(
                        lambda store=store, batch=batch: Correlator(definitions).apply_many(
                            store, batch, now=NOW
                        )
                        for store, batch in zip(stores, batches, strict=False)
                    ),
                ],
                pid,
                waiters=4,
            )
        for thread in threads:
            thread.join(120)
        assert [] == [f"{type(exc).__name__}: {exc}" for exc in failures]
        stuck = stuck_alerts(stores[0])
        assert stuck.pop(held, 0) <= 1  # stuck if the tick judged it before the payment
        assert {corr(n): 1 for n in due} == dict(stuck)
        (instance,) = stores[0].instances(correlation_id=held)
        assert (["order.placed", "payment.authorized"], []) == (
            [entry.event.type for entry in instance.timeline],
            [anomaly.kind for anomaly in instance.anomalies],
        )
    finally:
        for store in stores:
            store.close()


#: Instances the batch below touches: three of its transactions' worth.
TOUCHED = 1200


def batch() -> list[Received]:
    """Starts, failed payments (alerted at once), second copies of starts (duplicates) and, last,
    the payment of an instance started before."""
    out = []
    for n in range(TOUCHED):
        out.append(start(n, n / 100))
        if n % 3 == 0:
            failed = event("payment.failed", corr(n), n / 100 + 1, id_=f"f{n}")
            out.append(Received(failed, "payments", f"p{n}"))
        if n % 50 == 0:
            out.append(Received(start(n, n / 100).event, "orders", f"copy{n}"))
    out.append(Received(event("payment.authorized", corr("held"), 1, id_="pH"), "payments", "pH"))
    return out


def state_of(store: SagaStore) -> tuple[list[str], list[str]]:
    """Every instance's document and every alert in the outbox, as text, sorted."""
    instances = sorted(instance.to_json() for instance in store.instances(limit=10 * TOUCHED))
    alerts = sorted(json.dumps(a.to_dict()) for _, a in store.pending_alerts(limit=10 * TOUCHED))
    return instances, alerts


def test_a_batch_cut_short_between_its_transactions_and_delivered_again_ends_as_applied_once(
    shared_store: str, second_shared_store: str
) -> None:
    """A batch touching 1,200 instances is cancelled in its last transaction (the earlier ones
    committed), then delivered again whole: the instances, their duplicates and the alerts in
    the outbox are those of the batch applied once."""
    definitions, later = example(), at(TOUCHED / 100 + 3600)
    cut, once = open_saga_store(shared_store), open_saga_store(second_shared_store)
    try:
        for store in (cut, once):
            Correlator(definitions).apply_many(store, [start("held")], now=NOW)
        failures: list[BaseException] = []
        worker = threading.Thread(
            target=lambda: failures.extend(_apply(cut, batch(), later)), name="batch"
        )
        with row_held(shared_store, corr("held")) as pid:
            worker.start()
            deadline = time.monotonic() + 60
            while waiting_on(pid) < 1:  # the batch's last transaction waits for the row
                assert worker.is_alive(), failures
                assert time.monotonic() < deadline, "the batch never queued behind the row"
                time.sleep(0.02)  # polling a condition, with a deadline
            assert isinstance(cut, SqlSagaStore)
            cut.interrupt(worker.ident or 0)
            worker.join(60)
        assert [SagaStoreError] == [type(exc) for exc in failures]
        assert 0 < len(cut.instances(limit=10 * TOUCHED)) < TOUCHED + 1  # some committed
        again = [Received(r.event, r.topic, r.delivery, redelivered=True) for r in batch()]
        Correlator(definitions).apply_many(cut, again, now=NOW, watermark=later)
        Correlator(definitions).apply_many(once, batch(), now=NOW, watermark=later)
        assert state_of(once) == state_of(cut)
        duplicates = sum(
            anomaly.kind == "duplicate"
            for instance in cut.instances(limit=10 * TOUCHED)
            for anomaly in instance.anomalies
        )
        assert TOUCHED // 50 == duplicates
    finally:
        cut.close()
        once.close()


def _apply(store: SagaStore, items: list[Received], watermark: datetime) -> list[BaseException]:
    """Apply ``items`` (in this thread); the failure, if any."""
    try:
        Correlator(example()).apply_many(store, items, now=NOW, watermark=watermark)
    except BaseException as exc:
        return [exc]
    finally:
        assert isinstance(store, SqlSagaStore)
        store.release()
    return []
