"""``choreo publish`` and ``choreo subscribe``: parse, build a Bus, call, render."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from broker import deadletter
from broker.bus import Bus, Subscriber
from broker.envelope import Event
from broker.errors import ConfigurationError
from broker.policies import CircuitBreaker, MemoryInbox, Policy, Retry, SQLiteInbox
from choreo.commands.options import (
    BrokerOption,
    OutputOption,
    check_output,
    check_topics,
    open_bus,
    port_option,
    start_metrics,
)
from choreo.console import (
    committed,
    fail,
    out_console,
    parse_duration,
    parse_instant,
    print_error,
    print_json,
    reported,
    run,
)
from choreo.errors import EXIT_FAILURE, EXIT_USAGE

__all__ = ["parse_headers", "publish", "read_data", "subscribe"]


def read_data(data: str | None) -> Any:
    """JSON text, ``@file`` (JSON) or ``@-`` (stdin) into a Python value; anything that is not
    UTF-8 JSON (bytes, or a lone surrogate escape such as ``"\\ud800"``) is a usage error."""
    if data is None:
        return None
    source = "--data"
    if data.startswith("@"):
        name = data[1:]
        source = "stdin" if name == "-" else name
        data = _read_text(name, source)
    try:
        value = json.loads(data)
    except ValueError as exc:
        fail(f"{source} is not valid JSON ({exc}); quote strings as '\"text\"'", EXIT_USAGE)
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        fail(f"{source} holds {exc.object[exc.start]!r}, which is not valid Unicode", EXIT_USAGE)
    return value


def _read_text(name: str, source: str) -> str:
    """The UTF-8 text of file ``name`` (``-``: stdin), read as bytes and decoded strictly."""
    try:
        raw = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        fail(f"cannot read {name!r} for --data: {exc.strerror or exc}", EXIT_USAGE)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        fail(
            f"{source} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8",
            EXIT_USAGE,
        )


def parse_headers(headers: list[str]) -> dict[str, str | int | bool]:
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
    delay: str | None = typer.Option(
        None, "--delay", help="Deliver no sooner than this from now, e.g. 30s or 2h."
    ),
    at: str | None = typer.Option(
        None, "--at", help="Deliver no sooner than this time (RFC 3339 with a zone)."
    ),
    broker: str | None = BrokerOption,
    output: str = OutputOption,
) -> None:
    """Publish one CloudEvent; prints its id once the broker durably accepted it."""
    check_output(output)
    check_topics(topic)
    if delay is not None and at is not None:
        raise typer.BadParameter("give --delay or --at, not both")
    wait = parse_duration(delay, option="--delay") if delay is not None else None
    deliver_at = parse_instant(at, option="--at") if at is not None else None
    value = read_data(data)
    extensions = parse_headers(header)
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
                topic,
                event,
                key=key,
                correlation_id=correlation_id,
                ttl=seconds,
                delay=wait,
                deliver_at=deliver_at,
            )

    sent = run(go())
    with committed():  # published: from here on, nothing may change the exit code
        if output == "json":
            print_json(sent.to_dict())
        else:
            out_console.print(
                Text.assemble("published ", sent.type, " ", (sent.id, "bold"), " to ", topic)
            )


def subscribe(
    topics: list[str] = typer.Argument(..., help="Topic(s) to read."),
    group: str = typer.Option("choreo-cli", "--group", "-g", help="Consumer group."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="New group reads history."),
    count: int | None = typer.Option(None, "--count", "-n", help="Exit after N events."),
    timeout: str | None = typer.Option(None, "--timeout", help="Exit after this long idle."),
    exec_: str | None = typer.Option(None, "--exec", help="Command fed each event's JSON."),
    reply: bool = typer.Option(
        False, "--reply", help="Send --exec's stdout (a JSON value) back as the reply to requests."
    ),
    max_attempts: int = typer.Option(3, "--max-attempts", help="Handler attempts before DLQ."),
    retry_delay: str = typer.Option("100ms", "--retry-delay", help="First retry delay."),
    max_delay: str = typer.Option("30s", "--max-delay", help="Longest retry delay."),
    handler_timeout: str | None = typer.Option(
        None, "--handler-timeout", help="Fail an attempt that runs longer, e.g. 30s."
    ),
    on_expired: str = typer.Option("dlq", "--on-expired", help="dlq or drop."),
    breaker: int | None = typer.Option(None, "--breaker", help="Pause after N dead letters."),
    breaker_cooldown: str = typer.Option("30s", "--breaker-cooldown"),
    dedup: bool = typer.Option(False, "--dedup", help="Skip events already handled (source+id)."),
    inbox: str | None = typer.Option(None, "--inbox", help="SQLite file for a durable --dedup."),
    metrics_port: int | None = port_option(None, "--metrics-port", "Serve /metrics here."),
    broker: str | None = BrokerOption,
    output: str = OutputOption,
) -> None:
    """Handle events as they arrive: print them, or pipe each to --exec CMD."""
    check_output(output)
    check_topics(*topics)
    if count is not None and count < 1:
        fail("--count must be at least 1; omit it to read until stopped", EXIT_USAGE)
    command = _command(exec_) if exec_ is not None else None
    if reply and command is None:
        fail("--reply needs --exec CMD: the reply is what CMD prints", EXIT_USAGE)
    if on_expired not in ("dlq", "drop"):
        fail(f"--on-expired must be dlq or drop, not {on_expired!r}", EXIT_USAGE)
    limit = _positive(handler_timeout, "--handler-timeout") if handler_timeout else None
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
            handler_timeout=limit,
        )
    except ConfigurationError as exc:
        fail(str(exc), EXIT_USAGE)
    idle = _positive(timeout, "--timeout") if timeout is not None else None
    with reported():
        bus = open_bus(broker, policy=policy)
    start_metrics(metrics_port)
    runner = _Runner(output, command, count, reply=reply)
    run(runner.consume(bus, topics, group, from_beginning, idle))


def _positive(text: str, option: str) -> float:
    seconds = parse_duration(text, option=option)
    if seconds <= 0:
        fail(f"{option} must be more than 0; omit it for no limit", EXIT_USAGE)
    return seconds


def _command(text: str) -> list[str]:
    """``--exec`` as an argv whose program exists and can be run; anything else is a usage
    error found before consuming (a handler that cannot start would dead-letter every event)."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        fail(
            f"--exec {text!r} cannot be split into a command ({exc}); check its quoting", EXIT_USAGE
        )
    if not argv:
        fail("--exec needs a command, e.g. --exec 'python3 handler.py'", EXIT_USAGE)
    program = shutil.which(argv[0])
    if program is None:
        fail(f"--exec: {_why_not_runnable(argv[0])}", EXIT_USAGE)
    return [program, *argv[1:]]


def _why_not_runnable(program: str) -> str:
    if os.sep not in program:
        return f"{program!r} is not found on PATH; give its path or install it"
    if os.path.isdir(program):
        return f"{program!r} is a directory, not a program"
    if not os.path.exists(program):
        return f"{program!r} does not exist"
    return f"{program!r} is not executable; chmod +x it or run it through its interpreter"


def _signal_group(process: asyncio.subprocess.Process, signum: int) -> None:
    """Signal an ``--exec`` command and whatever it started (its own process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


class _Runner:
    """The handler of ``choreo subscribe`` and its stop conditions.

    ``--count N`` hands exactly N events to the output or command: the N-th handler call stops
    the subscription taking more, so only those N are acked and the rest stay for the group's
    next reader. Ctrl-C or SIGTERM is a shutdown, never a handler failure: no new event starts,
    a running ``--exec`` command (in its own session, so the terminal's Ctrl-C does not reach
    it) is terminated, and its event stays unacked for the next reader.
    """

    def __init__(
        self, output: str, command: list[str] | None, count: int | None, *, reply: bool = False
    ) -> None:
        self.output = output
        self.command = command
        self.reply = reply
        self.count = count
        self.handled = 0
        #: Events whose handler failed every attempt, by the dead-letter topic they went to.
        self.failed: Counter[str] = Counter()
        self.last_error = ""
        self.done = asyncio.Event()
        self.activity = asyncio.Event()
        self.subscriber: Subscriber | None = None
        self.children: set[asyncio.subprocess.Process] = set()
        self.signalled: int | None = None

    async def handle(self, event: Event) -> Any:
        self.activity.set()
        result: Any = None
        if self.command is not None:
            result = await self._exec(event)
        elif self.output == "json":
            sys.stdout.write(event.to_json() + "\n")
            sys.stdout.flush()
        else:
            shown = json.dumps(event.data, ensure_ascii=False, default=str)
            out_console.print(
                Text.assemble(
                    f"{event.time:%H:%M:%S} ",
                    (event.type, "bold"),
                    f" {event.id} ",
                    (event.source, "dim"),
                    f" {shown[:200]}",
                )
            )
        self.handled += 1
        self._settled()
        return result

    def _settled(self) -> None:
        """One more event handed over is done with (handled, or failed and dead-lettered):
        with ``--count N``, the N-th stops the subscription taking more."""
        if self.count is not None and self.handled + self.failed.total() >= self.count:
            self._stop_taking()
            self.done.set()

    def _dead_lettered(self, dead: Event, where: str) -> None:
        """An event went to the dead-letter topic: a failure when its handler failed (an
        expired or undecodable one never reached the handler)."""
        info = deadletter.info(dead)
        if info is None or info.reason != deadletter.HANDLER_ERROR:
            return
        self.failed[where] += 1
        self.last_error = info.error
        self._settled()

    def failure(self) -> str | None:
        """The line that says how many events failed their handler and where they went."""
        total = self.failed.total()
        if not total:
            return None
        events = "1 event" if total == 1 else f"{total} events"
        places = ", ".join(
            sorted(where or "(none: dead-lettering is off)" for where in self.failed)
        )
        shown = " ".join(self.last_error.split())[:200]
        return (
            f"{events} failed the handler (last: {shown}) and went to the dead-letter topic "
            f"{places}; see: choreo dlq ls {shlex.quote(min(self.failed))}"
        )

    def _stop_taking(self) -> None:
        if self.subscriber is not None:
            self.subscriber.stop_taking()

    async def _exec(self, event: Event) -> Any:
        """Run the command on ``event``; with ``--reply``, what it printed (JSON), parsed."""
        assert self.command is not None
        process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE if self.reply else None,
            start_new_session=True,
        )
        self.children.add(process)
        try:
            printed, _ = await process.communicate(event.to_json().encode())
        finally:
            self.children.discard(process)
            if process.returncode is None:  # cancelled (handler timeout, shutdown): no orphan
                _signal_group(process, signal.SIGKILL)
                await asyncio.shield(process.wait())
        shown = shlex.join(self.command)
        if process.returncode != 0:
            raise RuntimeError(f"{shown!r} exited with status {process.returncode}")
        if not self.reply or not printed.strip():
            return None
        try:
            return json.loads(printed)
        except ValueError as exc:
            raise ValueError(f"{shown!r} printed something that is not JSON ({exc})") from exc

    def _shutdown(self, signum: int) -> None:
        """Ctrl-C or SIGTERM: start nothing more, end the running commands, then stop."""
        self.signalled = signum
        self._stop_taking()
        for process in self.children:
            _signal_group(process, signal.SIGTERM)
        self.done.set()

    async def consume(
        self, bus: Bus, topics: list[str], group: str, from_beginning: bool, idle: float | None
    ) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._shutdown, signum)
        async with bus:
            self.subscriber = await bus.subscribe(
                topics, self.handle, group=group, from_beginning=from_beginning
            )
            self.subscriber.on_dead_letter(self._dead_lettered)
            await self._wait(idle)
        failure = self.failure()
        if self.signalled is not None:
            if failure is not None:
                print_error(failure)
            raise typer.Exit(128 + self.signalled)
        if failure is not None:
            fail(failure, EXIT_FAILURE)

    async def _wait(self, idle: float | None) -> None:
        """Until done (count reached, signalled) or ``idle`` seconds without an event."""
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
