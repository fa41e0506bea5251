"""``nats://host:4222`` (``tls://`` for TLS): NATS JetStream.

Names on the broker (DESIGN.md): the subject is the topic name, captured by one JetStream stream
per topic that is created when missing (file storage, limits retention, so DLQ topics keep what
is published to them). The stream is named after the topic with every character outside
``[A-Za-z0-9_-]`` replaced by ``_`` and, when anything was replaced, an 8-hex digest of the
topic appended (``orders`` -> ``orders``, ``orders.dlq`` -> ``orders_dlq_<digest>``). A stream
some other tool already made that captures the subject is used as it is. Each group is a
durable pull consumer (explicit ack) on the topic's stream, named the same way after the group.

Wire format: binary content mode with ``ce-<attr>`` headers, ``content-type``, and
``Nats-Msg-Id`` = event id for the server's de-duplication window (dead letters add their
group and time to it so the same event can be dead-lettered by two groups or twice; an event
replayed from a DLQ this adapter browsed gets a fresh one). A TTL becomes a ``Nats-TTL`` header
where the server supports per-message TTL (2.11+), and is checked by the consumer everywhere.

Options (query string): ``ack_wait`` (30 s, the visibility timeout), ``max_ack_pending``
(per group, default 4 x prefetch), ``publish_timeout`` (30 s, a publish retries across
reconnects until then), ``request_timeout`` (5 s), ``connect_timeout`` (10 s), ``heartbeat``
(5 s, pull idle heartbeat), ``storage`` (``file``|``memory``), ``replicas`` (1), ``max_age``
(0 = keep forever), ``duplicate_window`` (120 s), ``native_ttl`` (true). Any other option is
passed to ``nats.connect`` (``name``, ``user_credentials``, ``token``, ...).
"""

from broker.adapters.nats.adapter import NatsAdapter
from broker.adapters.nats.settings import NatsSettings
from broker.adapters.nats.wire import safe_name

__all__ = ["NatsAdapter", "NatsSettings", "safe_name"]
