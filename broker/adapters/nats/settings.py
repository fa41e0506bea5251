"""Options of ``nats://host:4222?options``: the adapter's typed settings, and the
``nats.connect`` arguments a URL may pass on."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

from nats.aio.client import Client

from broker.adapters.kit import option, parse_settings
from broker.errors import ConfigurationError
from broker.urls import mask_url

__all__ = ["NatsSettings", "servers", "split_options"]

#: ``nats.connect`` arguments the adapter sets itself.
_RESERVED = ("servers", "error_cb", "disconnected_cb", "reconnected_cb", "closed_cb")
_CLIENT = {
    name: param.default
    for name, param in inspect.signature(Client.connect).parameters.items()
    if name != "self"
}


@dataclasses.dataclass(frozen=True, slots=True)
class NatsSettings:
    """The adapter's own options; everything else goes to ``nats.connect``."""

    #: Seconds a delivery may stay unacked before JetStream redelivers it.
    ack_wait: float = 30.0
    #: Unacked deliveries a group may hold; 0: four times the subscription's prefetch.
    max_ack_pending: int = 0
    #: Seconds a publish keeps retrying (timeouts, reconnects, server restarts).
    publish_timeout: float = 30.0
    #: Seconds for one JetStream API call or one publish attempt.
    request_timeout: float = 5.0
    #: Seconds for the first connection.
    connect_timeout: float = 10.0
    #: Idle heartbeat of pull requests.
    heartbeat: float = 5.0
    #: Storage of the streams the adapter creates.
    storage: str = option("file", choices=("file", "memory"))
    replicas: int = 1
    #: Seconds a stream keeps events (0: until purged).
    max_age: float = 0.0
    #: Seconds JetStream remembers ``Nats-Msg-Id``s.
    duplicate_window: float = 120.0
    #: Use per-message TTL where the server supports it (2.11+).
    native_ttl: bool = True
    #: ``publish_many`` sends a list as JetStream atomic batches (one PubAck per 1,000
    #: events at most) to streams that allow them (nats-server 2.12+; streams created with
    #: this setting do). Less CPU per event; on file storage a commit waits for the disk.
    atomic_batches: bool = False
    #: ``publish_many`` sends a list as JetStream fast-ingest batches (one acknowledgement
    #: per list, not one PubAck per event) to streams that allow them (nats-server 2.14+;
    #: streams created with this setting do).
    fast_batches: bool = True


def split_options(url: str, options: Mapping[str, Any]) -> tuple[NatsSettings, dict[str, Any]]:
    """The settings, and the options for ``nats.connect`` (converted to their types)."""
    return parse_settings(
        NatsSettings,
        url,
        options,
        client=_CLIENT,
        client_hint="a nats.connect argument (name, user_credentials, token, ...)",
        reserved=_RESERVED,
    )


def servers(url: str) -> list[str]:
    """``nats://u:p@h1:4222,h2:4222/?opts`` -> one nats-py server URL per host."""
    scheme, _, rest = url.partition("://")
    if not rest:
        raise ConfigurationError(f"broker URL {mask_url(url)!r} needs a host: nats://host:4222")
    location = rest.split("?", 1)[0].split("/", 1)[0]
    userinfo, _, hosts = location.rpartition("@")
    prefix = f"{scheme}://{userinfo + '@' if userinfo else ''}"
    return [prefix + (host or "127.0.0.1:4222") for host in hosts.split(",")]
