"""``memory://[name]``: an in-process broker with the same semantics as the durable ones.

Topics are partitioned logs (events with one ``partitionkey`` share a partition, so they keep
their order). Each group keeps a committed position per partition; a group's subscriptions
split the partitions between them and a partition changes hands only once its owner has no
unacked delivery left in it. Adapters built from the same URL in one process share one broker,
so several services (or tests) can talk through ``memory://name``. Nothing survives the process.
"""

from broker.adapters.memory.adapter import MemoryAdapter
from broker.adapters.memory.settings import MemorySettings

__all__ = ["MemoryAdapter", "MemorySettings"]
