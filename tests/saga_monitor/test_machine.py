"""The state machine and correlator: states, expectations, deadlines and anomalies."""

from __future__ import annotations

import gc
from datetime import datetime

from broker import Event
from saga_monitor import Correlator, Instance, MemoryStore, SagaDefinition, Step
from saga_monitor.machine import Outcome
from saga_monitor.machine.alerts import KeptAlert
from tests.saga_monitor.helpers import at, event, example


class Saga:
    """The example saga over a memory store, with a watermark the test moves.

    ``send`` delivers events (received at T0 + 10000 s) with the current watermark (none at
    first: every verdict is held); ``tick`` moves the watermark to T0 + ``seconds``.
    """

    def __init__(self, *sagas: SagaDefinition) -> None:
        self.store = MemoryStore()
        self.correlator = Correlator(sagas or example())
        self.alerts: list[str] = []
        self.watermark: datetime | None = None

    def send(
        self, *events: Event, delivery: str | None = None, redelivered: bool = False
    ) -> Outcome:
        outcome = Outcome()
        for item in events:
            step = self.correlator.apply(
                self.store,
                item,
                topic="t",
                now=at(10_000),
                watermark=self.watermark,
                delivery=delivery,
                redelivered=redelivered,
            )
            self.alerts += [a.type for a in step.alerts]
            outcome.merge(step)
        return outcome

    def tick(self, seconds: float) -> Outcome:
        self.watermark = at(seconds)
        outcome = self.correlator.tick(self.store, self.watermark)
        self.alerts += [a.type for a in outcome.alerts]
        return outcome

    def get(self, corr: str = "o-1", saga: str = "order-fulfilment") -> Instance:
        return self.store.data[(saga, corr)]

    def kinds(self, corr: str = "o-1") -> list[str]:
        return [a.kind for a in self.get(corr).anomalies]


def test_happy_path_completes_and_expects_each_step_in_turn() -> None:
    """Each step moves 'expected next' on; the complete event finishes the saga."""
    saga = Saga()
    saga.send(event("order.placed", seconds=0))
    assert ["payment.authorized"] == saga.get().expected
    assert at(30) == saga.get().due
    saga.send(event("payment.authorized", seconds=5))
    assert (["inventory.reserved"], at(35)) == (saga.get().expected, saga.get().due)
    saga.send(event("inventory.reserved", seconds=10), event("order.shipped", seconds=100))
    instance = saga.get()
    assert ("completed", [], None) == (instance.state, instance.expected, instance.due)
    assert [] == instance.anomalies
    assert at(100) == instance.finished
    saga.tick(100)
    assert ["saga.completed"] == saga.alerts


def test_alerts_held_for_the_watermark_are_kept_out_of_the_collectors_way() -> None:
    """Between passes an instance's fold keeps its alerts as JSON bytes (a completed instance
    leaves its timeline list as its only object for the garbage collector), and releases each
    one, once the watermark passes it, equal to the alert the fold derived, with its id."""
    saga = Saga()
    saga.send(event("order.placed", seconds=0), event("payment.authorized", seconds=5))
    saga.send(event("inventory.reserved", seconds=10), event("order.shipped", seconds=100))
    fold = saga.get().fold
    ((moment, held),) = fold.alerts
    assert (at(100), KeptAlert) == (moment, type(held))
    derived = held.alert()
    assert (derived.type, derived.data["expected_next"]) == ("saga.completed", [])
    gc.collect()
    gc.collect()  # a tuple is untracked once what it holds is: its inner tuples first
    instance = saga.get()
    tracked = [
        name for name in instance.__struct_fields__ if gc.is_tracked(getattr(instance, name))
    ]
    shared = ("expected", "waiting", "anomalies")  # the machine's shared lists (see Instance)
    assert ["timeline"] == [name for name in tracked if name not in shared]
    assert not gc.is_tracked(fold.alerts)
    (released,) = saga.tick(100).alerts
    assert (derived, derived.event_id) == (released, released.event_id)
    assert held.event_id == released.event_id


def test_failure_with_nothing_done_is_failed() -> None:
    """A fail event before any compensable step leaves nothing to undo: failed."""
    saga = Saga()
    saga.send(event("order.placed"), event("payment.failed", seconds=1))
    saga.tick(1)
    assert "failed" == saga.get().state
    assert ["saga.failed"] == saga.alerts


def test_failure_after_steps_waits_for_their_compensations_in_reverse() -> None:
    """A failure after two compensable steps waits for both compensations, newest first."""
    saga = Saga()
    saga.send(
        event("order.placed"),
        event("payment.authorized", seconds=1),
        event("inventory.reserved", seconds=2),
        event("payment.failed", seconds=3),
    )
    assert ("compensating", ["inventory.released", "payment.refunded"]) == (
        saga.get().state,
        saga.get().expected,
    )
    saga.send(event("payment.refunded", seconds=4))
    assert ["inventory.released"] == saga.get().expected
    saga.send(event("inventory.released", seconds=5))
    saga.tick(5)
    assert "compensated" == saga.get().state
    assert ["saga.compensating", "saga.compensated"] == saga.alerts


def test_verdicts_wait_for_the_watermark() -> None:
    """Nothing is alerted before the watermark passes the time the alert speaks for."""
    saga = Saga()
    saga.send(event("order.placed"), event("payment.failed", seconds=5))
    saga.tick(4.9)
    assert [] == saga.alerts
    saga.tick(5)
    assert ["saga.failed"] == saga.alerts


def test_deadline_passed_by_the_watermark_marks_stuck_once_and_late_event_moves_it_on() -> None:
    """No event needed: the watermark passing a step deadline makes the instance stuck, once;
    the late event moves it on and resolves the stuck alert."""
    saga = Saga()
    saga.send(event("order.placed"))
    saga.tick(29.9)
    assert "running" == saga.get().state
    saga.tick(30)
    saga.tick(60)
    assert ("stuck", ["payment.authorized"], at(30)) == (
        saga.get().state,
        saga.get().expected,
        saga.get().stuck_since,
    )
    assert ["saga.stuck"] == saga.alerts
    saga.send(event("payment.authorized", seconds=70))
    assert ("running", ["late"]) == (saga.get().state, saga.kinds())
    assert ["inventory.reserved"] == saga.get().expected
    assert ["saga.stuck", "saga.resolved"] == saga.alerts
    saga.tick(70)
    assert ["saga.stuck", "saga.resolved", "saga.anomaly"] == saga.alerts


def test_resolved_alert_names_the_stuck_alert_it_closes() -> None:
    """saga.resolved carries the id of the saga.stuck alert it resolves."""
    saga = Saga()
    saga.send(event("order.placed"))
    stuck = saga.tick(30).alerts
    resolved = saga.send(event("payment.authorized", seconds=40)).alerts
    assert (
        stuck[0].event_id == next(a for a in resolved if a.type == "saga.resolved").data["resolves"]
    )


def test_event_after_its_deadline_is_late_even_before_the_watermark_passed() -> None:
    """An event that happened after the deadline is late whenever it is delivered; the stall
    it ended is alerted (stuck, then resolved) once the watermark passes."""
    saga = Saga()
    saga.send(event("order.placed"), event("payment.authorized", seconds=31))
    assert ["late"] == saga.kinds()
    assert "running" == saga.get().state
    saga.tick(31)
    assert ["saga.stuck", "saga.anomaly", "saga.resolved"] == saga.alerts


def test_event_that_happened_in_time_but_arrived_late_is_not_late() -> None:
    """Delivered long after its deadline, a step that happened in time is simply applied."""
    saga = Saga()
    saga.send(event("order.placed"))
    saga.tick(10)
    saga.send(event("payment.authorized", seconds=29))
    saga.tick(40)
    assert ("running", []) == (saga.get().state, saga.kinds())
    assert [] == saga.alerts


def test_compensation_deadline_makes_a_compensating_saga_stuck() -> None:
    """compensation_within bounds how long compensations may take after the failure."""
    saga = Saga()
    saga.send(
        event("order.placed"),
        event("payment.authorized", seconds=1),
        event("inventory.unavailable", seconds=2),
    )
    saga.tick(2 + 299)
    assert "compensating" == saga.get().state
    saga.tick(2 + 300)
    assert ("stuck", ["payment.refunded"]) == (saga.get().state, saga.get().expected)
    saga.send(event("payment.refunded", seconds=400))
    assert ("compensated", ["late"]) == (saga.get().state, saga.kinds())


def test_overall_deadline_caps_the_step_deadline() -> None:
    """The overall deadline wins when it comes before the next step's own deadline."""
    saga = Saga(
        SagaDefinition(
            name="s", start="a", steps=[Step("b", within="1h")], complete="b", deadline="10m"
        )
    )
    saga.send(event("a"))
    assert at(600) == saga.get(saga="s").due


def test_duplicate_is_reported_once_however_often_it_comes_again() -> None:
    """The same source+id in another message is one duplicate anomaly; more copies change
    nothing."""
    saga = Saga()
    placed = event("order.placed", id_="p1")
    saga.send(placed, event("payment.authorized", seconds=1, id_="a1"))
    saga.send(placed, placed, placed)
    assert ["duplicate"] == saga.kinds()
    assert ("running", 3) == (saga.get().state, len(saga.get().timeline))


def test_the_same_broker_position_again_is_a_redelivery_not_a_duplicate() -> None:
    """A message at a position already applied (redelivered after a restart) changes nothing;
    the same event at another position is a duplicate."""
    saga = Saga()
    placed = event("order.placed", id_="p1")
    saga.send(placed, delivery="orders/0/5")
    saga.send(placed, delivery="orders/0/5")
    assert ([], 1) == (saga.kinds(), len(saga.get().timeline))
    saga.send(placed, delivery="orders/0/9")
    assert ["duplicate"] == saga.kinds()


def test_a_message_the_broker_redelivers_is_not_a_duplicate() -> None:
    """Without positions, the broker's redelivered flag tells a redelivery from a duplicate."""
    saga = Saga()
    placed = event("order.placed", id_="p1")
    saga.send(placed)
    saga.send(placed, redelivered=True)
    assert [] == saga.kinds()
    saga.send(placed)
    assert ["duplicate"] == saga.kinds()


def test_unknown_type_with_a_live_correlation_id_is_unexpected() -> None:
    """An event type the saga does not define, for a live instance, is recorded as unexpected."""
    saga = Saga()
    saga.send(event("order.placed"), event("payment.disputed", seconds=1))
    assert ["unexpected"] == saga.kinds()
    assert "unknown" == saga.get().timeline[-1].role


def test_unknown_type_without_an_instance_is_forgotten_once_the_watermark_passes() -> None:
    """Traffic unrelated to any instance waits only until the watermark shows no start came
    before it, then leaves no trace."""
    saga = Saga()
    saga.send(event("newsletter.sent", corr="n-1"))
    saga.tick(0)
    assert ({}, {}, []) == (saga.store.data, saga.store.orphan_data, saga.alerts)


def test_steps_whose_times_contradict_the_order_are_out_of_order() -> None:
    """A step that happened (by event time) before an earlier-defined step is out of order."""
    saga = Saga()
    saga.send(
        event("order.placed"),
        event("inventory.reserved", seconds=1),
        event("payment.authorized", seconds=2),
    )
    assert ["out_of_order"] == saga.kinds()


def test_steps_delivered_out_of_order_but_timed_in_order_are_fine() -> None:
    """Delivery order across topics is not an anomaly when the event times are in order."""
    saga = Saga()
    saga.send(
        event("order.placed"),
        event("inventory.reserved", seconds=2),
        event("payment.authorized", seconds=1),
    )
    assert ([], ["order.shipped"]) == (saga.kinds(), saga.get().expected)


def test_completion_without_a_step_is_out_of_order() -> None:
    """A completion while a step never happened is out of order, alerted once the watermark
    passes the completion."""
    saga = Saga()
    saga.send(
        event("order.placed"),
        event("payment.authorized", seconds=1),
        event("order.shipped", seconds=9),
    )
    assert ("completed", ["out_of_order"]) == (saga.get().state, saga.kinds())
    assert "completed without inventory.reserved" == saga.get().anomalies[0].detail
    saga.tick(8)
    assert [] == saga.alerts
    saga.tick(9)
    assert ["saga.anomaly", "saga.completed"] == saga.alerts


def test_step_delivered_after_the_completion_it_preceded_is_fine() -> None:
    """Across topics the completion may overtake a step that happened before it: no anomaly."""
    saga = Saga()
    saga.send(
        event("order.placed"),
        event("payment.authorized", seconds=1),
        event("order.shipped", seconds=9),
        event("inventory.reserved", seconds=5),
    )
    saga.tick(100)
    assert ("completed", []) == (saga.get().state, saga.kinds())
    assert ["saga.completed"] == saga.alerts


def test_failure_delivered_after_the_cancellation_it_caused_gives_the_same_state() -> None:
    """inventory.unavailable overtaken by the order.cancelled it caused: still failed (the demo's
    race)."""
    in_order, overtaken = Saga(), Saga()
    placed, failed = event("order.placed"), event("inventory.unavailable", seconds=2)
    cancelled = event("order.cancelled", seconds=3)
    in_order.send(placed, failed, cancelled)
    overtaken.send(placed, cancelled, failed)
    assert ("failed", []) == (in_order.get().state, in_order.kinds())
    assert ("failed", []) == (overtaken.get().state, overtaken.kinds())


def test_compensation_before_its_failure_is_remembered_not_flagged() -> None:
    """A compensation overtaking its failure event is counted when the failure arrives."""
    saga = Saga()
    saga.send(
        event("order.placed"),
        event("payment.authorized", seconds=1),
        event("payment.refunded", seconds=3),
        event("payment.failed", seconds=2),
    )
    assert ("compensated", []) == (saga.get().state, saga.kinds())


def test_completion_after_a_compensation_is_unexpected() -> None:
    """A saga that completes although one of its steps was compensated is flagged."""
    saga = Saga()
    saga.send(
        event("order.placed"),
        event("payment.authorized", seconds=1),
        event("payment.refunded", seconds=2),
        event("inventory.reserved", seconds=3),
        event("order.shipped", seconds=4),
    )
    assert ("completed", ["unexpected"]) == (saga.get().state, saga.kinds())


def test_event_after_terminal_state_is_flagged_and_changes_nothing() -> None:
    """After the end, a further saga event is an after_terminal anomaly."""
    saga = Saga()
    saga.send(event("order.placed"), event("payment.failed", seconds=1))
    saga.send(event("order.shipped", seconds=2))
    assert ("failed", ["after_terminal"]) == (saga.get().state, saga.kinds())


def test_orphan_is_reported_once_the_watermark_passes_then_adopted_by_its_start() -> None:
    """A step without a start is reported as an orphan when the watermark passes it with still
    no start; the late start adopts it in event-time order."""
    saga = Saga()
    saga.send(event("payment.authorized", seconds=1))
    assert ({}, []) == (saga.store.data, saga.alerts)
    outcome = saga.tick(1)
    assert ["orphan"] == [a.data["anomaly"]["kind"] for a in outcome.alerts]
    saga.send(event("order.placed", seconds=0))
    instance = saga.get()
    assert (["inventory.reserved"], []) == (instance.expected, saga.kinds())
    assert {} == saga.store.orphan_data
    saga.tick(20)
    assert ["saga.anomaly"] == saga.alerts


def test_orphan_whose_start_arrives_before_the_watermark_passes_is_not_reported() -> None:
    """Across topics a step may arrive before its start: no orphan when the start comes first
    in event time."""
    saga = Saga()
    saga.send(event("payment.authorized", seconds=1), event("order.placed", seconds=0))
    saga.tick(100)
    assert ([], []) == (saga.kinds(), [a for a in saga.alerts if a != "saga.stuck"])


def test_orphan_that_happened_before_the_start_is_out_of_order_once_adopted() -> None:
    """An adopted event stamped before the start event is out of order (and was an orphan)."""
    saga = Saga()
    saga.send(event("payment.authorized", seconds=0), event("order.placed", seconds=5))
    assert ["out_of_order"] == saga.kinds()
    kinds = [a.data["anomaly"]["kind"] for a in saga.tick(5).alerts if a.type == "saga.anomaly"]
    assert ["orphan", "out_of_order"] == sorted(kinds)


def test_repeated_orphan_is_reported_once() -> None:
    """A redelivered orphan is not a second orphan anomaly."""
    saga = Saga()
    orphan = event("payment.authorized", id_="x")
    saga.send(orphan)
    saga.send(orphan)
    saga.tick(1)
    saga.tick(2)
    assert ["saga.anomaly"] == saga.alerts


def test_one_event_can_belong_to_several_sagas() -> None:
    """A start event shared by two saga types starts an instance of each."""
    loyalty = SagaDefinition(name="loyalty", start="order.placed", steps=[Step("points.added")])
    saga = Saga(*example().sagas, loyalty)
    saga.send(event("order.placed"), event("points.added", seconds=1))
    assert {("order-fulfilment", "o-1"), ("loyalty", "o-1")} == set(saga.store.data)
    assert ("running", "completed") == (saga.get().state, saga.get(saga="loyalty").state)


def test_correlation_from_a_data_path() -> None:
    """`correlation: data.order.id` reads the id from the payload."""
    definition = SagaDefinition(name="s", correlation="data.order.id", start="a", steps=[Step("b")])
    saga = Saga(definition)
    saga.send(event("a", corr=None, data={"order": {"id": 7}}))
    saga.send(event("b", corr=None, seconds=1, data={"order": {"id": 7}}))
    assert "completed" == saga.get("7", saga="s").state


def test_correlation_from_a_jsonpath_and_from_a_header() -> None:
    """A JSONPath with an index, and `header:<name>`, both find the correlation id."""
    by_path = SagaDefinition(name="p", correlation="$.items[0].sku", start="a", complete="z")
    by_header = SagaDefinition(name="h", correlation="header:xorder", start="a", complete="z")
    saga = Saga(by_path, by_header)
    saga.send(event("a", corr=None, data={"items": [{"sku": "k1"}]}, xorder="h1"))
    assert {("p", "k1"), ("h", "h1")} == set(saga.store.data)


def test_event_without_a_correlation_id_is_counted_and_ignored() -> None:
    """A saga event with no correlation id cannot be placed; it is counted."""
    saga = Saga()
    saga.send(event("order.placed", corr=None))
    assert ({}, 1) == (saga.store.data, saga.correlator.uncorrelated)


def test_anomalies_are_published_as_alerts() -> None:
    """Every anomaly becomes a saga.anomaly alert naming its kind."""
    saga = Saga()
    placed = event("order.placed")
    saga.send(placed, placed)
    outcome = saga.tick(0)
    assert [("saga.anomaly", "duplicate")] == [
        (a.type, a.data["anomaly"]["kind"]) for a in outcome.alerts
    ]


def test_step_durations_are_measured_from_the_previous_step() -> None:
    """Step durations feed the histogram: time since the previous step (or the start)."""
    saga = Saga()
    outcome = saga.send(
        event("order.placed"),
        event("payment.authorized", seconds=2),
        event("inventory.reserved", seconds=7),
    )
    assert [
        ("order-fulfilment", "payment.authorized", 2.0),
        ("order-fulfilment", "inventory.reserved", 5.0),
    ] == outcome.step_seconds


def test_instance_round_trips_through_its_json_document() -> None:
    """What the stores keep reads back into an equal instance."""
    saga = Saga()
    saga.send(
        event("order.placed", data={"note": "<script>x</script>"}),
        event("payment.authorized", seconds=1),
        event("payment.failed", seconds=2),
    )
    saga.tick(10_000)
    instance = saga.get()
    assert instance == Instance.from_dict(instance.to_dict())


def test_compensated_event_after_failure_or_compensation_is_the_expected_epilogue() -> None:
    """order.cancelled after `failed` or `compensated` belongs to the saga: no anomaly."""
    saga = Saga()
    saga.send(event("order.placed", "f"), event("payment.failed", "f", 1))
    saga.send(event("order.cancelled", "f", 2))
    saga.send(
        event("order.placed", "c"),
        event("payment.authorized", "c", 1),
        event("inventory.unavailable", "c", 2),
        event("payment.refunded", "c", 3),
        event("order.cancelled", "c", 4),
    )
    assert (("failed", []), ("compensated", [])) == (
        (saga.get("f").state, saga.kinds("f")),
        (saga.get("c").state, saga.kinds("c")),
    )


def test_compensation_after_the_compensated_event_settles_the_ledger() -> None:
    """A compensation that comes after order.cancelled closed the saga pays what it owed."""
    saga = Saga()
    saga.send(
        event("order.placed"),
        event("payment.authorized", seconds=1),
        event("payment.failed", seconds=2),
        event("order.cancelled", seconds=3),
    )
    assert ("compensated", ["payment.refunded"]) == (saga.get().state, saga.get().waiting)
    saga.send(event("payment.refunded", seconds=4))
    saga.tick(1000)
    assert ("compensated", [], []) == (saga.get().state, saga.kinds(), saga.get().waiting)


def test_closing_while_owing_a_compensation_is_compensation_missing() -> None:
    """A compensated event does not hide a compensation that never came: once its wait
    (compensation_within) passes, the instance gets compensation_missing."""
    saga = Saga()
    saga.send(
        event("order.placed"),
        event("payment.authorized", seconds=1),
        event("order.cancelled", seconds=3),
    )
    saga.tick(302)
    assert ("compensated", [], ["payment.refunded"]) == (
        saga.get().state,
        saga.kinds(),
        saga.get().expected,
    )
    saga.tick(303)
    assert ["compensation_missing"] == saga.kinds()
    assert ["saga.compensated", "saga.anomaly"] == saga.alerts
    saga.send(event("payment.refunded", seconds=400))
    assert ["compensation_missing", "late"] == saga.kinds()
    saga.tick(400)
    assert ["saga.compensated", "saga.anomaly", "saga.resolved", "saga.anomaly"] == saga.alerts


def test_step_delivered_after_the_failure_it_preceded_is_owed_a_compensation() -> None:
    """A step timed before the failure but delivered after it is compensated for."""
    saga = Saga()
    saga.send(event("order.placed"), event("payment.failed", seconds=3))
    assert "failed" == saga.get().state
    saga.send(event("payment.authorized", seconds=1))
    assert ("compensating", ["payment.refunded"]) == (saga.get().state, saga.get().expected)
    saga.send(event("payment.refunded", seconds=4))
    saga.tick(4)
    assert ("compensated", []) == (saga.get().state, saga.kinds())
    assert ["saga.compensating", "saga.compensated"] == saga.alerts


def test_everything_overtaken_by_the_compensated_event_is_fine() -> None:
    """order.cancelled first, then the step, failure and compensation that led to it."""
    saga = Saga()
    saga.send(
        event("order.placed"),
        event("order.cancelled", seconds=4),
        event("payment.authorized", seconds=1),
        event("payment.failed", seconds=2),
        event("payment.refunded", seconds=3),
    )
    assert ("compensated", []) == (saga.get().state, saga.kinds())


def test_failure_delivered_after_the_closing_event_does_not_change_the_final_state() -> None:
    """A failure delivered after the compensated event that closed the saga gives the state
    in-order delivery gives."""
    in_order, overtaken = Saga(), Saga()
    events = [
        event("order.placed"),
        event("payment.authorized", seconds=1),
        event("payment.failed", seconds=2),
        event("payment.refunded", seconds=3),
        event("order.cancelled", seconds=4),
    ]
    in_order.send(*events)
    overtaken.send(*events[:2], events[3], events[4], events[2])
    assert in_order.get().to_dict()["state"] == overtaken.get().to_dict()["state"]
    assert ("compensated", []) == (overtaken.get().state, overtaken.kinds())


def test_instances_survive_a_definition_that_dropped_a_step() -> None:
    """Instances stored under an older definition keep working when a step is removed."""
    old = SagaDefinition(name="s", start="a", steps=[Step("b"), Step("c"), Step("d")])
    new = SagaDefinition(name="s", start="a", steps=[Step("c"), Step("d")])
    saga = Saga(old)
    saga.send(event("a"), event("b", seconds=1))
    saga.correlator = Correlator([new])
    saga.send(event("c", seconds=2), event("d", seconds=3))
    instance = saga.get(saga="s")
    assert ("completed", [("unexpected", "b is not part of s")]) == (
        instance.state,
        [(a.kind, a.detail) for a in instance.anomalies],
    )


def test_alert_ids_follow_what_the_alert_says() -> None:
    """The same alert made twice has the same CloudEvent id; different alerts differ."""
    first, second = Saga(), Saga()
    placed = event("order.placed", id_="p")
    failed = event("payment.failed", seconds=1, id_="f")
    for saga in (first, second):
        saga.send(placed, failed, placed)
    ids = [[a.event_id for a in saga.tick(1).alerts] for saga in (first, second)]
    assert ids[0] == ids[1]
    assert 2 == len(set(ids[0]))
