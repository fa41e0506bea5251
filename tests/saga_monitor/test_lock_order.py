"""Monitors sharing a PostgreSQL store lock the instances they judge or apply in one order, so
two ticks and a batch over the same thousands of instances, in opposite orders, all finish (no
deadlock) and every stuck alert is emitted once."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from devservers.databases import POSTGRES_URL
from saga_monitor import Correlator, SagaStore, open_saga_store
from saga_monitor.correlator import TICK_BATCH, Received
from tests.saga_monitor.helpers import at, event, example

pytestmark = pytest.mark.postgres

#: More instances than one tick transaction judges, so a tick takes two.
INSTANCES = TICK_BATCH + 100
#: Counts the sessions waiting, directly or not, for the session given.
WAITING_ON = (
    "WITH RECURSIVE w(pid) AS (SELECT pid FROM pg_stat_activity "
    "WHERE %(pid)s = ANY(pg_blocking_pids(pid)) UNION SELECT a.pid FROM pg_stat_activity a "
    "JOIN w ON w.pid = ANY(pg_blocking_pids(a.pid))) SELECT count(*) FROM w"
)


#: The instances' correlation ids: of this run alone (the instance locks are numbers shared by
#: the whole database, so another run's "o-00001" on another schema would take the same one).
RUN = uuid.uuid4().hex[:8]


def corr(n: int) -> str:
    return f"{RUN}-{n:05}"


def starts() -> list[Received]:
    """The start events of the instances, one deadline apart each (ticks judge in that
    order), each as broker message ``m<n>``."""
    return [
        Received(event("order.placed", corr(n), n / 100, id_=f"s{n}"), "orders", f"m{n}")
        for n in range(INSTANCES)
    ]


@contextmanager
def row_held(store_url: str, correlation_id: str) -> Iterator[int]:
    """An outside session holding the row of ``correlation_id`` (as an operator's UPDATE
    would); yields its backend pid, lets go at the end."""
    schema = parse_qs(urlsplit(store_url).query)["schema"][0]
    with psycopg.connect(POSTGRES_URL) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(
            "SELECT 1 FROM saga_instances WHERE correlation_id = %s FOR UPDATE", (correlation_id,)
        )
        (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone() or (0,)
        yield pid
        conn.rollback()


def stuck_alerts(store: SagaStore) -> Counter[str]:
    """How many stuck alerts the outbox holds per correlation id."""
    pending = store.pending_alerts(limit=100_000)
    return Counter(alert.correlation_id for _, alert in pending if alert.type == "saga.stuck")


def waiting_on(pid: int) -> int:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        (count,) = conn.execute(WAITING_ON, {"pid": pid}).fetchone() or (0,)
        return int(count)


def run_all(
    work: list[Callable[[], object]], pid: int, waiters: int
) -> tuple[list[BaseException], list[threading.Thread]]:
    """Start ``work`` in threads and return once ``waiters`` sessions queue behind ``pid``:
    the list their failures go to, and the threads."""
    failures: list[BaseException] = []

    def guarded(job: Callable[[], object]) -> None:
        try:
            job()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while waiting_on(pid) < waiters and not failures:
        assert time.monotonic() < deadline, "the monitors never queued behind the held row"
        time.sleep(0.02)  # polling a condition, with a deadline
    return failures, threads


def test_two_ticks_and_a_redelivered_batch_in_opposite_orders_all_finish(
    shared_store: str,
) -> None:
    """Two monitors tick over the same 4,100 due instances while a third applies a redelivered
    batch of their start events in the opposite order, all held up on one instance in the
    middle: all three finish, and each instance's stuck alert is in the outbox once."""
    definitions = example()
    stores: list[SagaStore] = [open_saga_store(shared_store) for _ in range(3)]
    first, second, third = stores
    try:
        Correlator(definitions).apply_many(first, starts(), now=datetime.now(UTC))
        again = [
            Received(r.event, r.topic, r.delivery, redelivered=True) for r in reversed(starts())
        ]
        watermark = at(INSTANCES / 100 + 60)  # every payment deadline passed
        with row_held(shared_store, corr(INSTANCES // 2)) as pid:
            failures, threads = run_all(
                [
                    lambda: Correlator(definitions).tick(first, watermark),
                    lambda: Correlator(definitions).tick(second, watermark),
                    lambda: Correlator(definitions).apply_many(third, again, now=datetime.now(UTC)),
                ],
                pid,
                waiters=3,
            )
        for thread in threads:
            thread.join(120)
        assert [] == [f"{type(exc).__name__}: {exc}" for exc in failures]
        stuck = stuck_alerts(first)
        assert {corr(n): 1 for n in range(INSTANCES)} == dict(stuck)
    finally:
        for store in stores:
            store.close()


#: Instances a prune deletes in the test below: more than one of its transactions takes.
PRUNED = 2500


def failed_instances() -> list[Received]:
    """The start and failure events of the pruned instances, the last one's first (so a tick
    judges them in the opposite order to the one they were written in)."""
    out = []
    for n in range(PRUNED):
        seconds = (PRUNED - n) / 100
        out.append(
            Received(event("order.placed", corr(n), seconds, id_=f"s{n}"), "orders", f"m{n}")
        )
        out.append(
            Received(
                event("payment.failed", corr(n), seconds + 1, id_=f"f{n}"), "payments", f"p{n}"
            )
        )
    return out


def test_a_prune_takes_the_instance_locks_in_the_same_order_as_a_tick_and_a_batch(
    shared_store: str,
) -> None:
    """One monitor prunes 2,500 failed instances past the retention (reading them in the order
    they were written) while another judges them (their failure alerts waited for the
    watermark, in the opposite order) and a third applies a redelivered batch of their failure
    events in that order too, all held up on one instance in the middle: all three finish,
    every instance is gone and no failure alert is in the outbox twice."""
    definitions = example()
    stores: list[SagaStore] = [open_saga_store(shared_store) for _ in range(3)]
    first, second, third = stores
    try:
        events = failed_instances()
        Correlator(definitions).apply_many(first, events, now=datetime.now(UTC))
        again = [
            Received(r.event, r.topic, r.delivery, redelivered=True)
            for r in reversed(events)
            if r.event.type == "payment.failed"
        ]
        later = at(PRUNED / 100 + 3600)
        pruned: list[int] = []  # asked as the monitor asks: its conditions read every row
        # in the table's order (the order the instances were written), not the tick's
        with row_held(shared_store, corr(PRUNED // 2)) as pid:
            failures, threads = run_all(  # the prune first, holding the rows it read up to there
                [
                    lambda: pruned.append(
                        first.prune(later, acknowledged_before=later, stuck_before=later)
                    )
                ],
                pid,
                waiters=1,
            )
            more, others = run_all(
                [
                    lambda: Correlator(definitions).tick(second, later),
                    lambda: Correlator(definitions).apply_many(third, again, now=datetime.now(UTC)),
                ],
                pid,
                waiters=3,
            )
        for thread in threads + others:
            thread.join(120)
        assert [] == [f"{type(exc).__name__}: {exc}" for exc in failures + more]
        assert [PRUNED] == pruned
        ids = {corr(n) for n in range(PRUNED)}
        assert not ids & {i.correlation_id for i in first.instances(limit=10 * PRUNED)}
        alerted = Counter(
            alert.correlation_id
            for _, alert in first.pending_alerts(limit=10 * PRUNED)
            if alert.type == "saga.failed"
        )
        assert set(alerted) <= ids
        assert {1} >= set(alerted.values())
    finally:
        for store in stores:
            store.close()
