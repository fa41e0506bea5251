"""``choreo publish`` and ``choreo subscribe``: parse, build a Bus, call, render."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from broker.bus import Bus
from broker.envelope import Event
from broker.errors import ConfigurationError
from broker.observability import serve_metrics
from broker.policies import CircuitBreaker, MemoryInbox, Policy, Retry, SQLiteInbox
from choreo.commands.options import BrokerOption, OutputOption, check_output, open_bus
from choreo.console import fail, out_console, parse_duration, print_json, run
from choreo.errors import EXIT_USAGE

__all__ = ["publish", "subscribe"]


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
    check_output(output)
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
        async with open_bus(broker) as bus:
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
    check_output(output)
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
    run(runner.consume(open_bus(broker, policy=policy), topics, group, from_beginning, idle))


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
