"""Options of ``memory://name?partitions=4``."""

from __future__ import annotations

import dataclasses

from broker.adapters.kit import option

__all__ = ["MemorySettings"]


@dataclasses.dataclass(frozen=True, slots=True)
class MemorySettings:
    """The memory adapter's options (query string or keyword options)."""

    #: Partitions of the topics this adapter creates; same-key events share one.
    partitions: int = option(4, positive=True)
