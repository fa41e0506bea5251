"""The correlator: routes each event to the saga instances it belongs to, inside one transaction.

An event belongs to every saga whose definition names its type (one event may start or advance
several saga types); its correlation id is read the way each saga says. An event of a type no
saga names is still recorded as ``unexpected`` on any live instance with its correlation id.
An event whose instance has not started is buffered as an orphan and adopted when the start
event arrives (brokers do not order events across topics); it is reported as an ``orphan`` only
once the watermark has passed its time with still no start.

Every verdict is the machine's (:mod:`saga_monitor.machine`): given the events and the watermark
it derives the instance and the alerts, so the correlator only records, judges and persists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

import msgspec

from broker.envelope import Event
from saga_monitor.definitions import Definitions, SagaDefinition
from saga_monitor.machine import Outcome, SagaMachine, is_redelivery, orphan_alert
from saga_monitor.model import Entry, Instance, Observation
from saga_monitor.store import Key, LockingStore, SagaStore, Transaction

__all__ = ["Correlator", "Received"]

#: The most instances one transaction of :meth:`Correlator.tick` judges (a batch's worth; fewer
#: where the store bounds its transactions, see :func:`instances_per_transaction`).
TICK_BATCH = 4000


def instances_per_transaction(store: SagaStore) -> int | None:
    """The most instances one transaction of ``store`` may touch (None: any number)."""
    return store.instances_per_transaction if isinstance(store, LockingStore) else None


#: What recording an event of a type needs of a saga that names it: the machine, the saga's
#: name, the extension its correlation id is read from directly (None: read it with the
#: extractor) and the extractor.
_Route = tuple[SagaMachine, str, str | None, Callable[[Event], str | None]]


def _route(machine: SagaMachine) -> _Route:
    correlation = machine.definition.correlation
    header = correlation.path if correlation.kind == "extension" else None
    return machine, machine.name, header, correlation.extract


@dataclasses.dataclass(slots=True)
class _Touched:
    """An instance a batch changed: its entries received since its last judgement, and the
    outcome (of the last event that changed it) its judgement is reported in."""

    machine: SagaMachine
    instance: Instance
    new: list[Entry]
    outcome: Outcome


class Received(msgspec.Struct, frozen=True, gc=False):
    """One event as the monitor received it: from which topic, carried by which message.

    A msgspec Struct the garbage collector does not track (nothing it holds leads back to
    it): the monitor makes one per event on its event loop, where a frozen dataclass's
    ``__init__`` (a ``object.__setattr__`` per field) cost more than the rest of the handoff,
    and each one was walked by the collections between batches.
    """

    event: Event
    topic: str | None = None
    #: The broker position of the message (see :attr:`Observation.delivery`), if known.
    delivery: str | None = None
    #: Whether the broker says it delivered this message before.
    redelivered: bool = False
    #: Seconds that correct the event's time for its source's clock.
    skew: float = 0.0


class Correlator:
    """Applies events and the watermark to the instances in a saga store."""

    def __init__(
        self,
        definitions: Definitions | Iterable[SagaDefinition],
        *,
        skew_tolerance: float = 1.0,
    ) -> None:
        sagas = definitions.sagas if isinstance(definitions, Definitions) else tuple(definitions)
        self.machines = {
            saga.name: SagaMachine(saga, skew_tolerance=skew_tolerance) for saga in sagas
        }
        self._by_type: dict[str, list[SagaMachine]] = {}
        for machine in self.machines.values():
            for event_type in sorted(machine.types):
                self._by_type.setdefault(event_type, []).append(machine)
        #: Per event type, what recording it needs of each saga that names it, worked out once
        #: (see :data:`_Route`).
        self._routes: dict[str, tuple[_Route, ...]] = {
            event_type: tuple(_route(machine) for machine in machines)
            for event_type, machines in self._by_type.items()
        }
        #: The routes of every saga, for an event of a type no saga names.
        self._every_route = tuple(_route(machine) for machine in self.machines.values())
        #: Events of a known type that carried no correlation id (counted, then ignored).
        self.uncorrelated = 0

    def knows(self, event_type: str) -> bool:
        """Whether some saga names ``event_type``."""
        return event_type in self._by_type

    def apply(
        self,
        store: SagaStore,
        event: Event,
        *,
        topic: str | None,
        now: datetime,
        watermark: datetime | None = None,
        delivery: str | None = None,
        redelivered: bool = False,
    ) -> Outcome:
        """Apply ``event``, received at ``now``, to every instance it belongs to (one
        transaction); alerts are handed out as far as ``watermark`` allows."""
        item = Received(event, topic, delivery, redelivered)
        (outcome,) = self.apply_many(store, [item], now=now, watermark=watermark)
        return outcome

    def apply_many(
        self,
        store: SagaStore,
        items: list[Received],
        *,
        now: datetime,
        watermark: datetime | None = None,
    ) -> list[Outcome]:
        """Apply several events in one transaction (a batch); one outcome per event.

        The events are recorded first, then each instance they touched is judged once and
        written once, so a batch costs one fold and one write per instance, not per event
        (the fold gives the same instance whatever order its events come in). What the
        judgement yields (alerts, step durations) lands in the outcome of the last event that
        changed the instance.

        A store that bounds the instances of a transaction (PostgreSQL, whose lock table holds
        a lock per instance) gets a batch touching more in several transactions, each with
        every event of its instances (:func:`_parts`): an instance has then either all of the
        batch's events or none of them, as when a monitor stops before or after its one
        commit, and a redelivery of the batch finds the events it has and changes nothing."""
        bound = instances_per_transaction(store)
        missing = [0]  # the events' correlation ids not found, counted once in the end
        parts = (  # (an event touches one instance of each saga at most)
            self._parts(items, bound, missing)
            if bound is not None and len(items) * len(self.machines) > bound
            else []
        )
        if not parts:
            return self._apply_part(store, items, None, now, watermark)
        outcomes = [Outcome() for _ in items]
        uncorrelated = self.uncorrelated
        for keys, chosen in parts:
            part = [items[index] for index in chosen]
            for index, outcome in zip(
                chosen, self._apply_part(store, part, keys, now, watermark), strict=True
            ):
                outcomes[index].merge(outcome)
        self.uncorrelated = uncorrelated + missing[0]  # not once per part an event is in
        return outcomes

    def _parts(
        self, items: list[Received], bound: int, missing: list[int]
    ) -> list[tuple[set[Key], list[int]]]:
        """Split ``items`` by instance into parts of at most ``bound`` instances (in the order
        the batch first names them): each part's instances and the indexes of the items that
        touch them (an item touching none goes with the first part). An empty list: the
        batch touches at most ``bound`` instances. ``missing[0]`` counts the correlation ids
        the items lack, as :attr:`uncorrelated` does."""
        part_of: dict[Key, int] = {}
        per_item = []
        for item in items:
            keys = list(self._keys((item,), missing))
            per_item.append(keys)
            for key in keys:
                if key not in part_of:
                    part_of[key] = len(part_of) // bound
        if len(part_of) <= bound:
            return []
        parts: list[tuple[set[Key], list[int]]] = [
            (set(), []) for _ in range((len(part_of) - 1) // bound + 1)
        ]
        for index, keys in enumerate(per_item):
            for number in sorted({part_of[key] for key in keys} or {0}):
                parts[number][1].append(index)
        for key, number in part_of.items():
            parts[number][0].add(key)
        return parts

    def _apply_part(
        self,
        store: SagaStore,
        items: list[Received],
        only: set[Key] | None,
        now: datetime,
        watermark: datetime | None,
    ) -> list[Outcome]:
        """Apply ``items`` to the instances of ``only`` (None: all of theirs) in one
        transaction (see :meth:`apply_many`)."""
        outcomes = []
        touched: dict[tuple[str, str], _Touched] = {}
        observe, routes_of = Observation.observe, self._routes.get
        with store.transaction() as txn:
            # read in one go where the store can (lazily)
            txn.prefetch(self._keys(items) if only is None else only)
            for item in items:
                event = item.event
                obs = observe(event, item.topic, now, item.skew, item.delivery)
                routes = routes_of(event.type)
                if routes is None:  # no saga names the type
                    outcomes.append(self._record_event(txn, item, obs, watermark, touched, only))
                    continue
                outcome = Outcome()
                outcomes.append(outcome)
                for machine, name, header, extract in routes:
                    correlation_id = None
                    if header is not None:  # the common case, as Correlation.extract reads it
                        value = event.extensions.get(header)
                        if value.__class__ is not str:
                            correlation_id = extract(event)
                        elif value:
                            correlation_id = value
                    else:
                        correlation_id = extract(event)
                    if correlation_id is None:
                        self.uncorrelated += 1
                        continue
                    if only is not None and (name, correlation_id) not in only:
                        continue
                    known = touched.get((name, correlation_id))
                    if known is None:  # the first of the batch's events for the instance
                        self._route(txn, machine, correlation_id, obs, item, touched, outcome)
                    elif machine.receive(known.instance, obs, item.redelivered):
                        outcome.changed = True
                        known.new.append(known.instance.timeline[-1])
                        known.outcome = outcome
            self._judge_touched(txn, touched, watermark)
        return outcomes

    def _keys(
        self, items: Iterable[Received], missing: list[int] | None = None
    ) -> Iterator[tuple[str, str]]:
        """The (saga, correlation id) of every instance ``items`` may touch (the ones
        :meth:`_record_event` looks up), the correlation ids read as :meth:`apply_many`
        reads them; ``missing[0]`` counts those of a saga naming the type that are not there
        (as :attr:`uncorrelated` does)."""
        routes_of, every = self._routes.get, self._every_route
        for item in items:
            event = item.event
            routes = routes_of(event.type)
            for _, name, header, extract in every if routes is None else routes:
                if header is not None:
                    value = event.extensions.get(header)
                    if value.__class__ is str:  # as Correlation.extract reads it
                        if value:
                            yield name, value
                        elif missing is not None and routes is not None:
                            missing[0] += 1
                        continue
                correlation_id = extract(event)
                if correlation_id is not None:
                    yield name, correlation_id
                elif missing is not None and routes is not None:
                    missing[0] += 1

    def apply_in(
        self,
        txn: Transaction,
        event: Event,
        obs: Observation,
        watermark: datetime | None = None,
        redelivered: bool = False,
    ) -> Outcome:
        """Apply ``event`` within an open transaction (for callers batching several)."""
        touched: dict[tuple[str, str], _Touched] = {}
        item = Received(event, obs.topic, obs.delivery, redelivered)
        outcome = self._record_event(txn, item, obs, watermark, touched)
        self._judge_touched(txn, touched, watermark)
        return outcome

    def _record_event(
        self,
        txn: Transaction,
        item: Received,
        obs: Observation,
        watermark: datetime | None,
        touched: dict[tuple[str, str], _Touched],
        only: set[Key] | None = None,
    ) -> Outcome:
        """Record ``item`` in every instance it belongs to (of ``only``, if given; judged
        later, in ``touched``)."""
        event = item.event
        outcome = Outcome()
        machines = self._by_type.get(event.type)
        if machines is None:  # no saga names the type: unexpected in a live instance
            for machine in self.machines.values():
                correlation_id = machine.definition.correlation.extract(event)
                if correlation_id is None or (
                    only is not None and (machine.name, correlation_id) not in only
                ):
                    continue
                instance = self._instance(txn, machine, correlation_id, touched)
                if instance is not None:
                    self._record(machine, instance, obs, item.redelivered, touched, outcome)
                elif watermark is None or obs.time > watermark:  # its start may be on its way
                    self._buffer(txn, machine, correlation_id, obs, item.redelivered)
            return outcome
        for machine in machines:
            correlation_id = machine.definition.correlation.extract(event)
            if correlation_id is None:
                self.uncorrelated += 1
                continue
            self._route(txn, machine, correlation_id, obs, item, touched, outcome)
        return outcome

    @staticmethod
    def _instance(
        txn: Transaction,
        machine: SagaMachine,
        correlation_id: str,
        touched: dict[tuple[str, str], _Touched],
    ) -> Instance | None:
        known = touched.get((machine.name, correlation_id))
        return known.instance if known is not None else txn.get(machine.name, correlation_id)

    def _route(
        self,
        txn: Transaction,
        machine: SagaMachine,
        correlation_id: str,
        obs: Observation,
        item: Received,
        touched: dict[tuple[str, str], _Touched],
        outcome: Outcome,
    ) -> None:
        known = touched.get((machine.name, correlation_id))
        instance = known.instance if known is not None else txn.get(machine.name, correlation_id)
        if instance is not None:
            self._record(machine, instance, obs, item.redelivered, touched, outcome, known)
            return
        outcome.changed = True
        if machine.is_start(obs.type):
            instance = machine.begin(correlation_id, obs)
            for orphan, alerted in txn.take_orphans(machine.name, correlation_id):
                machine.receive(instance, orphan)
                reported = orphan_alert(machine, correlation_id, orphan).event_id
                if alerted and reported not in instance.alerted:  # not to be reported again
                    instance.note_alerted(reported)
            touched[(machine.name, correlation_id)] = _Touched(machine, instance, [], outcome)
            return
        self._buffer(txn, machine, correlation_id, obs, item.redelivered)

    @staticmethod
    def _buffer(
        txn: Transaction,
        machine: SagaMachine,
        correlation_id: str,
        obs: Observation,
        redelivered: bool,
    ) -> None:
        """Keep an event whose instance has not started, to adopt it when the start comes."""
        known = txn.find_orphan(machine.name, correlation_id, obs.key)
        if known is None:
            txn.add_orphan(machine.name, correlation_id, obs, obs.key)
        elif not is_redelivery(known.delivery or "", obs.delivery, redelivered):
            # a second message with the same event: kept, to be reported as a duplicate
            txn.add_orphan(machine.name, correlation_id, obs, f"{obs.key}\x1fduplicate")

    @staticmethod
    def _record(
        machine: SagaMachine,
        instance: Instance,
        obs: Observation,
        redelivered: bool,
        touched: dict[tuple[str, str], _Touched],
        outcome: Outcome,
        known: _Touched | None = None,
    ) -> None:
        """Record ``obs`` in ``instance`` (``known``: its entry in ``touched``, if there)."""
        if not machine.receive(instance, obs, redelivered):
            return
        outcome.changed = True
        if known is None:
            key = (machine.name, instance.correlation_id)
            known = touched.get(key)
            if known is None:
                touched[key] = _Touched(machine, instance, [instance.timeline[-1]], outcome)
                return
        known.new.append(instance.timeline[-1])
        known.outcome = outcome

    @staticmethod
    def _judge_touched(
        txn: Transaction, touched: dict[tuple[str, str], _Touched], watermark: datetime | None
    ) -> None:
        """Judge and write each touched instance once; its alerts go to the outbox."""
        for item in touched.values():
            step = item.machine.judge(item.instance, watermark, item.new)
            txn.put(item.instance)
            if step._alerts:
                txn.add_alerts(step._alerts)
            item.outcome.merge(step)

    def tick(self, store: SagaStore, watermark: datetime) -> Outcome:
        """Judge every instance that waits for ``watermark`` (a deadline, a held alert) and
        report orphans whose time it passed; persisted, alerting once."""
        outcome = Outcome()
        machines = self.machines  # (a saga no longer defined: its instances are left alone)
        due = [key for key in store.due(watermark) if key[0] in machines]
        size = min(TICK_BATCH, instances_per_transaction(store) or TICK_BATCH)
        for start in range(0, len(due), size):
            outcome.merge(self._judge_due(store, due[start : start + size], watermark))
        outcome.merge(self._report_orphans(store, watermark))
        return outcome

    def _judge_due(
        self, store: SagaStore, keys: list[tuple[str, str]], watermark: datetime
    ) -> Outcome:
        """Judge the instances of ``keys`` at ``watermark`` in one transaction, as a batch of
        events is applied (one per instance cost a commit each: after a catch-up, the first
        tick judges every instance whose alert waited for the watermark)."""
        outcome = Outcome()
        with store.transaction() as txn:
            txn.prefetch(keys)
            for saga, correlation_id in keys:
                instance = txn.get(saga, correlation_id)
                if instance is None:
                    continue
                step = self.machines[saga].judge(instance, watermark)
                txn.put(instance)
                outcome.merge(step)
            txn.add_alerts(outcome.alerts)  # to the outbox in the same order, in one go
        return outcome

    def _report_orphans(self, store: SagaStore, watermark: datetime) -> Outcome:
        outcome = Outcome()
        reported, dropped = [], []
        ids = set()
        for saga, correlation_id, key, obs in store.unreported_orphans(watermark):
            machine = self.machines.get(saga)
            if machine is None:
                continue
            if machine.role(obs.type) == "unknown":  # no start before it: not this saga's
                dropped.append((saga, correlation_id, key))
                continue
            alert = orphan_alert(machine, correlation_id, obs)
            if alert.event_id not in ids:  # a duplicate copy waits too, as the same orphan
                ids.add(alert.event_id)
                outcome.alerts.append(alert)
            reported.append((saga, correlation_id, key))
        if reported or dropped:
            with store.transaction() as txn:
                txn.add_alerts(outcome.alerts)
                txn.mark_orphans_reported(reported)
                txn.drop_orphans(dropped)
            outcome.changed = True
        return outcome
