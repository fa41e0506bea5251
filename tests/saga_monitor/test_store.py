"""The stores: SQLite and PostgreSQL keep instances, deadlines, orphans and alerts the same way."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from saga_monitor import Correlator, SagaConfigError, SagaStore, SagaStoreError, open_saga_store
from saga_monitor.correlator import TICK_BATCH, Received
from saga_monitor.store_sql import SqlSagaStore
from tests.saga_monitor.helpers import at, event, example

PG_URL = os.environ.get("CHOREO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

StoreFactory = Callable[[], SagaStore]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of store objects that all open the same (fresh) database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/sagas.db"
    else:
        url = f"{PG_URL}?schema=saga_test_{uuid.uuid4().hex[:12]}"
    opened: list[SagaStore] = []

    def factory() -> SagaStore:
        store = open_saga_store(url)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()
    if request.param == "postgres":
        cleaner = open_saga_store(url)
        cleaner.drop_schema()  # type: ignore[attr-defined]
        cleaner.close()


def test_instances_survive_reopening(make_store: StoreFactory) -> None:
    """What one store object committed, a fresh one (a restarted monitor) reads back equal."""
    correlator = Correlator(example())
    first = make_store()
    for item in (event("order.placed"), event("payment.authorized", seconds=1)):
        correlator.apply(first, item, topic="orders", now=at(1))
    before = first.instances()
    first.close()
    assert before == make_store().instances()
    assert ["inventory.reserved"] == before[0].expected


def test_a_batch_over_instances_not_in_memory_continues_them(make_store: StoreFactory) -> None:
    """A batch reads the instances it touches that the store object holds no copy of (a
    restarted monitor; more than one query's worth of keys) and continues each one exactly as
    a store that kept them all in memory does, while its new sagas start fresh."""
    correlator = Correlator(example())
    reference = open_saga_store("memory://")
    first = make_store()
    placed = [Received(event("order.placed", f"o-{n}", id_=f"p-{n}"), "orders") for n in range(300)]
    for store in (first, reference):
        correlator.apply_many(store, placed, now=at(1), watermark=at(0))
    first.close()
    restarted = make_store()
    later = [
        *(
            Received(event("payment.authorized", f"o-{n}", 1, id_=f"a-{n}"), "p")
            for n in range(300)
        ),
        Received(event("order.placed", "o-new", 2, id_="p-new"), "orders"),
        Received(event("payment.authorized", "o-new", 3, id_="a-new"), "p"),
        Received(event("payment.authorized", "o-none", 3, id_="a-none"), "p"),  # an orphan
        Received(event("order.placed", "o-0", 4, id_="p-0"), "orders", redelivered=True),
    ]
    outcomes = [
        correlator.apply_many(s, later, now=at(5), watermark=at(4)) for s in (restarted, reference)
    ]
    assert outcomes[0] == outcomes[1]
    assert 301 == len(restarted.instances(state="running", limit=1000))
    by_id = {i.correlation_id: i for i in restarted.instances(limit=1000)}
    assert by_id == {i.correlation_id: i for i in reference.instances(limit=1000)}
    assert ["inventory.reserved"] == by_id["o-299"].expected == by_id["o-new"].expected
    assert [("o-none", "payment.authorized")] == [(c, o.type) for _, c, o in restarted.orphans()]


def test_deadline_that_passed_while_down_is_found_on_restart(make_store: StoreFactory) -> None:
    """Deadlines are persisted: a new store object lists the instance as due, then stuck."""
    correlator = Correlator(example())
    store = make_store()
    correlator.apply(store, event("order.placed"), topic="orders", now=at(0))
    store.close()
    restarted = make_store()
    assert [] == restarted.due(at(29))
    assert [("order-fulfilment", "o-1")] == restarted.due(at(31))
    outcome = correlator.tick(restarted, at(31))
    assert ["saga.stuck"] == [a.type for a in outcome.alerts]
    assert ("stuck", []) == (restarted.instances()[0].state, restarted.due(at(40)))


def test_a_tick_over_more_instances_than_one_transaction_judges_each_once(
    make_store: StoreFactory,
) -> None:
    """A tick judges the due instances a batch at a time (after a catch-up, every instance
    whose alert waited for the watermark): more of them than one transaction holds each go
    stuck once, with one alert each in the order of their deadlines, and nothing is due after."""
    correlator = Correlator(example())
    store = make_store()
    sagas = [f"o-{n}" for n in range(TICK_BATCH + 2)]
    items = [Received(event("order.placed", c, n / 1000), "orders") for n, c in enumerate(sagas)]
    correlator.apply_many(store, items, now=at(0))
    outcome = correlator.tick(store, at(100))
    stuck = [(a.type, a.correlation_id) for a in outcome.alerts]
    pending = [(a.type, a.correlation_id) for _, a in store.pending_alerts(10 * len(sagas))]
    assert [("saga.stuck", c) for c in sagas] == stuck == pending
    assert {"stuck": len(sagas)} == Counter(i.state for i in store.instances(limit=10**6))
    assert ([], []) == (store.due(at(100)), correlator.tick(store, at(100)).alerts)


def test_redelivered_event_changes_nothing_twice(make_store: StoreFactory) -> None:
    """The same message again (same position) changes nothing; another message with the same
    event is one duplicate at most, never a new step."""
    correlator = Correlator(example())
    store = make_store()
    placed = event("order.placed")
    for position in ("t/0/1", "t/0/1", "t/0/2", "t/0/3", "t/0/2"):
        correlator.apply(store, placed, topic="orders", now=at(0), delivery=position)
    instance = store.instances()[0]
    assert (["duplicate"], 2) == ([a.kind for a in instance.anomalies], len(instance.timeline))


def test_alerts_wait_in_the_outbox_until_deleted(make_store: StoreFactory) -> None:
    """Alerts commit with the state and stay pending until the monitor published them."""
    correlator = Correlator(example())
    store = make_store()
    correlator.apply(store, event("order.placed"), topic="orders", now=at(0), watermark=at(0))
    failed = event("payment.failed", seconds=1)
    correlator.apply(store, failed, topic="p", now=at(1), watermark=at(1))
    pending = store.pending_alerts()
    assert ["saga.failed"] == [alert.type for _, alert in pending]
    store.delete_alerts([seq for seq, _ in pending])
    assert [] == make_store().pending_alerts()


def test_filters_counts_and_orphans(make_store: StoreFactory) -> None:
    """Instances filter by saga, state, time and id; counts group by saga and state."""
    correlator = Correlator(example())
    store = make_store()
    for item in (
        event("order.placed", "a"),
        event("order.placed", "b", seconds=50),
        event("payment.failed", "b", seconds=51),
        event("payment.authorized", "c", seconds=52),
    ):
        correlator.apply(store, item, topic="t", now=at(60))
    assert {("order-fulfilment", "running"): 1, ("order-fulfilment", "failed"): 1} == (
        store.counts()
    )
    assert ["b"] == [i.correlation_id for i in store.instances(state="failed")]
    assert ["b"] == [i.correlation_id for i in store.instances(since=at(40))]
    assert ["a"] == [i.correlation_id for i in store.instances(correlation_id="a")]
    assert [] == store.instances(saga="other")
    assert [("order-fulfilment", "c", "payment.authorized")] == [
        (saga, corr, obs.type) for saga, corr, obs in store.orphans()
    ]


def test_prune_removes_only_instances_finished_before_the_cutoff(make_store: StoreFactory) -> None:
    """Retention: finished instances older than the cutoff go, running ones stay."""
    correlator = Correlator(example())
    store = make_store()
    for item in (
        event("order.placed", "old"),
        event("payment.failed", "old", seconds=1),
        event("order.placed", "new", seconds=100),
        event("payment.failed", "new", seconds=101),
        event("order.placed", "running"),
    ):
        correlator.apply(store, item, topic="t", now=at(200))
    assert 1 == store.prune(at(50))
    assert {"new", "running"} == {i.correlation_id for i in store.instances()}


@pytest.mark.parametrize("memory", [False, True])
def test_a_clean_stop_is_kept_until_the_monitor_records_again(
    make_store: StoreFactory, memory: bool
) -> None:
    """record_stopped marks a monitor stopped (the views say so, not "behind"); its next
    record clears it."""
    store = open_saga_store("memory://") if memory else make_store()
    store.record_monitor("ops", at(0), 0.0, at(1))
    store.record_stopped("ops", at(2))
    (stopped,) = store.monitors()
    assert (at(2), "monitor ops stopped 58s ago") == (stopped.stopped, stopped.behind(at(60)))
    store.record_monitor("ops", at(3), 0.0, at(4))
    assert [None] == [status.stopped for status in store.monitors()]


def test_a_new_sqlite_store_reads_no_rows_for_its_new_instances(tmp_path: Path) -> None:
    """A store opened on an empty table holds the whole table in memory (a catch-up into it
    reads nothing for its new sagas); one opened on rows it has not read does not."""
    url = f"sqlite:///{tmp_path}/sagas.db"
    correlator = Correlator(example())
    store = SqlSagaStore(url)
    correlator.apply(store, event("order.placed", "a"), topic="orders", now=at(1))
    assert (True, ["a"]) == (store.whole_table, [i.correlation_id for i in store.instances()])
    store.close()
    again = SqlSagaStore(url)
    correlator.apply(again, event("payment.authorized", "a", seconds=1), topic="p", now=at(2))
    assert (False, ["inventory.reserved"]) == (again.whole_table, again.instances()[0].expected)
    again.close()


def test_prune_keeps_the_cache_whole_and_forgets_what_it_deleted(tmp_path: Path) -> None:
    """After a prune the store still holds its whole table in memory, without the pruned
    instances: a pruned saga's correlation id seen again starts a new instance."""
    correlator = Correlator(example())
    store = SqlSagaStore(f"sqlite:///{tmp_path}/sagas.db")
    for item in (
        event("order.placed", "old"),
        event("payment.failed", "old", seconds=1),
        event("order.placed", "running"),
    ):
        correlator.apply(store, item, topic="t", now=at(200))
    assert 1 == store.prune(at(50))
    correlator.apply(store, event("order.placed", "old", seconds=300), topic="t", now=at(300))
    states = {i.correlation_id: i.state for i in store.instances()}
    assert (True, {"old": "running", "running": "running"}) == (store.whole_table, states)
    store.close()


def test_unknown_store_url_is_one_clear_error() -> None:
    """A scheme no store serves is a usage error that says which URLs work."""
    with pytest.raises(SagaConfigError, match=r"use sqlite:///path/sagas\.db"):
        open_saga_store("redis://localhost")


@pytest.mark.postgres
def test_unreachable_postgres_names_the_url_with_password_masked() -> None:
    """A PostgreSQL store that cannot connect fails with one line and no password."""
    with pytest.raises(SagaStoreError) as caught:
        open_saga_store("postgresql://postgres:secret@127.0.0.1:1/test")
    assert "postgres:***@127.0.0.1:1" in str(caught.value)
    assert "secret" not in str(caught.value)
