"""``amqp://user:pass@host:5672/vhost``: RabbitMQ (AMQP 0-9-1) through aiormq (aio-pika's core).

Names on the broker (DESIGN.md): a topic is a durable **topic exchange** named after it; events
are published with the topic name as routing key; each group owns a durable **queue**
``<topic>.<group>`` bound to the exchange with ``#``. Publishes are persistent
(``delivery_mode=2``) and wait for the publisher confirm; deliveries are acked manually after
the handler, with QoS ``prefetch``; while deliveries queue up, acks go out batched (``multiple``).

CloudEvents AMQP binding, binary mode: application headers ``cloudEvents_<attr>`` (integers and
booleans keep their AMQP type; ``cloudEvents:<attr>`` and knative's ``ce-<attr>`` are read too),
the ``content_type`` and ``message_id`` properties, and the per-message ``expiration`` property
when a TTL is set. A group queue dead-letters what RabbitMQ expires into the exchange
``<topic>.dlq``, so broker-expired events land in the dead-letter store with ``dlqreason=expired``.

Dead-letter topics (``*.dlq``) also get a durable **store queue** named exactly after the topic,
which keeps entries while nobody subscribes; ``browse`` reads it with ``basic.get`` and gives
everything back (``nack`` with requeue restores the order), ``purge`` empties it or deletes
chosen ids. RabbitMQ cannot list exchanges over AMQP, so topics are recorded in the durable
queue ``choreo.topics`` (compacted when listed).

Options (query string; the rest goes to aiormq, e.g. ``heartbeat``): ``publish_timeout`` (30 s,
retrying across reconnects), ``connect_timeout`` (10 s), ``reconnect_delay`` (0.2 s, doubling to
5 s), ``expired_to_dlq`` (``true``), ``queue_type`` (``classic`` or ``quorum``).
"""

from broker.adapters.rabbitmq.adapter import RabbitMQAdapter
from broker.adapters.rabbitmq.settings import RabbitMQSettings

__all__ = ["RabbitMQAdapter", "RabbitMQSettings"]
