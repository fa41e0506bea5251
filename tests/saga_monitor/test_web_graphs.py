"""The step graphs' counts (``/sagas`` and ``/api/definitions``) on memory, SQLite and
PostgreSQL stores: each saga counts its own instances, both agree with the sample's count
(:func:`~saga_monitor.web.graph_counts`), and the counts are kept until the store changes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from saga_monitor import Correlator, SagaStore, load_definitions, web
from saga_monitor.board import sampled
from saga_monitor.definitions import SagaDefinition
from saga_monitor.store import MemoryStore
from saga_monitor.web import create_app, step_counts
from tests.saga_monitor.helpers import at, event
from tests.saga_monitor.test_store import PG_URL, StoreFactory, make_store  # noqa: F401

#: Two sagas that share an event type (payment.authorized): each graph counts its own.
TWO = """\
topics: [orders, refills]
sagas:
  - name: orders
    start: [order.placed]
    steps:
      - {event: payment.authorized, within: 30s}
      - {event: order.shipped, within: 60s}
    complete: [order.shipped]
  - name: refills
    start: [refill.requested]
    steps:
      - {event: payment.authorized, within: 30s}
    complete: [payment.authorized]
"""


def _fill(store: SagaStore, definitions_path: Path, orders: int = 9, refills: int = 5) -> None:
    """Orders placed, every other one paid, every third of those shipped; refills requested,
    every other one paid; the others stuck by the watermark at 500 s."""
    correlator = Correlator(load_definitions(definitions_path))
    runs = [
        (f"order-{n}", n, "orders", ["order.placed", "payment.authorized", "order.shipped"])
        for n in range(orders)
    ] + [
        (f"refill-{n}", n, "refills", ["refill.requested", "payment.authorized"])
        for n in range(refills)
    ]
    for corr, n, topic, types in runs:
        steps = 1 if n % 2 == 0 else 3 if topic == "orders" and n % 3 == 1 else 2
        for offset, type_ in enumerate(types[:steps]):
            item = event(type_, corr, n + offset)
            correlator.apply(store, item, topic=topic, now=at(n + offset))
    correlator.tick(store, at(500))


@pytest.fixture
def two(tmp_path: Path) -> Path:
    path = tmp_path / "two.yaml"
    path.write_text(TWO)
    return path


@pytest.fixture(params=["memory", "sql"])
def filled(request: pytest.FixtureRequest, make_store: StoreFactory, two: Path) -> SagaStore:  # noqa: F811
    """The two sagas' instances in a memory store, or in SQLite and PostgreSQL."""
    store: SagaStore = MemoryStore() if request.param == "memory" else make_store()
    _fill(store, two)
    return store


def _reference(
    store: SagaStore, sagas: tuple[SagaDefinition, ...]
) -> list[dict[str, dict[str, int]]]:
    """The counts as computed before (main): the sample's instances decoded whole, a page at
    a time, each saga counting its own."""
    sample = list(sampled(store, web.GRAPH_SAMPLE, 5000))
    return [step_counts(d, [i for i in sample if i.saga == d.name]) for d in sagas]


def _drawn(page: str) -> list[tuple[str, int, int, int]]:
    """The graphs' counts as ``/sagas`` draws them: (event, seen, waiting, stuck) per step."""
    steps = re.findall(
        r'data-event="([^"]+)">.*?(\d+) seen · (\d+) waiting(?:[^<]*<tspan[^>]*>(\d+) stuck)?',
        page,
        flags=re.S,
    )
    return [
        (name, int(seen), int(waiting), int(stuck or 0)) for name, seen, waiting, stuck in steps
    ]


def _expected(counts: list[dict[str, dict[str, int]]]) -> list[tuple[str, int, int, int]]:
    return [
        (name, c["done"], c["waiting"], c["stuck"])
        for per_saga in counts
        for name, c in per_saga.items()
    ]


def test_graphs_count_each_sagas_own_instances(filled: SagaStore, two: Path) -> None:
    """/api/definitions and /sagas give each step the count of the saga's own instances over
    the sample, as decoding the sample whole does; another saga's payment is not counted."""
    defined = load_definitions(two)
    client = TestClient(create_app(filled, definitions=defined))
    want = _reference(filled, defined.sagas)
    api = [d["counts"] for d in client.get("/api/definitions").json()]
    assert want == api
    orders, refills = want
    assert (4, 5, 2) == (
        orders["payment.authorized"]["done"],
        orders["payment.authorized"]["stuck"],
        refills["payment.authorized"]["done"],
    )
    assert {"order.placed", "payment.authorized", "order.shipped"} == set(orders)
    drawn = _drawn(client.get("/sagas").text)
    assert sorted(_expected(want)) == sorted(drawn)


def test_graphs_follow_the_store_once_their_time_is_up(
    filled: SagaStore, two: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counts are kept for GRAPH_TTL seconds; after it, a store that changed is counted
    again, one that did not is not."""
    calls: list[int] = []
    real = web.graph_counts

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(web, "graph_counts", counting)
    defined = load_definitions(two)
    client = TestClient(create_app(filled, definitions=defined))
    first = client.get("/api/definitions").json()
    correlator = Correlator(defined)
    shipped = event("order.shipped", "order-3", 600)
    correlator.apply(filled, shipped, topic="orders", now=at(600))
    assert first == client.get("/api/definitions").json()  # within GRAPH_TTL: kept
    assert 1 == len(calls)
    monkeypatch.setattr(web, "GRAPH_TTL", 0.0)
    moved = [d["counts"] for d in client.get("/api/definitions").json()]
    assert _reference(filled, defined.sagas) == moved
    assert first[0]["counts"] != moved[0]
    client.get("/sagas")
    client.get("/api/definitions")
    assert 2 == len(calls)  # the store did not change since
    refill = event("refill.requested", "refill-9", 700)
    correlator.apply(filled, refill, topic="refills", now=at(700))
    assert _reference(filled, defined.sagas) == [
        d["counts"] for d in client.get("/api/definitions").json()
    ]
    assert 3 == len(calls)


@pytest.mark.parametrize("sample", [1, 3, 4])
def test_a_small_sample_is_the_same_sample(
    filled: SagaStore, two: Path, sample: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With fewer instances sampled than there are (per state, then the most recent), the
    counts are still those of the instances the pages of the whole decode would give."""
    monkeypatch.setattr(web, "GRAPH_SAMPLE", sample)
    defined = load_definitions(two)
    for own in (True, False):
        want = _reference(filled, defined.sagas)
        if not own:
            every = list(sampled(filled, sample, 2))
            want = [step_counts(d, every) for d in defined.sagas]
        assert want == web.graph_counts(filled, defined.sagas, own=own)
