"""``choreo publish``, ``subscribe``, ``topics`` and ``dlq``: parse, build a Bus, call, render."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from broker.bus import Bus
from broker.envelope import Event
from broker.errors import ConfigurationError, TopicNotFoundError
from broker.observability import serve_metrics
from broker.policies import CircuitBreaker, MemoryInbox, Policy, Retry, SQLiteInbox
from choreo.config import setting
from choreo.console import EXIT_USAGE, fail, out_console, parse_duration, print_json, run

__all__ = ["dlq_app", "publish", "subscribe", "topics_app"]

BrokerOption = typer.Option(
    None, "--broker", "-b", help="Broker URL (env CHOREO_BROKER_URL; default the embedded SQLite)."
)
OutputOption = typer.Option("table", "--output", "-o", help="table or json.")

topics_app = typer.Typer(help="List and create topics.", no_args_is_help=True)
dlq_app = typer.Typer(help="Inspect, replay and purge dead letters.", no_args_is_help=True)


def _bus(broker: str | None, **options: Any) -> Bus:
    return Bus(setting("broker_url", broker), **options)


def _check_output(output: str) -> None:
    if output not in ("table", "json"):
        fail(f"--output must be table or json, not {output!r}", EXIT_USAGE)


def _read_data(data: str | None) -> Any:
    """JSON text, ``@file`` (JSON) or ``@-`` (stdin) into a Python value."""
    if data is None:
        return None
    source = "--data"
    if data.startswith("@"):
        name = data[1:]
        source = "stdin" if name == "-" else name
        try:
            data = sys.stdin.read() if name == "-" else Path(name).read_text()
        except OSError as exc:
            fail(f"cannot read {name!r} for --data: {exc.strerror or exc}", EXIT_USAGE)
    try:
        return json.loads(data)
    except ValueError as exc:
        fail(f"{source} is not valid JSON ({exc}); quote strings as '\"text\"'", EXIT_USAGE)


def _parse_headers(headers: list[str]) -> dict[str, str | int | bool]:
    out: dict[str, str | int | bool] = {}
    for item in headers:
        name, sep, value = item.partition("=")
        if not sep or not name:
            fail(f"--header {item!r} must look like name=value", EXIT_USAGE)
        out[name.strip().lower()] = value
    return out


def publish(
    topic: str = typer.Argument(..., help="Topic to publish to."),
    type_: str = typer.Option(..., "--type", "-t", help="CloudEvents type, e.g. order.placed."),
    data: str | None = typer.Option(None, "--data", "-d", help="JSON, @file or @- for stdin."),
    source: str = typer.Option("choreo-cli", "--source", help="CloudEvents source."),
    key: str | None = typer.Option(None, "--key", "-k", help="Partition key (ordering)."),
    correlation_id: str | None = typer.Option(None, "--correlation-id", "-c"),
    ttl: str | None = typer.Option(None, "--ttl", help="Time to live, e.g. 30s."),
    header: list[str] = typer.Option([], "--header", "-H", help="Extension name=value."),
    subject: str | None = typer.Option(None, "--subject"),
    event_id: str | None = typer.Option(None, "--id", help="Event id (default: a new UUID)."),
    broker: str | None = BrokerOption,
    output: str = OutputOption,
) -> None:
    """Publish one CloudEvent; prints its id once the broker durably accepted it."""
    _check_output(output)
    value = _read_data(data)
    extensions = _parse_headers(header)
    seconds = parse_duration(ttl, option="--ttl") if ttl else None
    try:
        event = Event(type=type_, source=source, data=value, subject=subject, extensions=extensions)
        if event_id is not None:
            event = event.replace(id=event_id)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)

    async def go() -> Event:
        async with _bus(broker) as bus:
            return await bus.publish(
                topic, event, key=key, correlation_id=correlation_id, ttl=seconds
            )

    sent = run(go())
    if output == "json":
        print_json(sent.to_dict())
    else:
        out_console.print(f"published {sent.type} [bold]{sent.id}[/] to {topic}")


def subscribe(
    topics: list[str] = typer.Argument(..., help="Topic(s) to read."),
    group: str = typer.Option("choreo-cli", "--group", "-g", help="Consumer group."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="New group reads history."),
    count: int | None = typer.Option(None, "--count", "-n", help="Exit after N events."),
    timeout: str | None = typer.Option(None, "--timeout", help="Exit after this long idle."),
    exec_: str | None = typer.Option(None, "--exec", help="Command fed each event's JSON."),
    max_attempts: int = typer.Option(3, "--max-attempts", help="Handler attempts before DLQ."),
    retry_delay: str = typer.Option("100ms", "--retry-delay", help="First retry delay."),
    max_delay: str = typer.Option("30s", "--max-delay", help="Longest retry delay."),
    on_expired: str = typer.Option("dlq", "--on-expired", help="dlq or drop."),
    breaker: int | None = typer.Option(None, "--breaker", help="Pause after N dead letters."),
    breaker_cooldown: str = typer.Option("30s", "--breaker-cooldown"),
    dedup: bool = typer.Option(False, "--dedup", help="Skip events already handled (source+id)."),
    inbox: str | None = typer.Option(None, "--inbox", help="SQLite file for a durable --dedup."),
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="Serve /metrics here."),
    broker: str | None = BrokerOption,
    output: str = OutputOption,
) -> None:
    """Handle events as they arrive: print them, or pipe each to --exec CMD."""
    _check_output(output)
    if on_expired not in ("dlq", "drop"):
        fail(f"--on-expired must be dlq or drop, not {on_expired!r}", EXIT_USAGE)
    try:
        policy = Policy(
            retry=Retry(
                max_attempts=max_attempts,
                initial_delay=parse_duration(retry_delay, option="--retry-delay"),
                max_delay=parse_duration(max_delay, option="--max-delay"),
            ),
            on_expired=on_expired,  # type: ignore[arg-type]
            breaker=CircuitBreaker(breaker, parse_duration(breaker_cooldown)) if breaker else None,
            inbox=SQLiteInbox(inbox) if inbox else MemoryInbox() if dedup else None,
        )
    except ConfigurationError as exc:
        fail(str(exc), EXIT_USAGE)
    idle = parse_duration(timeout, option="--timeout") if timeout else None
    if metrics_port is not None:
        serve_metrics(metrics_port)
    runner = _Runner(output, exec_, count)
    run(runner.consume(_bus(broker, policy=policy), topics, group, from_beginning, idle))


class _Runner:
    """The handler of ``choreo subscribe`` and its stop conditions."""

    def __init__(self, output: str, command: str | None, count: int | None) -> None:
        self.output = output
        self.command = command
        self.count = count
        self.handled = 0
        self.done = asyncio.Event()
        self.activity = asyncio.Event()

    async def handle(self, event: Event) -> None:
        self.activity.set()
        if self.command is not None:
            await self._exec(event)
        elif self.output == "json":
            sys.stdout.write(event.to_json() + "\n")
            sys.stdout.flush()
        else:
            shown = json.dumps(event.data, ensure_ascii=False, default=str)
            out_console.print(
                f"{event.time:%H:%M:%S} [bold]{escape(event.type)}[/] {event.id} "
                f"[dim]{escape(event.source)}[/] {escape(shown[:200])}",
                markup=True,
            )
        self.handled += 1
        if self.count is not None and self.handled >= self.count:
            self.done.set()

    async def _exec(self, event: Event) -> None:
        assert self.command is not None
        process = await asyncio.create_subprocess_exec(
            *shlex.split(self.command), stdin=asyncio.subprocess.PIPE
        )
        await process.communicate(event.to_json().encode())
        if process.returncode != 0:
            raise RuntimeError(f"{self.command!r} exited with status {process.returncode}")

    async def consume(
        self, bus: Bus, topics: list[str], group: str, from_beginning: bool, idle: float | None
    ) -> None:
        async with bus:
            await bus.subscribe(topics, self.handle, group=group, from_beginning=from_beginning)
            while not self.done.is_set():
                self.activity.clear()
                waiters = [asyncio.ensure_future(self.done.wait())]
                waiters.append(asyncio.ensure_future(self.activity.wait()))
                finished, pending = await asyncio.wait(
                    waiters, timeout=idle, return_when=asyncio.FIRST_COMPLETED
                )
                for waiter in pending:
                    waiter.cancel()
                if not finished:
                    return


# -- topics ----------------------------------------------------------------------------------


@topics_app.command("ls")
def topics_ls(broker: str | None = BrokerOption, output: str = OutputOption) -> None:
    """List topics with their event counts and groups."""
    _check_output(output)

    async def go() -> list[Any]:
        async with _bus(broker) as bus:
            return await bus.topics()

    infos = run(go())
    if output == "json":
        print_json(
            [
                {
                    "name": t.name,
                    "messages": t.messages,
                    "partitions": t.partitions,
                    "groups": list(t.groups),
                }
                for t in infos
            ]
        )
        return
    table = Table("topic", "events", "partitions", "groups")
    for info in infos:
        table.add_row(info.name, _num(info.messages), _num(info.partitions), ", ".join(info.groups))
    out_console.print(table)


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


@topics_app.command("create")
def topics_create(
    topic: str = typer.Argument(...),
    partitions: int | None = typer.Option(None, "--partitions", "-p"),
    broker: str | None = BrokerOption,
) -> None:
    """Create a topic (idempotent)."""

    async def go() -> None:
        async with _bus(broker) as bus:
            await bus.create_topic(topic, partitions=partitions)

    run(go())
    out_console.print(f"topic {topic} ready")


# -- dead letters ----------------------------------------------------------------------------


def _dlq_name(topic: str) -> str:
    return topic if topic.endswith(".dlq") else f"{topic}.dlq"


@dlq_app.command("ls")
def dlq_ls(
    topic: str | None = typer.Argument(None, help="Topic (or its .dlq); all DLQs if omitted."),
    limit: int = typer.Option(100, "--limit"),
    broker: str | None = BrokerOption,
    output: str = OutputOption,
) -> None:
    """List dead letters with their reasons."""
    _check_output(output)

    async def go() -> list[Event]:
        async with _bus(broker) as bus:
            if topic is not None:
                return await bus.dead_letters(_dlq_name(topic), limit=limit)
            names = [t.name for t in await bus.topics() if t.name.endswith(".dlq")]
            return [e for n in names for e in await bus.dead_letters(n, limit=limit)]

    events = run(go())
    if output == "json":
        print_json([e.to_dict() for e in events])
        return
    table = Table("id", "type", "topic", "group", "reason", "attempts", "error", "dead since")
    for e in events:
        x = e.extensions
        table.add_row(
            e.id,
            e.type,
            str(x.get("dlqtopic", "")),
            str(x.get("dlqgroup", "")),
            str(x.get("dlqreason", "")),
            str(x.get("dlqattempts", "")),
            str(x.get("dlqerror", ""))[:60],
            str(x.get("dlqtime", "")),
        )
    out_console.print(table)


@dlq_app.command("show")
def dlq_show(
    topic: str = typer.Argument(...),
    event_id: str = typer.Argument(..., help="The dead letter's event id."),
    broker: str | None = BrokerOption,
) -> None:
    """Print one dead letter in full (structured CloudEvents JSON)."""

    async def go() -> list[Event]:
        async with _bus(broker) as bus:
            return await bus.dead_letters(_dlq_name(topic), limit=1_000_000)

    found = [e for e in run(go()) if e.id == event_id]
    if not found:
        fail(
            f"no dead letter {event_id} in {_dlq_name(topic)}; list them with: "
            f"choreo dlq ls {topic}"
        )
    sys.stdout.write(json.dumps(found[0].to_dict(), indent=2, ensure_ascii=False) + "\n")


@dlq_app.command("replay")
def dlq_replay(
    topic: str = typer.Argument(...),
    event_id: list[str] = typer.Option([], "--id", help="Replay only these ids."),
    broker: str | None = BrokerOption,
) -> None:
    """Publish dead letters back to their original topic and remove them from the DLQ."""

    async def go() -> int:
        async with _bus(broker) as bus:
            name = _dlq_name(topic)
            if not await bus.dead_letters(name, limit=1):
                raise TopicNotFoundError(f"no dead letters in {name}; see: choreo dlq ls")
            return len(await bus.replay(name, event_id or None))

    out_console.print(f"replayed {run(go())} event(s)")


@dlq_app.command("purge")
def dlq_purge(
    topic: str = typer.Argument(...),
    event_id: list[str] = typer.Option([], "--id", help="Delete only these ids."),
    broker: str | None = BrokerOption,
) -> None:
    """Delete dead letters (all, or the given ids)."""

    async def go() -> int:
        async with _bus(broker) as bus:
            return await bus.purge(_dlq_name(topic), event_id or None)

    out_console.print(f"purged {run(go())} event(s)")
