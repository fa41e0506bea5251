"""The adapter kit: the pieces every backend needs, written once.

* :mod:`~broker.adapters.kit.base` - :class:`BaseAdapter`, the part of the port every backend
  implements alike (masked URL, ``subscribe``, a sequential ``publish_many``), and
  :class:`BaseSubscription` (iteration, batches and ``ack_many`` from ``poll``/``wait_ready``);
* :mod:`~broker.adapters.kit.settings` - typed options from the URL's query string, with
  did-you-mean on an unknown one (:func:`parse_settings`, :func:`option`);
* :mod:`~broker.adapters.kit.retry` - trying again with backoff until a deadline
  (:func:`keep_trying`, and :func:`keep_trying_each` for the failed items of a list), for
  publishes and for relays;
* :mod:`~broker.adapters.kit.offsets` - the highest contiguously acked offset of a partition
  (:class:`OffsetTracker`), for log-based backends;
* :mod:`~broker.adapters.kit.merge` - several partitions' records as one sequence in event
  time order, each partition's order kept (:func:`merge_lanes`), and lanes released up to the
  time the lagging ones reached (:class:`Horizon`), for batches that span them;
* :mod:`~broker.adapters.kit.hold` - items held back until a wall-clock time
  (:class:`HoldQueue`), for delayed delivery;
* :mod:`~broker.adapters.kit.errors` - client exceptions to broker errors by table
  (:func:`translate`), and the list of a client's exception types for the test that each one
  is mapped (:func:`client_exceptions`).

URL masking lives in :func:`broker.urls.mask_url`; dead-letter names and fields in
:mod:`broker.deadletter`. ``docs/adapters.md`` shows how a new backend is built from these.
"""

from broker.adapters.kit.base import BaseAdapter, BaseSubscription
from broker.adapters.kit.errors import (
    Translation,
    client_exceptions,
    confirm_timeout,
    one_line,
    translate,
    untranslated,
)
from broker.adapters.kit.hold import HoldQueue
from broker.adapters.kit.merge import HOLD_LIMIT, Horizon, event_time, merge_lanes
from broker.adapters.kit.offsets import InFlight, OffsetTracker, Tracked
from broker.adapters.kit.retry import Backoff, Stopped, keep_trying, keep_trying_each
from broker.adapters.kit.settings import (
    convert,
    option,
    parse_settings,
    query_options,
    unknown_option,
)

__all__ = [
    "HOLD_LIMIT",
    "Backoff",
    "BaseAdapter",
    "BaseSubscription",
    "HoldQueue",
    "Horizon",
    "InFlight",
    "OffsetTracker",
    "Stopped",
    "Tracked",
    "Translation",
    "client_exceptions",
    "confirm_timeout",
    "convert",
    "event_time",
    "keep_trying",
    "keep_trying_each",
    "merge_lanes",
    "one_line",
    "option",
    "parse_settings",
    "query_options",
    "translate",
    "unknown_option",
    "untranslated",
]
