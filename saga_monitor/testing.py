"""A saga monitor inside a :class:`broker.testing.ChoreoKit`, on the kit's virtual clock.

async with ChoreoKit() as kit:
    monitor = await start_monitor(kit, parse_definitions(SAGAS))
    ...                                    # the services publish
    await kit.advance(timedelta(hours=2))  # deadlines pass: verdicts and alerts
    assert "stuck" == monitor.store.get("order-fulfilment", "o-1").state
"""

from __future__ import annotations

from broker.testing import ChoreoKit
from saga_monitor.definitions import Definitions
from saga_monitor.monitor import SagaMonitor
from saga_monitor.store import SagaStore, open_saga_store

__all__ = ["start_monitor"]


async def start_monitor(
    kit: ChoreoKit,
    definitions: Definitions,
    *,
    store: SagaStore | None = None,
    alerts_topic: str | None = "saga.alerts",
    tick_interval: float = 10.0,
    max_delay: float = 1.0,
) -> SagaMonitor:
    """A started :class:`SagaMonitor` on its own bus of ``kit`` (source ``saga-monitor``),
    with a memory store unless given one, following ``kit.clock``: its timer ticks every
    ``tick_interval`` virtual seconds, and a deadline is judged at the first tick after the
    watermark (virtual now minus ``max_delay``) passed it, so a verdict comes at most
    ``max_delay + tick_interval`` after its deadline (a production monitor ticks every second;
    ten keeps an advance of hours fast). The kit stops it when it closes."""
    monitor = SagaMonitor(
        definitions,
        kit.bus("saga-monitor"),
        store if store is not None else open_saga_store("memory://"),
        alerts_topic=alerts_topic,
        clock=kit.clock,
        tick_interval=tick_interval,
        max_delay=max_delay,
    )
    await monitor.start()
    kit.on_close(monitor.stop)
    return monitor
