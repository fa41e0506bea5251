"""The outbox exception hierarchy.

Every error the connectors raise on purpose is an :class:`OutboxError`::

    OutboxError                              root of every error raised on purpose
    ├── OutboxConfigError (ValueError)       a bad database URL, table name or route (a usage error)
    ├── DatabaseUnavailableError (ConnectionError)  the database cannot be reached
    ├── OutboxMissingError (LookupError)     the outbox (table, publication, offsets) is not created
    ├── CDCSettingsError                     wal_level / binlog settings the relay cannot use
    ├── RelayLockedError                     another relay already owns the slot / cursor
    ├── PositionLostError                    the slot / binlog the relay resumes from is gone
    └── RoutingError (ValueError)            one row cannot become an event (it is dead-lettered)

Messages name the database (password masked), the table or slot, and the fix.
"""

from __future__ import annotations

__all__ = [
    "CDCSettingsError",
    "DatabaseUnavailableError",
    "OutboxConfigError",
    "OutboxError",
    "OutboxMissingError",
    "PositionLostError",
    "RelayLockedError",
    "RoutingError",
]


class OutboxError(Exception):
    """Root of every error raised on purpose by :mod:`connectors`."""


class OutboxConfigError(OutboxError, ValueError):
    """A database URL, table name, route template or option is invalid."""


class DatabaseUnavailableError(OutboxError, ConnectionError):
    """The database cannot be reached or refused the credentials."""


class OutboxMissingError(OutboxError, LookupError):
    """The outbox was not created on this database (see :func:`connectors.init_outbox`).

    ``database`` (password masked) and ``table`` say which outbox is missing.
    """

    def __init__(self, message: str, *, database: str, table: str) -> None:
        super().__init__(message)
        self.database = database
        self.table = table

    @classmethod
    def no_table(cls, database: str, table: str, reason: object) -> OutboxMissingError:
        """The outbox ``table``, or the relays' offsets table, is not in ``database``; the
        driver's ``reason`` (its first line) says which."""
        first = (str(reason).strip().splitlines() or ["a table is missing"])[0]
        return cls(
            f"{database} has no outbox table {table!r} ({first}); create the outbox first "
            "(connectors.init_outbox)",
            database=database,
            table=table,
        )


class CDCSettingsError(OutboxError):
    """The server is not configured for change data capture; the message says what to change."""


class RelayLockedError(OutboxError):
    """Another relay is already reading this slot, binlog position or cursor."""


class PositionLostError(OutboxError):
    """The relay's position of record is gone (a dropped or invalidated replication slot, a
    purged binlog): going on would skip committed rows, so the relay refuses to start."""


class RoutingError(OutboxError, ValueError):
    """An outbox row cannot be turned into an event; ``reason`` is the ``dlqreason``."""

    def __init__(self, message: str, reason: str = "undecodable") -> None:
        super().__init__(message)
        self.reason = reason
