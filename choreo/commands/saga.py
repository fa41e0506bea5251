"""``choreo saga monitor|ls|show|owes|ack|discover|serve``: parse, build objects, call, render."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from choreo.commands.options import (
    Output,
    OutputChoiceOption,
    broker_url,
    check_topics,
    port_option,
    start_metrics,
)
from choreo.commands.serving import listen
from choreo.config import existing, setting
from choreo.console import (
    committed,
    err_console,
    fail,
    out_console,
    parse_duration,
    print_json,
    reported,
    run,
    shown,
    warn,
)
from choreo.errors import EXIT_USAGE
from saga_monitor.model import STATES, utcnow

if TYPE_CHECKING:
    from broker import Bus
    from saga_monitor.definitions import Definitions
    from saga_monitor.queries import Page
    from saga_monitor.store import SagaStore

__all__ = ["saga_app"]

saga_app = typer.Typer(
    help="Watch sagas: correlate events into business transactions; find stuck ones.",
    no_args_is_help=True,
)


class DiscoverOutput(StrEnum):
    """How ``discover`` prints its findings."""

    yaml = "yaml"
    json = "json"


STORE = typer.Option(
    None,
    "--store",
    "-s",
    envvar="CHOREO_STORE_URL",
    help="Saga store: sqlite:///.choreo/sagas.db (default), postgresql://..., memory://.",
    show_default=False,
)
BROKER = typer.Option(
    None, "--broker", "-b", help="Broker URL (default: CHOREO_BROKER_URL or the embedded one)."
)


def _state(state: str | None) -> str | None:
    if state is not None and state not in STATES:
        fail(f"--state {state!r} is not a saga state; use one of {', '.join(STATES)}", EXIT_USAGE)
    return state


@saga_app.command("monitor")
def monitor(
    definitions: Path = typer.Option(..., "--definitions", "-d", help="Saga definitions YAML."),
    broker: str | None = BROKER,
    store: str | None = STORE,
    alerts_topic: str = typer.Option(
        "saga.alerts", "--alerts-topic", help="Where alerts go ('' for none)."
    ),
    group: str = typer.Option("choreo-saga-monitor", "--group", help="Consumer group."),
    metrics_port: int | None = port_option(
        None, "--metrics-port", "Serve Prometheus metrics on this port (all interfaces)."
    ),
    tick: str = typer.Option("1s", "--tick", help="How often deadlines are checked."),
    retention: str = typer.Option("7d", "--retention", help="Keep finished instances this long."),
    retain_acknowledged: str | None = typer.Option(
        None, "--retain-acknowledged", help="Drop acknowledged instances this long after the ack."
    ),
    retain_stuck: str | None = typer.Option(
        None, "--retain-stuck", help="Drop instances stuck for longer than this."
    ),
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="A new group starts from the retained history."
    ),
    max_delay: str = typer.Option(
        "2s",
        "--max-delay",
        help="Longest time an event takes from its own time to the broker; verdicts wait for it.",
    ),
    skew_tolerance: str = typer.Option(
        "1s", "--skew-tolerance", help="Clock disagreement reported as clock_skew beyond this."
    ),
) -> None:
    """Run the monitor: subscribe, correlate, detect stuck sagas, publish alerts."""
    if alerts_topic:  # an empty one publishes no alerts
        check_topics(alerts_topic, what="--alerts-topic", portable=True)
    tick_interval = parse_duration(tick, option="--tick")
    if tick_interval <= 0:  # a timer that never waits: a core at 100%
        fail(f"--tick {tick!r} must be longer than 0; use e.g. 1s", EXIT_USAGE)
    timing = {
        "tick_interval": tick_interval,
        "retention": parse_duration(retention, option="--retention"),
        "max_delay": parse_duration(max_delay, option="--max-delay"),
        "skew_tolerance": parse_duration(skew_tolerance, option="--skew-tolerance"),
    }
    kept = {
        "retain_acknowledged": _kept_for(
            retain_acknowledged, "--retain-acknowledged", "instances as they are acknowledged"
        ),
        "retain_stuck": _kept_for(retain_stuck, "--retain-stuck", "instances as they get stuck"),
    }
    broker_url, store_url = setting("broker_url", broker), setting("store_url", store)
    start_metrics(metrics_port, host="0.0.0.0")
    run(
        _monitor(
            definitions,
            broker_url,
            store_url,
            alerts_topic,
            group,
            from_beginning,
            timing,
            kept,
        )
    )


def _kept_for(text: str | None, option: str, drops: str) -> float | None:
    """Seconds of a ``--retain-*`` option (None: left out, kept until they finish). 0 would
    drop at once what the option is meant to keep a while: a usage error, as is an empty
    value (a script's unset variable), which used to turn the option off silently."""
    if text is None:
        return None
    seconds = parse_duration(text, option=option)
    if seconds <= 0:
        fail(
            f"{option} {text!r} would drop {drops}; give how long to keep them, e.g. 30d, "
            f"or leave {option} out to keep them until they finish",
            EXIT_USAGE,
        )
    return seconds


async def _monitor(
    definitions_path: Path,
    broker_url: str,
    store_url: str,
    alerts_topic: str,
    group: str,
    from_beginning: bool,
    timing: dict[str, float],
    kept: dict[str, float | None],
) -> None:
    from broker import Bus
    from broker.urls import mask_url
    from saga_monitor.dead_letters import DeadLetterLinker
    from saga_monitor.definitions import load_definitions
    from saga_monitor.monitor import SagaMonitor
    from saga_monitor.store import open_saga_store as open_store

    definitions = load_definitions(definitions_path)
    store = open_store(store_url)
    bus = Bus(broker_url, source="choreo-saga-monitor")
    monitor = SagaMonitor(
        definitions,
        bus,
        store,
        alerts_topic=alerts_topic or None,
        group=group,
        from_beginning=from_beginning,
        tick_interval=timing["tick_interval"],
        retention=timing["retention"],
        max_delay=timing["max_delay"],
        skew_tolerance=timing["skew_tolerance"],
        retain_acknowledged=kept["retain_acknowledged"],
        retain_stuck=kept["retain_stuck"],
    )
    linker = DeadLetterLinker(definitions, bus, store, topics=monitor.topics)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:  # Ctrl-C too: a SIGINT inherited as ignored (a job started with &
        # by a script) would otherwise never stop the monitor
        with contextlib.suppress(NotImplementedError):
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, task.cancel)
    try:
        try:  # as monitor.run(), saying "watching" once connected and subscribed, not before
            if from_beginning and bus.capabilities.replay:
                await _warn_if_the_group_has_read(bus, group, monitor.topics)
            await monitor.start()
            err_console.print(
                f"watching {', '.join(monitor.topics)} on {mask_url(broker_url)} "
                f"({len(definitions.sagas)} saga(s)); state in {store.url}; "
                f"alerts to {alerts_topic}"
            )
            async with linker:
                await asyncio.Event().wait()
        finally:
            await monitor.stop()
    except asyncio.CancelledError:
        pass
    finally:
        await bus.stop()
        store.close()


async def _warn_if_the_group_has_read(bus: Bus, group: str, topics: tuple[str, ...]) -> None:
    """--from-beginning moves a new group only: say so when ``group`` already reads one of
    ``topics`` (a new --store with the default group would otherwise stay empty, silently)."""
    from broker.errors import BrokerError

    await bus.start()
    try:  # a hint only: a broker slow or unable to list its topics does not hold the start
        listed = await asyncio.wait_for(bus.topics(), timeout=10)
    except (BrokerError, TimeoutError):
        return
    read = sorted(t.name for t in listed if t.name in topics and group in t.groups)
    if read:
        warn(
            f"group {group!r} already reads {', '.join(read)}: --from-beginning moves a new "
            "group only, so this monitor goes on where that group left off; to read the "
            "history, give a --group of its own"
        )


@contextlib.contextmanager
def _opened(store: str | None) -> Iterator[SagaStore]:
    """The saga store, closed at the end; says on stderr when a monitor writing to it is
    behind: its verdicts (stuck, alerts) wait until it caught up."""
    from saga_monitor.store import open_saga_store as open_store

    with reported():
        opened = open_store(_existing(setting("store_url", store)))
        try:
            now = utcnow()
            for status in opened.monitors():
                if "/" in status.name:
                    continue  # a member: its group's line says what matters
                warning = status.behind(now)
                if warning:
                    err_console.print(f"warning: {warning}", markup=False, style="yellow")
            yield opened
        finally:
            opened.close()


def _existing(url: str) -> str:
    """``url``, unless it names a SQLite file that is not there: opening it would create an
    empty store (folders included) and a typo in --store would read as 'no saga instances'."""
    return existing(
        url,
        "saga store",
        "give the --store (or CHOREO_STORE_URL) that the monitor writes to: "
        "choreo saga monitor --store URL",
        marker="saga_schema_version",
    )


def _definitions(path: Path | None) -> Definitions | None:
    from saga_monitor.definitions import load_definitions

    if path is None:
        return None
    with reported():
        return load_definitions(path)


DEFINITIONS = typer.Option(
    None, "--definitions", "-d", help="Saga definitions (for the services their steps name)."
)


@saga_app.command("ls")
def ls(
    saga: str | None = typer.Option(None, "--saga", help="Only this saga type."),
    state: str | None = typer.Option(None, "--state", help="Only this state, e.g. stuck."),
    since: str | None = typer.Option(None, "--since", help="Only updated within, e.g. 1h."),
    service: str | None = typer.Option(
        None, "--service", help="Only instances waiting on this service."
    ),
    anomaly: str | None = typer.Option(
        None, "--anomaly", help="Only instances with this anomaly, e.g. duplicate."
    ),
    search: str | None = typer.Option(
        None,
        "--search",
        "-q",
        help="A correlation-id prefix, or a payload field: data.customer=customer-10.",
    ),
    limit: int = typer.Option(
        200, "--limit", "-n", min=1, max=1_000_000, help="At most this many."
    ),
    offset: int = typer.Option(0, "--offset", min=0, max=10**9, help="Skip this many first."),
    definitions: Path | None = DEFINITIONS,
    store: str | None = STORE,
    output: Output = OutputChoiceOption,
) -> None:
    """List saga instances, most recently updated first (with the total that match)."""
    from datetime import timedelta

    from saga_monitor.board import learn_owners, listed, sample
    from saga_monitor.model import ANOMALY_KINDS
    from saga_monitor.queries import Query, parse_search

    chosen_state = _state(state)
    if anomaly is not None and anomaly not in ANOMALY_KINDS:
        fail(
            f"--anomaly {anomaly!r} is not an anomaly; use one of {', '.join(ANOMALY_KINDS)}",
            EXIT_USAGE,
        )
    with reported():
        prefix, field = parse_search(search)
    window = parse_duration(since, option="--since") if since is not None else None
    defined = _definitions(definitions)
    now = utcnow()
    with _opened(store) as opened:
        _known_saga(opened, saga, defined)
        owners = learn_owners(defined, sample(opened))
        awaiting = None
        if service is not None:
            awaiting = owners.types_of(service, set())
            if not awaiting:
                known = ", ".join(owners.services(set())) or "none yet"
                fail(
                    f"--service {service!r} owes no step that is known; services: {known}",
                    EXIT_USAGE,
                )
        query = Query(
            saga=saga,
            state=chosen_state,
            since=now - timedelta(seconds=window) if window is not None else None,
            correlation_prefix=prefix,
            data=field,
            anomaly=anomaly,
            awaiting=awaiting,
            limit=limit,
            offset=offset,
        )
        with reported():
            page = opened.search(query)
            rows = listed(opened, page.items, owners)
    with shown():
        _print_listing(page, now, rows, output)


def _print_listing(page: Page, now: datetime, rows: list[dict[str, Any]], output: Output) -> None:
    from saga_monitor.render import instance_table

    if output is Output.json:
        print_json(rows)
        return
    out_console.print(instance_table(page.items, now, rows))
    counts = Counter(item.state for item in page.items)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no saga instances"
    if page.total > len(page.items) or page.more:
        last = page.offset + len(page.items)
        summary += (
            f" (showing {page.offset + 1}-{last} of {page.total_text()})"
            if page.items
            else (f" (none from {page.offset + 1}; {page.total_text()} in all)")
        )
    out_console.print(summary)


def _known_saga(opened: SagaStore, saga: str | None, defined: Definitions | None) -> None:
    """Exit 2 when ``saga`` names no saga the store has instances of, nor one of ``defined``:
    a typo in --saga would otherwise read as 'no saga instances'."""
    if saga is None:
        return
    with reported():
        known = {name for name, _ in opened.counts()}
    known |= {s.name for s in defined.sagas} if defined else set()
    if saga not in known:
        fail(
            f"--saga {saga!r} is no saga with instances in {opened.url} "
            f"(sagas: {', '.join(sorted(known)) or 'none yet'}); "
            "for a defined saga with none yet, add --definitions FILE",
            EXIT_USAGE,
        )


@saga_app.command("owes")
def owes(
    definitions: Path | None = DEFINITIONS,
    window: str = typer.Option(
        "15m", "--window", help="Recent latency over this window, against the time before it."
    ),
    store: str | None = STORE,
    output: Output = OutputChoiceOption,
) -> None:
    """Who owes what: per service, the instances waiting on it, the oldest wait, and its
    step latency p50/p99 against its own baseline."""
    from saga_monitor.board import build_board
    from saga_monitor.render import board_table

    seconds = parse_duration(window, option="--window")
    defined = _definitions(definitions)
    now = utcnow()
    with _opened(store) as opened, reported():
        board, _ = build_board(opened, defined, now, window=seconds)
    with shown():
        if output is Output.json:
            print_json([row.to_dict() for row in board])
            return
        out_console.print(board_table(board) if board else "no saga instances")


@saga_app.command("ack")
def ack(
    correlation_id: str = typer.Argument(..., help="The correlation id of the saga instance."),
    note: str = typer.Option("", "--note", "-m", help="What you know or did about it."),
    saga: str | None = typer.Option(None, "--saga", help="The saga type (when several match)."),
    who: str | None = typer.Option(
        None, "--who", help="Who acknowledges (default: CHOREO_USER, USER)."
    ),
    annotate: bool = typer.Option(
        False, "--annotate", help="Add a note without acknowledging the instance."
    ),
    store: str | None = STORE,
    output: Output = OutputChoiceOption,
) -> None:
    """Acknowledge a (stuck) instance with a note, kept in the store and shown everywhere."""
    from saga_monitor.queries import ACK, NOTE, Note, check_note

    author = who or os.environ.get("CHOREO_USER") or os.environ.get("USER") or "unknown"
    kind = NOTE if annotate else ACK
    with reported():
        check_note(author, note, kind)
    with _opened(store) as opened, reported():
        found = opened.instances(saga=saga, correlation_id=correlation_id, limit=50)
        if not found:
            which = f" of saga {saga!r}" if saga else ""
            fail(
                f"no saga instance{which} with correlation id {correlation_id!r} in "
                f"{opened.url}; list them with: choreo saga ls"
            )
        if len(found) > 1:
            names = ", ".join(sorted(i.saga for i in found))
            fail(
                f"{correlation_id!r} is an instance of several sagas ({names}); "
                "pick one with --saga",
                EXIT_USAGE,
            )
        target = found[0]
        written = Note(target.saga, correlation_id, kind, author, utcnow(), note)
        written = opened.add_note(written)
    with committed():  # kept: a closed stdout must not fail it (a retry would add it twice)
        if output is Output.json:
            print_json(written.to_dict())
            return
        done = "acknowledged" if kind == ACK else "annotated"
        out_console.print(f"{done} {target.saga} {correlation_id} as {author}", markup=False)


@saga_app.command("show")
def show(
    correlation_id: str = typer.Argument(..., help="The correlation id of the saga instance."),
    saga: str | None = typer.Option(None, "--saga", help="Only this saga type."),
    store: str | None = STORE,
    output: Output = OutputChoiceOption,
) -> None:
    """Show an instance's timeline: offsets, step durations, what it waits for, anomalies,
    operators' notes and the dead letter that explains a wait."""
    from saga_monitor.render import notes_text, timeline

    with _opened(store) as opened, reported():
        found = opened.instances(correlation_id=correlation_id, saga=saga)
        keys = [(i.saga, i.correlation_id) for i in found]
        notes, causes = opened.notes(keys), opened.causes(keys)
        url = opened.url
    if not found:
        which = f" of saga {saga!r}" if saga else ""
        fail(
            f"no saga instance{which} with correlation id {correlation_id!r} in {url}; "
            "list them with: choreo saga ls"
        )
    if output is Output.json:
        with shown():
            print_json(
                [
                    {
                        **i.to_dict(),
                        "notes": [n.to_dict() for n in notes.get(key, [])],
                        "cause": (causes.get(key) or {}).get("text")
                        if i.state == "stuck"
                        else None,
                    }
                    for i, key in zip(found, keys, strict=True)
                ]
            )
        return
    for item, key in zip(found, keys, strict=True):
        with shown():
            out_console.print(timeline(item, utcnow()))
            cause = causes.get(key) if item.state == "stuck" else None
            if cause or key in notes:
                out_console.print(notes_text(notes.get(key, []), cause, item))


@saga_app.command("discover")
def discover(
    topic: list[str] = typer.Option(..., "--topic", "-t", help="A topic to read (repeatable)."),
    broker: str | None = BROKER,
    since: str | None = typer.Option(None, "--since", help="Only events from the last, e.g. 1h."),
    limit: int = typer.Option(
        100_000, "--limit", min=1, max=10_000_000, help="At most this many events per topic."
    ),
    correlation: str = typer.Option(
        "correlationid", "--correlation", help="Where the correlation id is (as in the YAML)."
    ),
    name: str = typer.Option("discovered-saga", "--name", help="Name of the proposed saga."),
    definitions: Path | None = typer.Option(
        None, "--definitions", "-d", help="Compare the traffic with these definitions (drift)."
    ),
    output: DiscoverOutput = typer.Option(DiscoverOutput.yaml, "--output", "-o"),
) -> None:
    """Infer saga definitions from observed events: paths, timings, a draft YAML, drift."""
    check_topics(*topic)
    from saga_monitor.discovery import discover_from_broker, render_report

    window = parse_duration(since, option="--since") if since else None
    url = broker_url(broker, reading=True)
    report = run(
        discover_from_broker(
            url,
            topic,
            since=window,
            limit=limit,
            correlation=correlation,
            name=name,
            definitions=definitions,
        )
    )
    _say_empty_topics(topic, report.topics, url, since)
    with shown():
        if output is DiscoverOutput.json:
            print_json(report.to_dict())
        else:
            out_console.print(render_report(report))


def _say_empty_topics(asked: list[str], seen: list[str], url: str, since: str | None) -> None:
    """Exit 1 when no topic had an event (a misspelt --topic, a --since too short) rather
    than print a draft made of nothing; warn about each topic that had none."""
    from broker.urls import mask_url

    empty = [t for t in dict.fromkeys(asked) if t not in seen]
    where = f" on {mask_url(url)}" + (f" in the last {since}" if since else "")
    hint = "check --topic (choreo topics ls lists the topics there)" + (
        " and --since" if since else ""
    )
    if not seen:
        fail(f"no events on {', '.join(empty)}{where}; {hint}")
    for name in empty:
        warn(f"no events on {name}{where}; {hint}")


@saga_app.command("serve")
def serve(
    store: str | None = STORE,
    definitions: Path | None = typer.Option(
        None, "--definitions", "-d", help="Saga definitions, for the step graph."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = port_option(8000, "--port", "Port to listen on."),
    user: str | None = typer.Option(None, "--auth-user", help="Require HTTP basic auth."),
    password: str | None = typer.Option(
        None, "--auth-password", help="Basic auth password (env CHOREO_SAGA_PASSWORD)."
    ),
    token: str | None = typer.Option(
        None, "--auth-token", help="Require this bearer token (env CHOREO_SAGA_TOKEN)."
    ),
) -> None:
    """Serve the saga web page (instance list, timelines, step graph) and its JSON API."""
    from choreo.commands.serving import serve as serve_app
    from saga_monitor.web import create_app
    from saga_monitor.web_http import auth_from_settings

    with reported():  # an empty variable is a setting too: it must not switch auth off
        auth = auth_from_settings(
            user,
            password if password is not None else os.environ.get("CHOREO_SAGA_PASSWORD"),
            token if token is not None else os.environ.get("CHOREO_SAGA_TOKEN"),
        )
    url = _existing(setting("store_url", store))
    sock = listen(host, port)
    with reported():
        app = create_app(url, definitions=definitions, auth=auth)
    out_console.print(f"saga monitor page on http://{host}:{port}/")
    serve_app(app, sock, name="saga web server", authenticated=auth is not None)
