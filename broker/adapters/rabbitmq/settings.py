"""Options of ``amqp://user:pass@host:5672/vhost?options``: the adapter's typed settings, and
the connection options aiormq itself reads from the URL."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from broker.adapters.kit import option, parse_settings

__all__ = ["CLIENT_OPTIONS", "RabbitMQSettings", "split_options"]

#: The query options aiormq reads from a connection URL, with their defaults.
CLIENT_OPTIONS: Mapping[str, Any] = {
    "heartbeat": 60,
    "timeout": 60,
    "name": "",
    "auth": "plain",
    "cafile": "",
    "capath": "",
    "cadata": "",
    "keyfile": "",
    "certfile": "",
    "no_verify_ssl": "0",
}
_HINT = "an aiormq connection option (" + ", ".join(CLIENT_OPTIONS) + ")"


@dataclasses.dataclass(frozen=True, slots=True)
class RabbitMQSettings:
    """The adapter's own options; aiormq's connection options stay in the URL."""

    #: Seconds a publish may take, retrying across reconnects.
    publish_timeout: float = 30.0
    #: Seconds to open a connection.
    connect_timeout: float = 10.0
    #: First pause between reconnect attempts, doubling up to ``max_reconnect_delay``.
    reconnect_delay: float = 0.2
    max_reconnect_delay: float = 5.0
    #: Seconds a stopping subscriber waits for a finishing handler's ack.
    close_grace: float = 1.0
    #: Group queues dead-letter broker-expired events into the topic's dead-letter store.
    expired_to_dlq: bool = True
    #: ``quorum`` declares group queues as quorum queues (replicated, with a delivery count).
    queue_type: str = option("classic", choices=("classic", "quorum"))
    #: Seconds a requester's reply queue outlives its last consumer (``x-expires``): the
    #: queue of a requester that died without stopping goes away by itself.
    reply_queue_expiry: float = 60.0


def split_options(url: str, options: Mapping[str, Any]) -> tuple[RabbitMQSettings, str]:
    """The settings, and the URL aiormq connects to (with only aiormq's options)."""
    settings, client = parse_settings(
        RabbitMQSettings, url, options, client=CLIENT_OPTIONS, client_hint=_HINT
    )
    parts = urlsplit(url)
    return settings, urlunsplit(parts._replace(query=urlencode(client)))
