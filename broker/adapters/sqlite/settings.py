"""Options of ``sqlite:///path/to/broker.db?options``."""

from __future__ import annotations

import dataclasses

from broker.adapters.kit import option

__all__ = ["SQLiteSettings"]


@dataclasses.dataclass(frozen=True, slots=True)
class SQLiteSettings:
    """The SQLite adapter's options (query string or keyword options)."""

    #: Partitions of new topics; same-key events share one and keep their order.
    partitions: int = option(8, positive=True)
    #: Seconds a delivery may stay unacked before its partition's lease lapses.
    visibility_timeout: float = option(30.0, positive=True)
    #: Seconds between looks for events other processes appended.
    poll_interval: float = option(0.05, positive=True)
    #: ``NORMAL`` survives application crashes; ``FULL`` survives power loss.
    synchronous: str = option("NORMAL", choices=("OFF", "NORMAL", "FULL", "EXTRA"))
    #: Seconds to wait for another process's lock on the file.
    busy_timeout: float = option(30.0, positive=True)
