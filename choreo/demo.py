"""``choreo demo``: the order-fulfilment choreography, end to end, on the embedded default.

Everything a production setup has, in one process and one folder (``--dir``):

* four services (:mod:`choreo.demo_services`) reacting to each other's events on the broker
  (the embedded SQLite file, or ``--broker URL``);
* the order service writes its events through a transactional outbox in its own SQLite
  database, and the outbox relay publishes what committed;
* the ``orders`` topic is bound to a JSON Schema in the embedded schema registry: every
  publisher validates against it and every consumer decodes with it;
* a passive saga monitor correlates the events into saga instances, with deadlines, so stalled
  orders become *stuck* and declined payments *compensate*.

At the end it prints the saga states by count, the stuck instances (and, for one stuck because
a service dead-lettered its event, that dead letter), who owes what, the dead letters, and the
commands to look closer.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections import Counter
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from broker import Bus, Event, Policy, Retry, deadletter
from broker.envelope import format_time
from broker.observability import configure_logging
from broker.urls import mask_url
from choreo.console import out_console, run
from choreo.demo_services import OrderStore, Services, order_payload
from connectors.runtime import build_relay
from saga_monitor import Definitions, Instance, parse_definitions
from saga_monitor import open_saga_store as open_store
from saga_monitor.board import build_board
from saga_monitor.dead_letters import DeadLetterLinker
from saga_monitor.monitor import SagaMonitor
from schemas import RegistryClient, SchemaCodec

__all__ = ["ORDER_SCHEMA", "run_demo"]

ORDER_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Order",
    "type": "object",
    "properties": {
        "orderId": {"type": "string", "pattern": "^order-[0-9]{4}$"},
        "customer": {"type": "string"},
        "amount": {"type": "number", "minimum": 0},
        "items": {"type": "integer", "minimum": 1},
        "poison": {"type": "boolean"},
    },
    "required": ["orderId", "customer", "amount", "items"],
}
SETTLED = ("completed", "compensated", "failed", "stuck")
#: Stuck order ids listed before "…".
SHOWN = 6


def run_demo(*, broker: str | None, orders: int, workdir: str) -> None:
    """Entry point of ``choreo demo``."""
    configure_logging("ERROR")  # the demo tells its own story; handler warnings would drown it
    directory = Path(workdir)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    url = broker or f"sqlite:///{directory}/broker.db?poll_interval=0.02"
    run(Demo(url, directory).run(orders))


def _error_of(event: Event) -> str:
    return (deadletter.info(event) or deadletter.NOT_DEAD).error


class Demo:
    """The demo's moving parts, started and stopped together."""

    def __init__(self, url: str, directory: Path) -> None:
        self.url = url
        self.directory = directory
        self.buses: list[Bus] = []
        self.registry = RegistryClient.from_url(f"sqlite:///{directory}/registry.db")
        self.codec = SchemaCodec(self.registry, {"orders": "orders-value"})
        self.policy = Policy(retry=Retry(max_attempts=3, initial_delay=0.05, max_delay=0.2))
        self._dlq = self.policy.dead_letter.topic_for("orders", "")
        self.store_url = f"sqlite:///{directory}/sagas.db"
        self.store = open_store(self.store_url)
        self.orders = OrderStore(str(directory / "orders.db"))
        self.started = format_time(datetime.now(UTC))
        self.definitions: Definitions | None = None

    def bus(self, name: str) -> Bus:
        bus = Bus(self.url, source=name, policy=self.policy, codec=self.codec)
        self.buses.append(bus)
        return bus

    async def run(self, count: int) -> None:
        await self.registry.register("orders-value", json.dumps(ORDER_SCHEMA), "JSON")
        definitions = parse_definitions(
            resources.files("choreo").joinpath("demo_sagas.yaml").read_text(),
            file="demo_sagas.yaml",
        )
        self.definitions = definitions
        relay = build_relay(
            f"sqlite:///{self.directory}/orders.db",
            self.url,
            route="{aggregatetype}",
            source="order-service",
            correlation_field="orderId",
            codec=self.codec,
        )
        monitor = SagaMonitor(
            definitions, await self.bus("saga-monitor").start(), self.store, tick_interval=0.2
        )
        relay_task: asyncio.Task[object] | None = None
        try:
            await monitor.start()
            await Services(self.orders).start(self.bus)
            relay_task = asyncio.create_task(relay.run())
            await self._place_orders(count)
            dead = [  # only this run's: a real broker keeps earlier runs' dead letters
                e
                for e in await self.buses[0].dead_letters(self._dlq, limit=100_000)
                if (deadletter.info(e) or deadletter.NOT_DEAD).time >= self.started
            ]
            await self._link_dead_letters(definitions, bool(dead))
        finally:
            relay.stop()
            if relay_task is not None:
                await relay_task
            await monitor.stop()
            await asyncio.gather(*(bus.stop() for bus in self.buses))
            await self.registry.close()
        self._summarise(count, dead)
        self.store.close()
        self.orders.close()

    async def _link_dead_letters(self, definitions: Definitions, any_dead: bool) -> None:
        """Record which stuck sagas a dead letter explains (waiting a little for the monitor
        to judge the order behind a dead letter stuck)."""
        linker = DeadLetterLinker(definitions, self.buses[0], self.store)
        for _ in range(50):  # 10 s at most
            if await linker.link() or not any_dead:
                return
            await asyncio.sleep(0.2)

    def _settled(self) -> int:
        counts = Counter(state for (_, state), n in self.store.counts().items() for _ in range(n))
        return sum(counts[state] for state in SETTLED)

    async def _place_orders(self, count: int) -> None:
        columns = (
            TextColumn("{task.description:<15}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=out_console) as progress:
            placing = progress.add_task("orders placed", total=count)
            settled = progress.add_task("sagas settled", total=count)
            for number in range(1, count + 1):
                self.orders.place(order_payload(number))
                progress.advance(placing)
                if number % 10 == 0:
                    await asyncio.sleep(0)  # let the relay and the services run
            deadline = time.monotonic() + 60
            while self._settled() < count and time.monotonic() < deadline:
                progress.update(settled, completed=self._settled())
                await asyncio.sleep(0.2)
            progress.update(settled, completed=self._settled())

    def _stuck(self, stuck: list[Instance]) -> None:
        """The stuck orders (the first few, then "…"), the dead letters behind some, and
        who owes what."""
        waits = Counter(", ".join(i.expected) or "-" for i in stuck)
        ids = [i.correlation_id for i in stuck[:SHOWN]] + (["…"] if len(stuck) > SHOWN else [])
        out_console.print(
            Text.assemble(
                (f"{len(stuck)} stuck", "yellow"),
                ": " + ", ".join(ids),
                f" (waiting for {', '.join(waits)})",
            )
        )
        causes = self.store.causes([(i.saga, i.correlation_id) for i in stuck])
        for key in sorted(causes):
            out_console.print(Text.assemble("  ", (str(causes[key]["text"]), "red")))
        board, _ = build_board(self.store, self.definitions, datetime.now(UTC))
        owing = [f"{r.service} ({r.stuck} stuck)" for r in board if r.stuck]
        if owing:
            out_console.print(Text("who owes what: " + ", ".join(owing)))

    def _summarise(self, count: int, dead: list[Event]) -> None:
        states: Counter[str] = Counter()
        for (_, state), n in self.store.counts().items():
            states[state] += n
        shown_url = mask_url(self.url.split("?", 1)[0])
        table = Table("saga state", "instances", title=f"{count} orders on {shown_url}")
        for state, n in states.most_common():
            table.add_row(state, str(n))
        out_console.print(table)
        stuck = sorted(
            self.store.instances(state="stuck", limit=1000), key=lambda i: i.correlation_id
        )
        if stuck:
            self._stuck(stuck)
        out_console.print(
            Text.assemble(
                (f"{len(dead)} dead letter(s)", "red"),
                f" in {self._dlq}: ",
                ", ".join(
                    f"{e.id} ({(deadletter.info(e) or deadletter.NOT_DEAD).error})"
                    for e in dead[:3]
                ),
            )
        )
        out_console.print(f"orders table: {self.orders.statuses()}")
        broker = f" --broker '{shown_url}'"
        store = f" --store {self.store_url}"
        example = stuck[0].correlation_id if stuck else "order-0011"
        out_console.print("\nExplore further:")
        for line in (
            f"choreo saga ls --state stuck{store}",
            f"choreo saga show {example}{store}",
            f"choreo saga owes{store}",
            f'choreo saga ack {example} --note "looking into it"{store}',
            f"choreo dlq ls orders{broker}",
            f"choreo schema ls --registry sqlite:///{self.directory}/registry.db",
            f"choreo saga serve{store}   # then open http://127.0.0.1:8000",
        ):
            out_console.print(f"  {line}")
