"""What the saga machine's alerts say about events: the orphan alert and the event's facts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.envelope import format_time
from saga_monitor.model import Alert, Anomaly, Observation

if TYPE_CHECKING:
    from saga_monitor.machine.core import SagaMachine


def orphan_alert(machine: SagaMachine, correlation_id: str, obs: Observation) -> Alert:
    """The alert for an event of ``machine``'s saga whose instance had not started."""
    anomaly = Anomaly(
        "orphan",
        obs.type,
        obs.id,
        obs.source,
        obs.time,
        f"no {' or '.join(machine.definition.start)} seen for correlation id {correlation_id}",
    )
    data = {
        "saga": machine.name,
        "correlation_id": correlation_id,
        "state": None,
        "anomaly": anomaly.to_dict(),
        "event": event_info(obs),
    }
    return Alert("saga.anomaly", machine.name, correlation_id, data)


def event_info(obs: Observation) -> dict[str, Any]:
    """What an alert says about the event behind it."""
    return {"type": obs.type, "id": obs.id, "source": obs.source, "time": format_time(obs.time)}
