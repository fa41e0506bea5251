"""Topic names every backend takes as they are (DESIGN.md: a Kafka topic, a RabbitMQ exchange
and a NATS subject are all named after the topic).

Kafka allows the fewest: letters, digits, ``.``, ``_`` and ``-``, at most 249 characters. A
name outside that works on some backends only, so names choreograph writes on its own account
(outbox routes, the saga monitor's alerts topic) keep to it.
"""

from __future__ import annotations

import re

__all__ = ["TOPIC_RULE", "is_portable_topic"]

_TOPIC = re.compile(r"[A-Za-z0-9._\-]{1,249}\Z")
#: The rule, said for an error message.
TOPIC_RULE = "letters, digits, '.', '_' or '-', at most 249 characters"


def is_portable_topic(name: str) -> bool:
    """Whether every backend takes ``name`` as a topic name unchanged."""
    return bool(_TOPIC.match(name))
