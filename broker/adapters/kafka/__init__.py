"""``kafka://host:9092[,host2:9092]?options``: Kafka (and Kafka-compatible brokers) via aiokafka.

Events travel in the CloudEvents Kafka binary binding: ``ce_<attr>`` headers, a ``content-type``
header and the ``partitionkey`` as message key, so same-key events share a partition and keep
their order. A choreograph group is a Kafka consumer group; offsets are committed manually, only
for deliveries the core acked, as the highest contiguous acked offset per partition, batched
(every ``commit_interval_ms`` or ``commit_batch`` acks, on revocation and on close).

``subscribe`` returns once every partition of the topics has a committed position for the group:
a new group commits the end offsets (or the beginning with ``from_beginning``) on its first
assignment. A partition that later turns up without a committed position (a broker that lost its
state, a partition added to the topic) is read from its beginning: at-least-once over skipping.

Options (query string): typed settings (:class:`KafkaSettings`), aiokafka client options routed to
the clients whose constructor takes them (``security_protocol``, ``sasl_mechanism``,
``sasl_plain_username``, ``session_timeout_ms``, ``fetch_max_wait_ms``, ...), ``ssl_cafile`` /
``ssl_certfile`` / ``ssl_keyfile`` / ``ssl_password`` for TLS, and ``producer.<opt>`` /
``consumer.<opt>`` / ``admin.<opt>`` for one client only.
"""

from broker.adapters.kafka.adapter import KafkaAdapter
from broker.adapters.kafka.errors import translate_error
from broker.adapters.kafka.settings import KafkaSettings

__all__ = ["KafkaAdapter", "KafkaSettings", "translate_error"]
