"""The saga state machine: a fold over one instance's events, in the order they happened.

Nothing here reads a clock or does I/O. An instance keeps its timeline (each event with the time
it happened and the time the monitor received it); the machine derives everything else from it by
replaying the events sorted by their own times, and judges deadlines against a *watermark*: the
event time up to which the monitor knows it has seen every event. Hence:

* the same events give the same instance whatever order they were delivered in (brokers do not
  order events across topics), after a restart, and when several monitors share the work;
* a deadline is a verdict only once the watermark has passed it, so a monitor that is behind (a
  backlog, a restart, a partition still leased by a dead member) holds its verdicts instead of
  judging what it has not seen yet as overdue;
* a step that happened after its deadline is ``late`` whenever it is delivered, and one that
  happened in time is not, however late it is delivered;
* alerts are derived too, each with the event time it speaks for; one is handed out when the
  watermark passes that time, once, with an id that depends only on what it says.

States: ``running`` (started, nothing terminal yet); ``completed`` (a complete event);
``compensating`` (a fail event, waiting for the compensations of the steps done before it);
``compensated`` (all of those seen, or a compensated event); ``failed`` (a fail event with nothing
to compensate); ``stuck`` (a deadline passed while running or compensating: the instance keeps what
it waits for, and a late event moves it on). The compensation ledger: each step done before the
failure owes its compensation until it is seen, even after a compensated event closed the saga; a
saga that closed owing one gets ``compensation_missing`` when it does not come in time.

The machine lives in :mod:`~saga_monitor.machine.core` (:class:`SagaMachine`: roles, recording
events, judging an instance and releasing its alerts), :mod:`~saga_monitor.machine.fold` (one
pass over an instance's events, which a later event can carry on from) and
:mod:`~saga_monitor.machine.alerts` (what alerts say about events).
"""

from saga_monitor.machine.alerts import event_info as event_info
from saga_monitor.machine.alerts import orphan_alert as orphan_alert
from saga_monitor.machine.core import Outcome, SagaMachine
from saga_monitor.machine.core import is_redelivery as is_redelivery

__all__ = ["Outcome", "SagaMachine"]
