"""``sqlite:///path/to/broker.db``: the embedded default broker, durable and multi-process.

Topics are partitioned logs in one SQLite file (WAL mode). Each group keeps a committed position
per partition; its subscriptions - in this process or others - lease partitions for a fair
share and renew the leases while they make progress. A delivery not acked within
``visibility_timeout`` (or a process that dies) lets the lease lapse, and the partition resumes
elsewhere after the last committed event. A lease names its holder's process
(:mod:`~broker.adapters.sqlite.owner`): a holder that provably died on this machine (its pid gone
or reused) loses its leases at the next rebalance of any member, without waiting out the
timeout; a holder on another host, or alive but stuck, keeps them until the timeout. Same-key
events share a partition: ordered per group.
"""

from broker.adapters.sqlite.adapter import SQLiteAdapter
from broker.adapters.sqlite.settings import SQLiteSettings

__all__ = ["SQLiteAdapter", "SQLiteSettings"]
