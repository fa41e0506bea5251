"""``choreo demo``: the order-fulfilment choreography on the embedded broker, summarised.

Runs :mod:`choreo.demo_services` against a fresh broker file in ``--dir`` (or any ``--broker``),
places the orders, follows every order's events with an observer group and prints what
happened: outcomes by count, stuck orders, dead letters, and the commands to look closer.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from broker import Bus, Event, Policy, Retry
from broker.observability import configure_logging
from choreo.console import out_console, run
from choreo.demo_services import ORDER_TOPICS, Services, order_payload

__all__ = ["run_demo"]

TERMINAL = {"order.shipped": "completed", "order.cancelled": "compensated"}


class _Observer:
    """Follows every order's events, as a passive monitor would."""

    def __init__(self) -> None:
        self.types: Counter[str] = Counter()
        self.timelines: dict[str, list[str]] = {}
        self.outcome: dict[str, str] = {}
        self.last_event = time.monotonic()

    async def __call__(self, event: Event) -> None:
        self.last_event = time.monotonic()
        self.types[event.type] += 1
        order = str(event.data.get("orderId", "?")) if isinstance(event.data, dict) else "?"
        self.timelines.setdefault(order, []).append(event.type)
        if event.type in TERMINAL:
            self.outcome[order] = TERMINAL[event.type]


def run_demo(*, broker: str | None, orders: int, workdir: str) -> None:
    """Entry point of ``choreo demo``."""
    configure_logging("ERROR")  # the demo tells its own story; handler warnings would drown it
    directory = Path(workdir)
    if broker is None:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
        broker = f"sqlite:///{directory}/broker.db?poll_interval=0.02"
    run(_demo(broker, orders))


async def _demo(url: str, orders: int) -> None:
    policy = Policy(retry=Retry(max_attempts=3, initial_delay=0.05, max_delay=0.2))
    buses: list[Bus] = []

    def make_bus(name: str) -> Bus:
        bus = Bus(url, source=name, policy=policy)
        buses.append(bus)
        return bus

    observer = _Observer()
    try:
        watch = await make_bus("demo-observer").start()
        await watch.subscribe(list(ORDER_TOPICS), observer, group="demo-observer")
        await Services().start(make_bus)
        shop = await make_bus("order-service").start()
        await _place_orders(shop, observer, orders)
        dead = await watch.dead_letters("orders.dlq")
    finally:
        await asyncio.gather(*(bus.stop() for bus in buses))
    _summarise(observer, orders, dead, url)


async def _place_orders(shop: Bus, observer: _Observer, orders: int) -> None:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out_console, transient=False) as progress:
        placing = progress.add_task("placing orders", total=orders)
        settled = progress.add_task("orders settled", total=orders)
        for number in range(1, orders + 1):
            data = order_payload(number)
            await shop.publish(
                "orders",
                type="order.placed",
                data=data,
                key=data["orderId"],
                correlation_id=data["orderId"],
            )
            progress.advance(placing)
            progress.update(settled, completed=len(observer.outcome))
        while time.monotonic() - observer.last_event < 1.5:
            progress.update(settled, completed=len(observer.outcome))
            await asyncio.sleep(0.1)
        progress.update(settled, completed=len(observer.outcome))


def _summarise(observer: _Observer, orders: int, dead: list[Event], url: str) -> None:
    states: Counter[str] = Counter()
    stuck = []
    for number in range(1, orders + 1):
        order = f"order-{number:04d}"
        timeline = observer.timelines.get(order, [])
        state = observer.outcome.get(order)
        if state is None:
            state = "dead-lettered" if timeline == ["order.placed"] else "stuck"
            if state == "stuck":
                stuck.append((order, timeline[-1] if timeline else "-"))
        states[state] += 1
    table = Table("outcome", "orders", title=f"{orders} orders on {url}")
    for state, count in states.most_common():
        table.add_row(state, str(count))
    out_console.print(table)
    events = Table("event type", "count")
    for kind, count in sorted(observer.types.items()):
        events.add_row(kind, str(count))
    out_console.print(events)
    if stuck:
        out_console.print(
            f"[yellow]{len(stuck)} stuck[/] (waiting for order.shipped): "
            + ", ".join(o for o, _ in stuck[:8])
        )
    out_console.print(
        f"[red]{len(dead)} dead letter(s)[/] in orders.dlq: "
        + ", ".join(f"{e.data.get('orderId')} ({e.extensions.get('dlqerror')})" for e in dead[:3])
    )
    plain_url = url.split("?", 1)[0]
    broker = f" --broker '{plain_url}'"
    out_console.print("\nExplore further:")
    out_console.print(f"  choreo dlq ls orders{broker}")
    out_console.print(f"  choreo topics ls{broker}")
    out_console.print(
        f"  choreo subscribe orders --from-beginning --group explore --count 5{broker}"
    )
