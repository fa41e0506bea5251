"""Building blocks for the saga monitor tests: events at fixed times and the example saga."""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from broker import Event
from saga_monitor import Definitions, load_definitions

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).parents[2] / "saga_monitor" / "examples" / "order-fulfilment.yaml"
_ids = itertools.count(1)


def at(seconds: float) -> datetime:
    """T0 plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def event(
    type_: str,
    corr: str | None = "o-1",
    seconds: float = 0.0,
    *,
    source: str = "test",
    id_: str | None = None,
    data: Any = None,
    **extensions: Any,
) -> Event:
    """A CloudEvent of ``type_`` correlated by ``corr``, happening at T0 + ``seconds``."""
    ext = dict(extensions)
    if corr is not None:
        ext["correlationid"] = corr
    return Event(
        type=type_,
        source=source,
        id=id_ or f"e{next(_ids)}",
        time=at(seconds),
        data=data,
        extensions=ext,
    )


def example() -> Definitions:
    """The order-fulfilment saga of DESIGN.md (payment 30s, inventory 30s, shipping 2h)."""
    return load_definitions(EXAMPLE)


class ManualClock:
    """A clock that moves only when the test says so."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def traceparent_of(correlation_id: str) -> str:
    """The traceparent :func:`populate` gives the events of one instance (one trace each)."""
    digits = hashlib.sha256(correlation_id.encode()).hexdigest()
    return f"00-{digits[:32]}-{digits[32:48]}-01"


def populate(store: Any, base: datetime | None = None) -> None:
    """Store a completed, a compensated, a failed and a stuck order (with hostile data)."""
    from saga_monitor import Correlator

    correlator = Correlator(example())
    start = base or datetime.now(UTC) - timedelta(seconds=120)
    hostile = {"note": "<script>window.pwned = 1</script>", "total": 42}

    def send(type_: str, corr: str, seconds: float, data: Any = None) -> None:
        item = Event(
            type=type_,
            source="shop",
            id=f"{corr}-{type_}",
            time=start + timedelta(seconds=seconds),
            data=data,
            extensions={"correlationid": corr, "traceparent": traceparent_of(corr)},
        )
        correlator.apply(store, item, topic=type_.split(".", 1)[0], now=start)

    for type_, seconds in (
        ("order.placed", 0),
        ("payment.authorized", 2),
        ("inventory.reserved", 5),
        ("order.shipped", 9),
    ):
        send(type_, "order-ok", seconds)
    for type_, seconds in (
        ("order.placed", 0),
        ("payment.authorized", 3),
        ("inventory.reserved", 6),
        ("payment.failed", 8),
        ("inventory.released", 20),
        ("payment.refunded", 30),
    ):
        send(type_, "order-comp", seconds)
    send("order.placed", "order-fail", 1)
    send("payment.failed", "order-fail", 4)
    send("order.placed", "order-stuck", 80, hostile)  # stuck since 112 s: recently
    send("payment.authorized", "order-stuck", 82)
    send("payment.authorized", "order-stuck", 82)  # the same event again: a duplicate
    correlator.tick(store, datetime.now(UTC))


def stuck_again(store: Any, correlation_id: str = "order-stuck") -> None:
    """Move :func:`populate`'s stuck order on (its inventory reservation arrives, late) and
    let it get stuck again, on shipping (a watermark three hours on)."""
    from saga_monitor import Correlator

    (instance,) = store.instances(correlation_id=correlation_id)
    late = instance.started + timedelta(seconds=40)  # inventory was due 30 s after payment
    reserved = Event(
        type="inventory.reserved",
        source="stock",
        id=f"{correlation_id}-late-reservation",
        time=late,
        extensions={"correlationid": correlation_id},
    )
    correlator = Correlator(example())
    correlator.apply(store, reserved, topic="inventory", now=late)
    correlator.tick(store, late + timedelta(hours=3))  # shipping was due 2 h after that
