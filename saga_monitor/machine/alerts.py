"""What the saga machine's alerts say about events (the orphan alert and the event's facts), and
alerts as a fold keeps them between passes (:class:`KeptAlert`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

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


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class KeptAlert(msgspec.Struct, gc=False):
    """An alert as a fold keeps it between passes (see :attr:`_Fold.alerts
    <saga_monitor.machine.fold._Fold.alerts>`): its data as the compact JSON msgspec writes,
    made an :class:`Alert` again (:meth:`alert`) when it is released.

    An alert's data is a dict holding a list (``expected_next``) and dicts: objects the
    garbage collector tracks, kept as long as the instance (a completed instance keeps its
    ``saga.completed`` alert), and walked by every full collection. Bytes are not walked."""

    type: str
    saga: str
    correlation_id: str
    encoded: bytes
    _id: str | None = None

    @property
    def event_id(self) -> str:
        """The alert's id (:attr:`Alert.event_id`), worked out once."""
        if self._id is None:
            self._id = self.alert().event_id
        return self._id

    def alert(self) -> Alert:
        """The alert kept (a new :class:`Alert` equal to it, its id included)."""
        return Alert(self.type, self.saga, self.correlation_id, _decode(self.encoded), self._id)


def kept(alert: Alert | KeptAlert) -> Alert | KeptAlert:
    """``alert`` as a fold keeps it between passes: a :class:`KeptAlert`, or the alert itself
    when msgspec cannot write its data. The machine's alert data is JSON's own values (text,
    None, lists of text, dicts of those: see :func:`event_info`, ``Anomaly.to_dict`` and the
    fold's ``_alert_data``), which come back from JSON equal."""
    if alert.__class__ is not Alert:
        return alert
    assert isinstance(alert, Alert)
    try:
        encoded = _encode(alert.data)
    except (TypeError, ValueError, OverflowError):  # not the machine's: kept as it is
        return alert
    return KeptAlert(alert.type, alert.saga, alert.correlation_id, encoded, alert._id)
