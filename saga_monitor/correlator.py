"""The correlator: routes each event to the saga instances it belongs to, inside one transaction.

An event belongs to every saga whose definition names its type (one event may start or advance
several saga types); its correlation id is read the way each saga says. An event of a type no
saga names is still recorded as ``unexpected`` on any live instance with its correlation id.
An event whose instance has not started is buffered as an ``orphan`` and applied when the start
event arrives (brokers do not order events across topics).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from broker.envelope import Event
from saga_monitor.definitions import Definitions, SagaDefinition
from saga_monitor.machine import Outcome, SagaMachine
from saga_monitor.model import Instance, Observation
from saga_monitor.store import Store, Transaction

__all__ = ["Correlator"]


class Correlator:
    """Applies events and the clock to the instances in a :class:`~saga_monitor.store.Store`."""

    def __init__(
        self, definitions: Definitions | Iterable[SagaDefinition], *, run: str = ""
    ) -> None:
        sagas = definitions.sagas if isinstance(definitions, Definitions) else tuple(definitions)
        self.machines = {saga.name: SagaMachine(saga) for saga in sagas}
        self._by_type: dict[str, list[SagaMachine]] = {}
        for machine in self.machines.values():
            for event_type in sorted(machine.types):
                self._by_type.setdefault(event_type, []).append(machine)
        #: This monitor run: a source+id applied by an earlier run is a redelivery, not a duplicate.
        self.run = run
        #: Events of a known type that carried no correlation id (counted, then ignored).
        self.uncorrelated = 0

    def knows(self, event_type: str) -> bool:
        """Whether some saga names ``event_type``."""
        return event_type in self._by_type

    def apply(self, store: Store, event: Event, *, topic: str | None, now: datetime) -> Outcome:
        """Apply ``event`` to every instance it belongs to, in one store transaction."""
        obs = Observation.from_event(event, topic=topic, now=now)
        with store.transaction() as txn:
            outcome = self.apply_in(txn, event, obs)
            if outcome.alerts:
                txn.add_alerts(outcome.alerts)
        return outcome

    def apply_many(
        self, store: Store, items: list[tuple[Event, str | None]], *, now: datetime
    ) -> list[Outcome]:
        """Apply several events in one transaction (group commit); one outcome per event."""
        outcomes = []
        with store.transaction() as txn:
            for event, topic in items:
                obs = Observation.from_event(event, topic=topic, now=now)
                outcome = self.apply_in(txn, event, obs)
                if outcome.alerts:
                    txn.add_alerts(outcome.alerts)
                outcomes.append(outcome)
        return outcomes

    def apply_in(self, txn: Transaction, event: Event, obs: Observation) -> Outcome:
        """Apply ``event`` within an open transaction (for callers batching several)."""
        outcome = Outcome()
        machines = self._by_type.get(event.type)
        if machines is None:
            for machine in self.machines.values():
                correlation_id = machine.definition.correlation.extract(event)
                instance = txn.get(machine.name, correlation_id) if correlation_id else None
                if instance is not None:
                    outcome.merge(self._apply_one(txn, machine, instance, obs))
            return outcome
        for machine in machines:
            correlation_id = machine.definition.correlation.extract(event)
            if correlation_id is None:
                self.uncorrelated += 1
                continue
            outcome.merge(self._route(txn, machine, correlation_id, obs))
        return outcome

    def _route(
        self, txn: Transaction, machine: SagaMachine, correlation_id: str, obs: Observation
    ) -> Outcome:
        instance = txn.get(machine.name, correlation_id)
        if instance is not None:
            return self._apply_one(txn, machine, instance, obs)
        if machine.is_start(obs.type):
            instance, outcome = machine.begin(correlation_id, obs, self.run)
            orphans = txn.take_orphans(machine.name, correlation_id)
            if orphans:
                outcome.merge(machine.adopt(instance, orphans, self.run))
            txn.put(instance)
            return outcome
        if txn.add_orphan(machine.name, correlation_id, obs):
            return machine.orphan(correlation_id, obs)
        return Outcome()

    def _apply_one(
        self, txn: Transaction, machine: SagaMachine, instance: Instance, obs: Observation
    ) -> Outcome:
        outcome = machine.apply(instance, obs, self.run)
        if outcome.changed:
            txn.put(instance)
        return outcome

    def tick(self, store: Store, now: datetime) -> Outcome:
        """Mark every instance whose deadline passed by ``now`` stuck (persisted, alerting once)."""
        outcome = Outcome()
        for saga, correlation_id in store.due(now):
            machine = self.machines.get(saga)
            if machine is None:
                continue  # a saga no longer defined: leave its instances alone
            with store.transaction() as txn:
                instance = txn.get(saga, correlation_id)
                if instance is None:
                    continue
                step = machine.tick(instance, now)
                if step.changed:
                    txn.put(instance)
                    txn.add_alerts(step.alerts)
            outcome.merge(step)
        return outcome
