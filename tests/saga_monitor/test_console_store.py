"""The console's store queries on SQLite and PostgreSQL: prefix and payload search, filters by
anomaly and awaited event, paging with totals, operators' notes, causes, retention."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.sqlstore import SqlStore
from saga_monitor import Correlator, InstanceNotFoundError, SagaStore, SagaStoreError
from saga_monitor.board import Owners, listed
from saga_monitor.model import Instance
from saga_monitor.queries import ACK, NOTE, DataField, Note, Query, parse_search
from saga_monitor.store import MemoryStore
from saga_monitor.store_sql import MIGRATIONS, SqlSagaStore
from tests.saga_monitor.helpers import at, event, example
from tests.saga_monitor.test_store import PG_URL, StoreFactory, make_store  # noqa: F401


def _orders(store: SagaStore, count: int = 12) -> None:
    """``count`` orders: order-00..; customer-(n % 3); every 4th paid twice (a duplicate);
    stuck on inventory after payment, or on payment, by the watermark at 200 s."""
    correlator = Correlator(example())
    for n in range(count):
        corr = f"order-{n:02d}"
        data = {"customer": f"customer-{n % 3}", "amount": n, "promo": n == 5}
        correlator.apply(store, event("order.placed", corr, n, data=data), topic="o", now=at(n))
        if n % 2:
            paid = event("payment.authorized", corr, n + 1, source="payment-service")
            correlator.apply(store, paid, topic="p", now=at(n + 1))
            if n % 4 == 1:
                again = event("payment.authorized", corr, n + 1, id_=paid.id, source=paid.source)
                correlator.apply(store, again, topic="p", now=at(n + 1), delivery="p/0/99")
    correlator.tick(store, at(200))


@pytest.fixture(params=["memory", "sql"])
def filled(request: pytest.FixtureRequest, make_store: StoreFactory) -> SagaStore:  # noqa: F811
    """Twelve orders in a memory store, or in SQLite and PostgreSQL."""
    store: SagaStore = MemoryStore() if request.param == "memory" else make_store()
    _orders(store)
    return store


def _ids(store: SagaStore, **query: object) -> list[str]:
    page = store.search(Query(**query, limit=100))  # type: ignore[arg-type]
    return sorted(i.correlation_id for i in page.items)


def test_search_by_prefix_and_payload_field(filled: SagaStore) -> None:
    """A correlation-id prefix and a data field each narrow the list, numbers included."""
    assert [f"order-{n:02d}" for n in range(10, 12)] == _ids(filled, correlation_prefix="order-1")
    prefix, field = parse_search("data.customer=customer-1")
    assert (None, DataField(("customer",), "customer-1")) == (prefix, field)
    assert ["order-01", "order-04", "order-07", "order-10"] == _ids(filled, data=field)
    assert ["order-10"] == _ids(filled, data=DataField(("amount",), "10"))
    assert ["order-05"] == _ids(filled, data=DataField(("promo",), "true"))
    assert [] == _ids(filled, data=DataField(("customer",), "customer-%"))


def test_filters_by_anomaly_and_awaited_event(filled: SagaStore) -> None:
    """Anomaly kinds and awaited event types filter in the store."""
    assert ["order-01", "order-05", "order-09"] == _ids(filled, anomaly="duplicate")
    waiting_inventory = _ids(filled, awaiting=("inventory.reserved",))
    assert [f"order-{n:02d}" for n in range(1, 12, 2)] == waiting_inventory
    assert 6 == len(_ids(filled, awaiting=("payment.authorized",)))


def test_pages_have_totals_and_honour_the_offset(filled: SagaStore) -> None:
    """Paging walks every instance once, newest first, and says how many match in all."""
    pages = [filled.search(Query(limit=5, offset=offset)) for offset in (0, 5, 10, 15)]
    assert [12, 12, 12, 12] == [p.total for p in pages]
    assert [5, 5, 2, 0] == [len(p.items) for p in pages]
    walked = [i.correlation_id for p in pages for i in p.items]
    whole = [i.correlation_id for i in filled.search(Query(limit=100)).items]
    assert (whole, 12) == (walked, len(set(walked)))
    searched = filled.search(Query(data=DataField(("customer",), "customer-0"), limit=2, offset=2))
    assert (4, ["order-03", "order-00"]) == (
        searched.total,
        [i.correlation_id for i in searched.items],
    )


def test_notes_are_kept_and_filter_acknowledged_instances(filled: SagaStore) -> None:
    """An acknowledgement and a note are kept with who and when; acknowledged filters."""
    filled.add_note(Note("order-fulfilment", "order-03", ACK, "ana", at(300), "vendor issue"))
    filled.add_note(Note("order-fulfilment", "order-03", NOTE, "bo", at(301), "called them"))
    notes = filled.notes([("order-fulfilment", "order-03"), ("order-fulfilment", "order-04")])
    assert [("ack", "ana", at(300), "vendor issue"), ("note", "bo", at(301), "called them")] == [
        (n.kind, n.who, n.at, n.text) for n in notes[("order-fulfilment", "order-03")]
    ]
    assert ["order-03"] == _ids(filled, acknowledged=True)
    assert 11 == len(_ids(filled, acknowledged=False))
    with pytest.raises(InstanceNotFoundError):
        filled.add_note(Note("order-fulfilment", "nope", ACK, "ana", at(300), ""))


def test_oldest_stuck_leaves_out_acknowledged_instances(filled: SagaStore) -> None:
    """The oldest-stuck moment per saga is that of the oldest stuck instance nobody
    acknowledged (a note is no acknowledgement); none when all are acknowledged."""
    stuck = sorted(
        (i.stuck_since, i.correlation_id)
        for i in filled.search(Query(limit=100)).items
        if i.state == "stuck" and i.stuck_since
    )
    first = stuck[0][1]
    assert stuck[0][0] < stuck[1][0]
    filled.add_note(Note("order-fulfilment", first, NOTE, "bo", at(300), "looking"))
    assert {"order-fulfilment": stuck[0][0]} == filled.oldest_stuck()
    filled.add_note(Note("order-fulfilment", first, ACK, "ana", at(301), "vendor issue"))
    assert {"order-fulfilment": stuck[1][0]} == filled.oldest_stuck()
    for _, corr in stuck[1:]:
        filled.add_note(Note("order-fulfilment", corr, ACK, "ana", at(302), "vendor issue"))
    assert ({}, len(stuck)) == (
        filled.oldest_stuck(),
        filled.counts()[("order-fulfilment", "stuck")],
    )


def test_an_acknowledgement_holds_for_its_stuck_episode_only(filled: SagaStore) -> None:
    """An instance acknowledged while stuck on payment that then moves on and gets stuck on
    inventory is unacknowledged again: it alerts, pages (oldest stuck), lists as not
    acknowledged and is not pruned as acknowledged; the old acknowledgement stays a note."""
    key = ("order-fulfilment", "order-02")  # stuck on payment since 32 s
    kept = filled.add_note(Note(*key, ACK, "ana", at(300), "PSP outage"))
    for corr in _ids(filled, state="stuck", acknowledged=False):  # the others too
        filled.add_note(Note("order-fulfilment", corr, ACK, "ana", at(300), "known"))
    assert (at(32), [], {}) == (
        kept.episode,
        _ids(filled, state="stuck", acknowledged=False),
        filled.oldest_stuck(),
    )
    correlator = Correlator(example())
    paid = event("payment.authorized", "order-02", 40, source="payment-service")
    correlator.apply(filled, paid, topic="p", now=at(301), watermark=at(300))
    assert ["order-02"] == _ids(filled, acknowledged=False, correlation_prefix="order-02")
    correlator.tick(filled, at(400))  # inventory was due at 70 s
    (again,) = filled.search(Query(correlation_prefix="order-02")).items
    stuck_alerts = [
        alert
        for _, alert in filled.pending_alerts(limit=1000)
        if alert.type == "saga.stuck" and alert.correlation_id == "order-02"
    ]
    assert ("stuck", at(70), 2) == (again.state, again.stuck_since, len(stuck_alerts))
    assert ["order-02"] == _ids(filled, acknowledged=False, correlation_prefix="order-02")
    assert {"order-fulfilment": at(70)} == filled.oldest_stuck()
    (row,) = listed(filled, [again], Owners({}, {}))
    assert (None, ["PSP outage"]) == (row["acknowledged"], [n["note"] for n in row["notes"]])
    assert (11, ["order-02"]) == (filled.prune(at(0), acknowledged_before=at(1000)), _ids(filled))
    filled.add_note(Note(*key, ACK, "bo", at(401), "inventory paged"))
    assert ["order-02"] == _ids(filled, acknowledged=True, correlation_prefix="order-02")


def test_causes_are_recorded_and_forgotten(filled: SagaStore) -> None:
    """What explains a wait is kept per instance until it is forgotten."""
    key = ("order-fulfilment", "order-02")
    filled.record_cause(*key, {"text": "in orders.dlq"})
    filled.record_cause(*key, {"text": "in orders.dlq, again"})
    assert {key: {"text": "in orders.dlq, again"}} == filled.causes([key])
    filled.record_cause(*key, None)
    assert {} == filled.causes([key])


def test_retention_of_acknowledged_and_stuck_instances(filled: SagaStore) -> None:
    """Acknowledged instances go a while after their acknowledgement, stuck ones a while after
    they got stuck, each only when asked; their notes go with them."""
    filled.add_note(Note("order-fulfilment", "order-03", ACK, "ana", at(300), ""))
    assert 0 == filled.prune(at(0))
    assert 1 == filled.prune(at(0), acknowledged_before=at(301))
    assert {} == filled.notes([("order-fulfilment", "order-03")])
    stuck = {i.correlation_id: i.stuck_since for i in filled.search(Query(limit=100)).items}
    assert all(stuck.values())
    early = sorted(c for c, since in stuck.items() if since and since < at(36))
    assert len(early) == filled.prune(at(0), stuck_before=at(36))
    assert not set(early) & set(_ids(filled))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty SQLite file or PostgreSQL schema (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/old.db"
        return
    url = f"{PG_URL}?schema=saga_old_{uuid.uuid4().hex[:12]}"
    yield url
    cleaner = SqlSagaStore(url)
    cleaner.drop_schema()
    cleaner.close()


def _old_store(url: str, layout: int, instance: Instance) -> SqlStore:
    """A store of an earlier ``layout`` at ``url`` holding ``instance`` (with its
    ``stuck_since`` column from layout 3 on)."""
    old = SqlStore(url, what="saga store", hint="", error=SagaStoreError, schema="public")
    old.open("saga_", MIGRATIONS[:layout])
    columns = ["saga", "correlation_id", "state", "started", "updated", "doc"]
    values = [
        instance.saga,
        instance.correlation_id,
        instance.state,
        instance.started.timestamp(),
        instance.updated.timestamp(),
        instance.to_json(),
    ]
    if layout >= 3 and instance.stuck_since is not None:
        columns.append("stuck_since")
        values.append(instance.stuck_since.timestamp())
    marks = ", ".join("?" * len(values))
    old.execute(f"INSERT INTO {{p}}instances ({', '.join(columns)}) VALUES ({marks})", *values)
    return old


def test_a_store_of_layout_2_is_migrated_and_keeps_its_instances(fresh_url: str) -> None:
    """A store written before the console's columns existed (layout 2) opens, gets them, and
    still lists its instances; an instance shows in the new filters once it changes again."""
    memory = MemoryStore()
    correlator = Correlator(example())
    placed = event("order.placed", "o-1", 0)
    correlator.apply(memory, placed, topic="o", now=at(0), delivery="o/0/1")
    (instance,) = memory.data.values()
    _old_store(fresh_url, 2, instance).close()
    store = SqlSagaStore(fresh_url)
    assert (1, 0) == (
        store.search(Query(correlation_prefix="o-")).total,
        store.search(Query(awaiting=("payment.authorized",))).total,
    )
    correlator.apply(store, placed, topic="o", now=at(1), delivery="o/0/2")  # a second copy
    assert (1, 1) == (
        store.search(Query(awaiting=("payment.authorized",))).total,
        store.search(Query(anomaly="duplicate")).total,
    )
    store.close()


def _page_size(path: Path, *, make: bool = False) -> int:
    """The page size of the SQLite file at ``path`` (``make``: a new file with a table, made
    with SQLite's default page size)."""
    with sqlite3.connect(path) as conn:
        if make:
            conn.execute("CREATE TABLE t (x)")
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    return int(size)


def test_a_new_sqlite_store_has_8_kb_pages_and_an_older_file_keeps_its_own(
    tmp_path: Path,
) -> None:
    """A new file gets pages that hold several instance documents (an instance of a few KB
    filled a 4 KB page alone); a file made with SQLite's default pages keeps them, its
    instances, and takes new ones."""
    memory = MemoryStore()
    correlator = Correlator(example())
    correlator.apply(memory, event("order.placed", "o-1", 0), topic="o", now=at(0))
    (instance,) = memory.data.values()
    _old_store(f"sqlite:///{tmp_path}/old.db", 5, instance).close()
    new, old = (
        SqlSagaStore(f"sqlite:///{tmp_path}/new.db"),
        SqlSagaStore(f"sqlite:///{tmp_path}/old.db"),
    )
    for store in (new, old):
        correlator.apply(store, event("order.placed", "o-2", 1), topic="o", now=at(1))
    assert (["o-2"], ["o-1", "o-2"]) == (_ids(new), _ids(old))
    new.close()
    old.close()
    default = _page_size(tmp_path / "plain.db", make=True)  # 4096 as SQLite ships
    assert (8192, default) == (_page_size(tmp_path / "new.db"), _page_size(tmp_path / "old.db"))


def test_acknowledgements_of_layout_4_hold_for_the_episode_their_instance_is_in(
    fresh_url: str,
) -> None:
    """A store written before acknowledgements named their stuck episode (layout 4) keeps its
    stuck, acknowledged instance acknowledged: the old ack is taken to be for the episode the
    instance is in when the store is migrated."""
    memory = MemoryStore()
    correlator = Correlator(example())
    correlator.apply(memory, event("order.placed", "o-1", 0), topic="o", now=at(0))
    correlator.tick(memory, at(100))
    (instance,) = memory.data.values()
    assert instance.stuck_since is not None
    old = _old_store(fresh_url, 4, instance)
    old.execute(
        "INSERT INTO {p}notes (saga, correlation_id, kind, who, at, note) "
        "VALUES (?, ?, 'ack', 'ana', ?, 'known')",
        instance.saga,
        instance.correlation_id,
        at(200).timestamp(),
    )
    old.close()
    store = SqlSagaStore(fresh_url)
    assert (1, {}) == (store.search(Query(acknowledged=True)).total, store.oldest_stuck())
    store.close()
