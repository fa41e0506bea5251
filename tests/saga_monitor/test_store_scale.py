"""The saga store at a stream's size: the console's questions read indexes (their SQLite query
plans, by EXPLAIN), and a payload search that matches many instances stops counting at
:data:`~saga_monitor.queries.COUNTED` with the same pages on every store."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from pathlib import Path

import pytest

from saga_monitor import Correlator, SagaStore
from saga_monitor.correlator import Received
from saga_monitor.model import MAX_DATA_CHARS
from saga_monitor.queries import COUNTED, DataField, Note, Page, Query
from saga_monitor.store import MemoryStore
from saga_monitor.store_sql import SqlSagaStore
from tests.saga_monitor.helpers import at, event, example
from tests.saga_monitor.test_store import StoreFactory, make_store  # noqa: F401


def _fill(store: SagaStore, count: int) -> None:
    """``count`` orders, applied in batches: the odd ones paid (every 7th twice: a duplicate
    anomaly), every one stuck by the watermark at ``count + 500`` s; ``region`` eu on the even
    ones, a ``customer`` of its own each; the first one acknowledged."""
    correlator = Correlator(example())
    items: list[Received] = []
    for n in range(count):
        corr = f"order-{n:05d}"
        data = {"customer": f"customer-{n}", "region": "eu" if n % 2 == 0 else "us"}
        items.append(Received(event("order.placed", corr, n, data=data), "o"))
        if n % 2:
            paid = event("payment.authorized", corr, n + 1, source="payment-service")
            items.append(Received(paid, "p"))
            if n % 7 == 1:
                items.append(Received(paid, "p", "p/0/9"))
    for start in range(0, len(items), 500):  # an advisory lock per instance in PostgreSQL
        correlator.apply_many(store, items[start : start + 500], now=at(count + 2))
    correlator.tick(store, at(count + 500))
    store.add_note(Note("order-fulfilment", "order-00000", "ack", "ops", at(count), ""))


def _plans(store: SqlSagaStore, ask: list[object]) -> dict[str, list[str]]:
    """Each SELECT the store ran for ``ask`` (calls made here) with its query plan."""
    conn: sqlite3.Connection = store._db._connection()
    ran: list[str] = []
    conn.set_trace_callback(ran.append)
    try:
        for call in ask:
            assert callable(call)
            call()
    finally:
        conn.set_trace_callback(None)
    return {
        sql: [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
        for sql in ran
        if sql.lstrip().upper().startswith(("SELECT", "DELETE FROM SAGA_INSTANCES"))
    }


def _full_scans(plan: list[str]) -> list[str]:
    """The steps of ``plan`` that read the whole instances table row by row."""
    return [step for step in plan if re.fullmatch(r"SCAN (saga_instances|i)", step)]


def test_the_console_and_the_metrics_read_indexes(tmp_path: Path) -> None:
    """The list by state, by anomaly, a page deep in it, the counts and the oldest stuck
    instance: none reads every row of the instances table (SQLite's plans)."""
    store = SqlSagaStore(f"sqlite:///{tmp_path}/sagas.db")
    _fill(store, 50)
    asked = {
        "state": lambda: store.search(Query(state="stuck", offset=5)),
        "anomaly": lambda: store.search(Query(anomaly="duplicate")),
        "deep page": lambda: store.search(Query(offset=40, limit=5)),
        "counts": store.counts,
        "oldest stuck": store.oldest_stuck,
        "prune": lambda: store.prune(at(-86_400), stuck_before=at(-86_400)),
    }
    used: dict[str, str] = {}
    for name, call in asked.items():
        for sql, plan in _plans(store, [call]).items():
            assert not _full_scans(plan), (name, sql, plan)
            used[name] = used.get(name, "") + " | ".join(plan) + " | "
    assert "saga_instances_state" in used["state"]
    assert "saga_instances_anomalous" in used["anomaly"]
    assert "COVERING INDEX saga_instances_listed" in used["deep page"]
    assert "COVERING INDEX saga_instances_counts" in used["counts"]
    assert "saga_instances_state" in used["oldest stuck"]
    assert "saga_instances_finished" in used["prune"]
    store.close()


def _ids(page: Page) -> list[str]:
    return [i.correlation_id for i in page.items]


def test_a_payload_search_counts_up_to_a_bound_with_the_same_pages(
    make_store: StoreFactory,  # noqa: F811
) -> None:
    """A field half the instances hold: the total stops at COUNTED ("10000+"), the pages
    (the first, one across the bound) are the memory store's; a rarer field and a field
    nobody holds count exactly."""
    count = 2 * COUNTED + 1000
    memory = MemoryStore()
    store = make_store()
    for filled in (memory, store):
        _fill(filled, count)
    newest_even = [f"order-{n:05d}" for n in range(count - 2, -1, -2)]
    eu = DataField(("region",), "eu")
    for query, expected in (
        (Query(data=eu), newest_even[:200]),
        (Query(data=eu, offset=COUNTED - 50, limit=100), newest_even[COUNTED - 50 : COUNTED + 50]),
    ):
        pages = [s.search(query) for s in (memory, store)]
        assert [expected, expected] == [_ids(p) for p in pages]
        wanted = max(COUNTED, query.offset + query.limit)
        assert [(wanted, True), (wanted, True)] == [(p.total, p.more) for p in pages]
        assert f"{wanted}+" == pages[1].total_text()
    for field, total in ((DataField(("customer",), "customer-1"), 1), (DataField(("x",), "y"), 0)):
        pages = [s.search(Query(data=field)) for s in (memory, store)]
        assert [(total, False)] * 2 == [(p.total, p.more) for p in pages]
        assert _ids(pages[0]) == _ids(pages[1])
    stuck_eu = [s.search(Query(data=eu, state="stuck", limit=10)) for s in (memory, store)]
    assert _ids(stuck_eu[0]) == _ids(stuck_eu[1])
    assert (stuck_eu[0].total, stuck_eu[0].more) == (stuck_eu[1].total, stuck_eu[1].more)


@pytest.mark.parametrize("offset", [0, 7, 95])
def test_pages_deep_in_the_list_are_the_memory_stores(
    make_store: StoreFactory,  # noqa: F811
    offset: int,
) -> None:
    """Read by keys from the index, a page at any offset and filter is the memory store's."""
    memory = MemoryStore()
    store = make_store()
    for filled in (memory, store):
        _fill(filled, 100)
    for query in (
        Query(offset=offset, limit=10),
        Query(state="stuck", offset=offset, limit=10),
        Query(anomaly="duplicate", offset=offset // 10, limit=3),
        Query(acknowledged=False, offset=offset, limit=10),
    ):
        pages = [s.search(query) for s in (memory, store)]
        assert _ids(pages[0]) == _ids(pages[1]), query
        assert pages[0].total == pages[1].total, query


def test_a_search_decodes_an_instance_again_only_once_it_changed(
    make_store: StoreFactory,  # noqa: F811
) -> None:
    """The board's sample every few seconds: an unchanged instance is the one decoded before;
    one that changed (a step, a verdict) is read anew."""
    store = make_store()
    correlator = Correlator(example())
    correlator.apply(store, event("order.placed", "o-1", 0), topic="o", now=at(0))
    correlator.apply(store, event("order.placed", "o-2", 1), topic="o", now=at(1))
    first = {i.correlation_id: i for i in store.search(Query()).items}
    correlator.apply(store, event("payment.authorized", "o-2", 2), topic="p", now=at(2))
    again = {i.correlation_id: i for i in store.search(Query()).items}
    assert again["o-1"] is first["o-1"]
    assert [1, 2] == [len(again[c].timeline) for c in ("o-1", "o-2")]
    correlator.tick(store, at(10_000))
    assert {"stuck"} == {i.state for i in store.search(Query()).items}


def test_the_console_and_the_api_say_a_payload_total_is_a_lower_bound() -> None:
    """``10000+`` in the console's pager, ``X-Total-Is-Lower-Bound`` beside the count."""
    from fastapi.testclient import TestClient

    from saga_monitor.web import create_app

    store = MemoryStore()
    _fill(store, 2 * COUNTED + 1000)
    client = TestClient(create_app(store))
    listed = client.get("/api/instances", params={"q": "data.region=eu", "limit": 5})
    assert (str(COUNTED), "true") == (
        listed.headers["X-Total-Count"],
        listed.headers["X-Total-Is-Lower-Bound"],
    )
    page = client.get("/", params={"q": "data.region=eu", "refresh": 0}).text
    assert f'1-200 of <b class="total">{COUNTED}+</b>' in page
    exact = client.get("/api/instances", params={"q": "data.customer=customer-1"})
    assert ("1", None) == (
        exact.headers["X-Total-Count"],
        exact.headers.get("X-Total-Is-Lower-Bound"),
    )


def test_a_page_not_counted_is_the_counted_one(make_store: StoreFactory) -> None:  # noqa: F811
    """The board's sample asks for pages without their totals: the same instances, and a
    total that says how far the page reaches (``more`` while the page is full)."""
    memory = MemoryStore()
    store = make_store()
    for filled in (memory, store):
        _fill(filled, 30)
    for query in (Query(limit=10, offset=5), Query(state="stuck", limit=50)):
        counted = [s.search(query) for s in (memory, store)]
        bare = store.search(dataclasses.replace(query, counted=False))
        assert _ids(counted[0]) == _ids(counted[1]) == _ids(bare)
        full = len(bare.items) == query.limit
        assert (query.offset + len(bare.items), full) == (bare.total, bare.more)
    assert 30 == store.search(Query(state="stuck", limit=50)).total


def test_causes_of_more_instances_than_one_query_asks_for(
    make_store: StoreFactory,  # noqa: F811
) -> None:
    """Notes and causes are read a thousand instances a query: asked for 2,500, the three
    recorded ones come back, each with its own."""
    store = make_store()
    _fill(store, 3)
    wanted = [("order-fulfilment", f"order-{n:05d}") for n in range(2499)]
    wanted.append(("order-fulfilment", 'order-\U0001f680 "é"\n'))  # JSON escapes, as text
    for key in (wanted[0], wanted[1500], wanted[2499]):
        store.record_cause(*key, {"text": key[1]})
    assert {k: {"text": k[1]} for k in (wanted[0], wanted[1500], wanted[2499])} == store.causes(
        wanted
    )
    assert [("order-fulfilment", "order-00000")] == list(store.notes(wanted))


def test_the_decoded_instances_are_bounded_by_their_size(
    make_store: StoreFactory,  # noqa: F811
) -> None:
    """Instances whose documents are large (a hundred events of 4 kB data each) are kept
    decoded only as far as the cache's bytes go (64 MB, reckoned at three bytes a character:
    about 50 of these): a search of sixty of them twice decodes most again, while the ten
    most recent, asked twice, are the objects decoded before; a page larger than the cache
    is decoded without evicting them."""
    store = make_store()
    correlator = Correlator(example())
    payload = {"blob": "x" * (MAX_DATA_CHARS - 100)}
    items = [
        Received(event("order.placed", f"o-{n:02d}", n, id_=f"{n}-{k}", data=payload), "o")
        for n in range(60)
        for k in range(100)
    ]
    for start in range(0, len(items), 500):
        correlator.apply_many(store, items[start : start + 500], now=at(60))
    first, again = (store.search(Query(limit=60)).items for _ in range(2))
    assert 50 >= sum(a is b for a, b in zip(first, again, strict=True))
    recent = store.search(Query(limit=10)).items
    store.search(Query(limit=20_001))
    assert all(a is b for a, b in zip(recent, store.search(Query(limit=10)).items, strict=True))


def test_the_console_takes_its_totals_from_the_counts_it_read(
    make_store: StoreFactory,  # noqa: F811
) -> None:
    """The console's list, whole or by saga and state, says the total the store counts (read
    from the counts beside it), and a filter the counts cannot tell is counted by the store."""
    from fastapi.testclient import TestClient

    from saga_monitor.web import create_app

    store = make_store()
    _fill(store, 30)
    client = TestClient(create_app(store))
    for params, query in (
        ({}, Query()),
        ({"state": "stuck", "saga": "order-fulfilment"}, Query(state="stuck")),
        ({"state": "completed"}, Query(state="completed")),
        ({"saga": "nothing"}, Query(saga="nothing")),
        ({"anomaly": "duplicate"}, Query(anomaly="duplicate")),
    ):
        total = store.search(query).total
        parts = client.get("/partials/console", params={**params, "limit": 5}).json()
        assert f'of <b class="total">{total}</b>' in parts["list"], params
        assert str(total) == client.get("/api/instances", params=params).headers["X-Total-Count"]


def test_the_graphs_sample_read_a_page_at_a_time_is_the_whole_one(
    make_store: StoreFactory,  # noqa: F811
) -> None:
    """The ``/sagas`` graphs count their sample a page at a time: the same instances, in the
    same order, as the sample read in one query per state."""
    from saga_monitor.board import sample, sampled

    store = make_store()
    _fill(store, 30)
    whole = [(i.saga, i.correlation_id) for i in sample(store, 25)]
    paged = [(i.saga, i.correlation_id) for i in sampled(store, 25, 4)]
    assert 25 == len(whole)
    assert whole == paged
