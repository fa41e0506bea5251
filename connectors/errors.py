"""The outbox exception hierarchy.

Every error the connectors raise on purpose is an :class:`OutboxError`; the CLI turns it into
one line on stderr and exit code ``cli_exit_code``::

    OutboxError                              exit 1
    ├── OutboxConfigError (ValueError)       a bad database URL, table name or route (exit 2)
    ├── DatabaseUnavailableError (ConnectionError)  the database cannot be reached
    ├── CDCSettingsError                     wal_level / binlog settings the relay cannot use
    ├── RelayLockedError                     another relay already owns the slot / cursor
    └── RoutingError (ValueError)            one row cannot become an event (it is dead-lettered)

Messages name the database (password masked), the table or slot, and the fix.
"""

from __future__ import annotations

__all__ = [
    "CDCSettingsError",
    "DatabaseUnavailableError",
    "OutboxConfigError",
    "OutboxError",
    "RelayLockedError",
    "RoutingError",
]


class OutboxError(Exception):
    """Root of every error raised on purpose by :mod:`connectors`."""

    cli_exit_code = 1


class OutboxConfigError(OutboxError, ValueError):
    """A database URL, table name, route template or option is invalid."""

    cli_exit_code = 2


class DatabaseUnavailableError(OutboxError, ConnectionError):
    """The database cannot be reached or refused the credentials."""


class CDCSettingsError(OutboxError):
    """The server is not configured for change data capture; the message says what to change."""


class RelayLockedError(OutboxError):
    """Another relay is already reading this slot, binlog position or cursor."""


class RoutingError(OutboxError, ValueError):
    """An outbox row cannot be turned into an event; ``reason`` is the ``dlqreason``."""

    def __init__(self, message: str, reason: str = "undecodable") -> None:
        super().__init__(message)
        self.reason = reason
