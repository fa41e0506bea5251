"""``choreo request``: publish a request, wait for its reply, print it."""

from __future__ import annotations

import typer

from broker.envelope import Event
from choreo.commands.options import BrokerOption, OutputOption, check_output, check_topics, open_bus
from choreo.commands.pubsub import parse_headers, read_data
from choreo.console import fail, parse_duration, print_json, run
from choreo.errors import EXIT_USAGE

__all__ = ["request"]


def request(
    topic: str = typer.Argument(..., help="Topic to send the request to."),
    type_: str = typer.Option(..., "--type", "-t", help="CloudEvents type of the request."),
    data: str | None = typer.Option(None, "--data", "-d", help="JSON, @file or @- for stdin."),
    timeout: str = typer.Option("5s", "--timeout", help="How long to wait for the reply."),
    source: str = typer.Option("choreo-cli", "--source", help="CloudEvents source."),
    key: str | None = typer.Option(None, "--key", "-k", help="Partition key (ordering)."),
    correlation_id: str | None = typer.Option(None, "--correlation-id", "-c"),
    header: list[str] = typer.Option([], "--header", "-H", help="Extension name=value."),
    broker: str | None = BrokerOption,
    output: str = OutputOption,
) -> None:
    """Send a request and print the reply's data (--output json: the whole reply CloudEvent).

    No reply in time, or an error reply (the handler failed), exits 1 with one line.
    """
    check_output(output)
    check_topics(topic)
    value = read_data(data)
    extensions = parse_headers(header)
    seconds = parse_duration(timeout, option="--timeout")
    if seconds <= 0:
        fail("--timeout must be more than 0", EXIT_USAGE)
    try:
        event = Event(type=type_, source=source, data=value, extensions=extensions)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)

    async def go() -> Event:
        async with open_bus(broker, source=source) as bus:
            return await bus.request(
                topic, event, key=key, correlation_id=correlation_id, timeout=seconds
            )

    reply = run(go())
    print_json(reply.to_dict() if output == "json" else reply.data)
