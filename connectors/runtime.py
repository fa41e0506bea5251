"""Wiring for the CLI and services: pick the relay source for a database URL, run a relay
until SIGTERM/SIGINT, and report its status.

    stats = await run_relay("postgresql://postgres@127.0.0.1/app", "kafka://127.0.0.1:9092")
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any, Literal

from broker import Bus
from broker.observability import get_logger
from broker.ports import PayloadCodec
from connectors.dburl import DatabaseURL
from connectors.outbox_table import DEFAULT_SLOT, DEFAULT_TABLE
from connectors.relay import Relay, RelayStats, Source
from connectors.routing import DEFAULT_DLQ_TOPIC, DEFAULT_ROUTE, PayloadFormat, Router

__all__ = ["build_relay", "build_source", "outbox_status", "run_relay"]

log = get_logger("connectors.runtime")


def build_source(
    db_url: str,
    *,
    table: str = DEFAULT_TABLE,
    slot: str = DEFAULT_SLOT,
    name: str | None = None,
    binary: bool = False,
    resume: Literal["position", "gtid"] = "position",
) -> Source:
    """The relay source for ``db_url``: pgoutput slot, binlog, or SQLite polling."""
    db = DatabaseURL.parse(db_url)
    if db.dialect == "postgresql":
        from connectors.relay_postgres import PostgresSource

        return PostgresSource(db_url, table=table, slot=slot, binary=binary)
    if db.dialect == "mysql":
        from connectors.relay_mysql import MySQLSource

        return MySQLSource(db_url, table=table, name=name, resume=resume)
    from connectors.relay_sqlite import SQLiteSource

    return SQLiteSource(db_url, table=table, name=name)


def build_relay(
    db_url: str,
    broker_url: str | None,
    *,
    table: str = DEFAULT_TABLE,
    slot: str = DEFAULT_SLOT,
    name: str | None = None,
    route: str = DEFAULT_ROUTE,
    source: str | None = None,
    dlq_topic: str = DEFAULT_DLQ_TOPIC,
    payload_format: PayloadFormat = "json",
    correlation_field: str | None = None,
    binary: bool = False,
    resume: Literal["position", "gtid"] = "position",
    codec: PayloadCodec | None = None,
) -> Relay:
    """A ready-to-run :class:`Relay` from URLs and options."""
    db = DatabaseURL.parse(db_url)
    router = Router(
        route=route,
        source=source or f"choreo-outbox/{db.name}",
        dlq_topic=dlq_topic,
        payload_format=payload_format,
        correlation_field=correlation_field,
    )
    bus = Bus(broker_url, source=router.source, codec=codec)
    return Relay(
        build_source(db_url, table=table, slot=slot, name=name, binary=binary, resume=resume),
        bus,
        router,
    )


async def run_relay(relay: Relay) -> RelayStats:
    """Run ``relay`` until SIGTERM or SIGINT, then finish the change in hand and stop."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, relay.stop)
            installed.append(signum)
    log.info("outbox relay started", relay=relay.source.name, broker=relay.bus.url)
    try:
        return await relay.run()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        log.info("outbox relay stopped", relay=relay.source.name, relayed=relay.stats.relayed)


def outbox_status(
    db_url: str, *, table: str = DEFAULT_TABLE, slot: str = DEFAULT_SLOT, name: str | None = None
) -> dict[str, Any]:
    """Position, lag (events and seconds) and health of the relay of ``table``."""
    db = DatabaseURL.parse(db_url)
    if db.dialect == "postgresql":
        from connectors.relay_postgres import postgres_status

        return postgres_status(db_url, table, slot)
    if db.dialect == "mysql":
        from connectors.relay_mysql import mysql_status

        return mysql_status(db_url, table, name)
    from connectors.relay_sqlite import sqlite_status

    return sqlite_status(db_url, table, name)
