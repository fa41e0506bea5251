"""Transactional outbox: write events in your own transaction, relay the committed ones.

    from connectors import add_event

    with conn:                                   # the caller's transaction
        conn.execute("UPDATE orders SET state = 'placed' WHERE id = ?", (42,))
        add_event(conn, aggregatetype="order", aggregateid=42, type="order.placed",
                  payload={"total": 10})

A :class:`Relay` streams the committed rows to the broker: PostgreSQL by logical replication
(pgoutput), MySQL/MariaDB by the row binlog, SQLite by polling. :func:`init_outbox` creates the
table and what change data capture needs; ``connectors.runtime.build_relay`` builds a relay
from a database URL and a broker URL.
"""

from connectors.errors import (
    CDCSettingsError,
    DatabaseUnavailableError,
    OutboxConfigError,
    OutboxError,
    OutboxMissingError,
    PositionLostError,
    RelayLockedError,
    RoutingError,
)
from connectors.outbox_table import DEFAULT_SLOT, DEFAULT_TABLE, InitReport, init_outbox
from connectors.relay import Relay
from connectors.routing import DEFAULT_DLQ_TOPIC, DEFAULT_ROUTE, OutboxRow, Routed, Router
from connectors.writers import add_event, add_event_async

__all__ = [
    "DEFAULT_DLQ_TOPIC",
    "DEFAULT_ROUTE",
    "DEFAULT_SLOT",
    "DEFAULT_TABLE",
    "CDCSettingsError",
    "DatabaseUnavailableError",
    "InitReport",
    "OutboxConfigError",
    "OutboxError",
    "OutboxMissingError",
    "OutboxRow",
    "PositionLostError",
    "Relay",
    "RelayLockedError",
    "Routed",
    "Router",
    "RoutingError",
    "add_event",
    "add_event_async",
    "init_outbox",
]
