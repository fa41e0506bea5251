"""Verdicts do not depend on delivery order: for generated saga scripts with consistent event
times, every delivery order gives the states, anomalies, expectations and alerts of in-order
delivery by a caught-up monitor."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from broker import Event
from saga_monitor import Correlator, MemoryStore
from saga_monitor.correlator import Received
from saga_monitor.model import Instance
from saga_monitor.watermark import SourceClocks
from tests.saga_monitor.helpers import at, event, example

DEFINITIONS = example()
SAGA = DEFINITIONS.sagas[0]
#: Every type the example saga knows, and one it does not.
UNKNOWN = "payment.disputed"
VOCABULARY = [*sorted(SAGA.event_types() - set(SAGA.start)), UNKNOWN]
START = SAGA.start[0]
THE_END = at(1_000_000)


@st.composite
def scripts(draw: st.DrawFn, *, slow_clocks: bool = False) -> list[Event]:
    """One instance's events: a start and up to 10 others (any type, maybe a duplicate, maybe
    caused by another one), each at its own time within ten minutes, so deadlines of 30 s and
    5 min pass or not. An effect is stamped after its cause, unless ``slow_clocks``."""
    others = draw(st.lists(st.sampled_from(VOCABULARY), max_size=10))
    times = draw(st.lists(st.integers(0, 600), min_size=len(others) + 1, unique=True))
    events = [event(START, seconds=times[0], source="shop", id_="start")]
    for n, (type_, seconds) in enumerate(zip(others, times[1:], strict=False)):
        causes = [  # a saga event; a slow clock may stamp its effect before it
            e.id
            for e in events
            if e.type != UNKNOWN and (slow_clocks or (e.time or THE_END) < at(seconds))
        ]
        cause = draw(st.sampled_from([None, *causes]))
        links = {"causationid": cause} if cause else {}
        events.append(event(type_, seconds=seconds, source=f"svc{n % 3}", id_=f"e{n}", **links))
    if draw(st.booleans()):
        events.append(draw(st.sampled_from(events)))  # the same event published twice
    return events


def verdicts(store: MemoryStore) -> list[dict[str, Any]]:
    """What must not depend on delivery order: each instance's judged document, without the
    per-delivery facts (arrival times, broker positions, when it was last judged, traffic of no
    saga set aside)."""
    out = []
    for instance in sorted(store.data.values(), key=lambda i: i.correlation_id):
        doc = instance.to_dict()
        for entry in doc["timeline"]:
            entry.pop("arrived"), entry.pop("delivery")
        doc.pop("seen"), doc.pop("judged"), doc.pop("foreign")
        doc["alerted"] = sorted(doc["alerted"])  # the same alerts, released in another order
        out.append(doc)
    return out


def happened(events: list[Event]) -> dict[str, datetime]:
    """When each event really happened: its time, or just after its cause (a producer whose
    clock runs behind stamps an event before the event that caused it)."""
    by_id = {e.id: e for e in events}
    out: dict[str, datetime] = {}
    for item in events:
        chain = [item]
        cause = by_id.get(item.causationid or "")
        while cause is not None and cause not in chain:
            chain.append(cause)
            cause = by_id.get(cause.causationid or "")
        at = chain[-1].time or THE_END
        for link in reversed(chain[:-1]):
            at = max(link.time or THE_END, at + timedelta(microseconds=1))
        out[item.id] = at
    return out


def in_order_live(events: list[Event]) -> tuple[list[dict[str, Any]], set[str]]:
    """A caught-up monitor: events arrive in the order they happened, and the watermark
    follows them (see :func:`scrambled_live`)."""
    when = happened(events)
    order = sorted(range(len(events)), key=lambda n: when[events[n].id])
    return scrambled_live(events, order)


def scrambled(events: list[Event], order: list[int]) -> tuple[list[dict[str, Any]], set[str]]:
    """A monitor reading a backlog in some other order: it holds its verdicts (no watermark)
    until it has read everything."""
    store, correlator = MemoryStore(), Correlator(DEFINITIONS)
    alerts: set[str] = set()
    for n in order:
        outcome = correlator.apply(store, events[n], topic="t", now=at(n), delivery=f"p{n}")
        alerts |= {a.event_id for a in outcome.alerts}
    alerts |= {a.event_id for a in correlator.tick(store, THE_END).alerts}
    return verdicts(store), alerts


def reloaded(events: list[Event], order: list[int]) -> tuple[list[dict[str, Any]], set[str]]:
    """:func:`scrambled_live` with every instance read back from its stored document after each
    event, as a store shared by several monitors does (no pass is carried on from memory)."""
    return scrambled_live(events, order, reload=True)


def scrambled_live(
    events: list[Event], order: list[int], *, reload: bool = False
) -> tuple[list[dict[str, Any]], set[str]]:
    """A live monitor with deliveries in some other order: after each one its watermark is just
    below the earliest event it has not received yet (what a correct watermark knows)."""
    store, correlator = MemoryStore(), Correlator(DEFINITIONS)
    alerts: set[str] = set()
    when = happened(events)
    for position, n in enumerate(order):
        rest = [when[events[m].id] for m in order[position + 1 :]]
        watermark = min(rest) - timedelta(microseconds=1) if rest else THE_END
        outcome = correlator.apply(
            store, events[n], topic="t", now=at(n), watermark=watermark, delivery=f"p{n}"
        )
        alerts |= {a.event_id for a in outcome.alerts}
        alerts |= {a.event_id for a in correlator.tick(store, watermark).alerts}
        if reload:
            store.data = {key: Instance.from_dict(i.to_dict()) for key, i in store.data.items()}
    return verdicts(store), alerts


def batched_live(
    events: list[Event], order: list[int], cuts: list[int]
) -> tuple[list[dict[str, Any]], set[str]]:
    """:func:`scrambled_live` with the deliveries applied in batches (``apply_many``, as the
    monitor's batch handler does: each instance judged once per batch), cut at ``cuts``. A
    batch is applied with the watermark of before it (just below the earliest event not
    applied yet: the batch's own are not acknowledged), then the tick after it moves the
    watermark to just below the earliest event not received by its end."""
    store, correlator = MemoryStore(), Correlator(DEFINITIONS)
    alerts: set[str] = set()
    when = happened(events)

    def below(rest: list[int]) -> datetime:
        return min(when[events[m].id] for m in rest) - timedelta(microseconds=1)

    bounds = [0, *sorted(set(cuts)), len(order)]
    for start, end in itertools.pairwise(bounds):
        if start == end:
            continue
        items = [Received(events[n], "t", f"p{n}") for n in order[start:end]]
        applied = correlator.apply_many(store, items, now=at(end), watermark=below(order[start:]))
        for outcome in applied:
            alerts |= {a.event_id for a in outcome.alerts}
        after = below(order[end:]) if end < len(order) else THE_END
        alerts |= {a.event_id for a in correlator.tick(store, after).alerts}
    return verdicts(store), alerts


@settings(max_examples=500, deadline=None, database=None, derandomize=True)
@given(data=st.data())
def test_every_delivery_order_gives_the_in_order_verdicts(data: st.DataObject) -> None:
    """States, anomalies, expected-next, timelines and alert ids are those of in-order delivery,
    whatever the delivery order of the same events: read as a backlog, or live with a correct
    watermark, carrying each instance's last pass on in memory or reading it back each time."""
    events = data.draw(scripts())
    order = data.draw(st.permutations(range(len(events))))
    expected = in_order_live(events)
    assert expected == scrambled(events, order)
    assert expected == scrambled_live(events, order)
    assert expected == reloaded(events, order)


@settings(max_examples=500, deadline=None, database=None, derandomize=True)
@given(data=st.data())
def test_batches_give_the_verdicts_of_event_by_event_delivery(data: st.DataObject) -> None:
    """Applied in batches of any size (several events of one instance recorded, then the
    instance judged once), the same events in any order give the in-order verdicts and
    alerts."""
    events = data.draw(scripts())
    order = data.draw(st.permutations(range(len(events))))
    cuts = data.draw(st.lists(st.integers(0, len(events)), max_size=4))
    assert in_order_live(events) == batched_live(events, order, cuts)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(data=st.data())
def test_slow_producer_clocks_do_not_make_verdicts_depend_on_delivery_order(
    data: st.DataObject,
) -> None:
    """With producers stamping events before the events that caused them, the instances still
    do not depend on the delivery order."""
    events = data.draw(scripts(slow_clocks=True))
    order = data.draw(st.permutations(range(len(events))))
    assert in_order_live(events)[0] == scrambled(events, order)[0]


def test_held_verdicts_are_released_once_when_the_watermark_moves_on() -> None:
    """Ticking the same watermark again, or an older one, releases nothing more."""
    store, correlator = MemoryStore(), Correlator(DEFINITIONS)
    correlator.apply(store, event(START), topic="t", now=at(0))
    first = correlator.tick(store, at(40))
    again = [correlator.tick(store, at(40)), correlator.tick(store, at(35))]
    assert ["saga.stuck"] == [a.type for a in first.alerts]
    assert [[], []] == [outcome.alerts for outcome in again]


def test_two_monitors_reach_the_same_alert_ids() -> None:
    """The same verdict reached by two monitors (each its own store and delivery order) is an
    alert with the same id, so incident tools see one incident."""
    events = [
        event(START, seconds=0, id_="s"),
        event("payment.authorized", seconds=50, id_="a"),
        event("payment.failed", seconds=60, id_="f"),
    ]
    _, first = scrambled(events, [0, 1, 2])
    _, second = scrambled(events, [2, 1, 0])
    assert first == second
    assert 4 <= len(first)  # stuck, resolved, late, compensating


def test_an_event_stamped_in_the_future_is_corrected_and_reported_as_clock_skew() -> None:
    """A producer clock an hour fast cannot hide a stall: its event's time is taken as its
    arrival, the next deadline counts from there, and the instance reports clock_skew."""
    store = MemoryStore()
    monitor_clocks = SourceClocks(tolerance=1.0)
    correlator = Correlator(DEFINITIONS)
    correlator.apply(store, event(START, source="shop"), topic="t", now=at(0))
    fast = event("payment.authorized", seconds=3601, source="pay")
    skew = monitor_clocks.correction("pay", at(3601), at(1))
    correlator.apply_many(store, [Received(fast, "t", skew=skew)], now=at(1))
    correlator.tick(store, at(40))
    (instance,) = store.data.values()
    assert ("stuck", ["inventory.reserved"]) == (instance.state, instance.expected)
    assert [("clock_skew", "pay")] == [(a.kind, a.source) for a in instance.anomalies]


def test_an_event_stamped_before_its_cause_is_ordered_after_it() -> None:
    """A producer clock 2 s slow does not fake out_of_order: an event stamped before the event
    that caused it is ordered after its cause, and reported as clock_skew."""
    store, correlator = MemoryStore(), Correlator(DEFINITIONS)
    paid = event("payment.authorized", seconds=10, source="pay", id_="a")
    reserved = event("inventory.reserved", seconds=8.5, source="stock", id_="r", causationid="a")
    for item in (event(START, id_="s"), paid, reserved):
        correlator.apply(store, item, topic="t", now=at(20))
    (instance,) = store.data.values()
    assert ["clock_skew"] == [a.kind for a in instance.anomalies]
    assert ["order.shipped"] == instance.expected
    assert "stock's clock runs behind" in instance.anomalies[0].detail
