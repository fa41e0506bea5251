"""Options of ``kafka://host:9092[,host2:9092]?options``: the adapter's typed settings, and
aiokafka client options routed to the clients whose constructor takes them."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from broker.adapters.kit import option, parse_settings
from broker.errors import ConfigurationError
from broker.urls import mask_url

__all__ = ["CLIENTS", "KafkaSettings", "bootstrap_servers", "split_options"]

CLIENTS: dict[str, Callable[..., Any]] = {
    "producer": AIOKafkaProducer,
    "consumer": AIOKafkaConsumer,
    "admin": AIOKafkaAdminClient,
}
_SSL_OPTIONS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password")
# Options we set ourselves: a URL may not override them, or the delivery contract breaks.
_RESERVED = (
    "bootstrap_servers",
    "group_id",
    "enable_auto_commit",
    "acks",
    "enable_idempotence",
    "value_serializer",
    "key_serializer",
    "value_deserializer",
    "key_deserializer",
)
_NUMERIC_SUFFIXES = ("_ms", "_records", "_bytes", "_size")
_HINT = (
    "an aiokafka client option (e.g. security_protocol, session_timeout_ms; "
    "producer.<option>, consumer.<option> or admin.<option> for one client)"
)


@dataclasses.dataclass(frozen=True, slots=True)
class KafkaSettings:
    """What the adapter itself decides; everything else is an aiokafka client option."""

    #: ``auto`` tries an idempotent producer and falls back (one log line) if the broker refuses.
    idempotence: str = option("auto", choices=("auto", "true", "false"))
    #: Partitions and replication factor of the topics choreograph creates.
    partitions: int = 4
    replication_factor: int = 1
    #: Create a missing topic before the first publish or subscribe.
    auto_create: bool = True
    #: Commit acked offsets at least this often, and after this many acks.
    commit_interval_ms: int = 100
    commit_batch: int = 500
    #: How long connecting may take: a port that accepts but never answers the Kafka protocol
    #: (another service) would otherwise hold the start for aiokafka's request_timeout_ms (40 s).
    connect_timeout_ms: int = 10_000
    #: How long a publish keeps retrying while the broker is unreachable.
    publish_timeout_ms: int = 60_000
    #: How long ``subscribe`` waits for the group to join and have a position.
    subscribe_timeout_ms: int = 60_000
    #: Prepended to every group name: a namespace for shared clusters (and per-test isolation).
    group_prefix: str = ""


def _defaults(client: str) -> dict[str, Any]:
    """The keyword options a client's constructor takes, with an example value of each."""
    params = inspect.signature(CLIENTS[client]).parameters
    found = {n: p.default for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n != "loop"}
    for name, default in found.items():
        if default is None and name.endswith(_NUMERIC_SUFFIXES):
            found[name] = 0  # optional numeric options default to None
    return found


_DEFAULTS = {name: _defaults(name) for name in CLIENTS}


def _known() -> dict[str, Any]:
    """Every client option a URL may carry: plain (for every client that takes it) and
    prefixed with one client's name."""
    known: dict[str, Any] = dict.fromkeys(_SSL_OPTIONS, "")
    for client, defaults in _DEFAULTS.items():
        for name, default in defaults.items():
            known.setdefault(name, default)
            known[f"{client}.{name}"] = default
    return known


_KNOWN = _known()
_RESERVED_NAMES = (*_RESERVED, *(f"{client}.{name}" for client in CLIENTS for name in _RESERVED))


def split_options(
    url: str, options: Mapping[str, Any]
) -> tuple[KafkaSettings, dict[str, dict[str, Any]]]:
    """Typed settings plus, per aiokafka client, the options its constructor accepts."""
    settings, passed = parse_settings(
        KafkaSettings, url, options, client=_KNOWN, client_hint=_HINT, reserved=_RESERVED_NAMES
    )
    per_client: dict[str, dict[str, Any]] = {name: {} for name in CLIENTS}
    ssl = {k: passed.pop(k) for k in _SSL_OPTIONS if k in passed}
    for name, value in passed.items():
        client, _, option_name = name.rpartition(".")
        for target in [client] if client else [c for c in CLIENTS if name in _DEFAULTS[c]]:
            per_client[target][option_name] = value
    protocol = str(passed.get("security_protocol", "PLAINTEXT")).upper()
    if ssl or protocol in ("SSL", "SASL_SSL"):
        context = create_ssl_context(
            cafile=ssl.get("ssl_cafile"),
            certfile=ssl.get("ssl_certfile"),
            keyfile=ssl.get("ssl_keyfile"),
            password=ssl.get("ssl_password"),
        )
        for client_options in per_client.values():
            client_options["ssl_context"] = context
    return settings, per_client


def bootstrap_servers(url: str) -> list[str]:
    """The ``host:port`` list of the URL (port 9092 when none is given)."""
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
    hosts = [h.strip() for h in netloc.split(",") if h.strip()]
    if not hosts:
        raise ConfigurationError(
            f"kafka URL {mask_url(url)!r} names no host; use kafka://host:9092"
        )
    return [h if ":" in h.rsplit("]", 1)[-1] else f"{h}:9092" for h in hosts]
