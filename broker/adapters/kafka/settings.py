"""Options and errors of the Kafka adapter: URL query strings to typed settings and aiokafka
client options, and aiokafka exceptions to :mod:`broker.errors`."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import errors as kerr
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from broker.errors import (
    BrokerError,
    BrokerUnavailableError,
    ConfigurationError,
    PublishError,
    PublishTimeoutError,
    TopicNotFoundError,
)
from broker.urls import mask_url as _mask_userinfo

__all__ = [
    "KafkaSettings",
    "bootstrap_servers",
    "mask_url",
    "retriable",
    "split_options",
    "translate_error",
]

_SECRET_OPTION = re.compile(r"((?:^|[?&])(?:[a-z]+\.)?(?:sasl_plain_password|ssl_password)=)[^&#]*")


def mask_url(url: str) -> str:
    """The URL with the userinfo password and any password option replaced by ``***``."""
    return _SECRET_OPTION.sub(r"\1***", _mask_userinfo(url))


def _text(exc: BaseException) -> str:
    try:
        return str(exc) or type(exc).__name__
    except Exception:  # some aiokafka base classes cannot render themselves
        return type(exc).__name__


_CLIENTS: dict[str, Callable[..., Any]] = {
    "producer": AIOKafkaProducer,
    "consumer": AIOKafkaConsumer,
    "admin": AIOKafkaAdminClient,
}
_SSL_OPTIONS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password")
# Options we set ourselves: a URL may not override them, or the delivery contract breaks.
_RESERVED = frozenset(
    (
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
)


# -- settings -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class KafkaSettings:
    """What the adapter itself decides; everything else is an aiokafka client option."""

    #: ``auto`` tries an idempotent producer and falls back (one log line) if the broker refuses.
    idempotence: str = "auto"
    #: Partitions and replication factor of the topics choreograph creates.
    partitions: int = 4
    replication_factor: int = 1
    #: Create a missing topic before the first publish or subscribe.
    auto_create: bool = True
    #: Commit acked offsets at least this often, and after this many acks.
    commit_interval_ms: int = 100
    commit_batch: int = 500
    #: How long a publish keeps retrying while the broker is unreachable.
    publish_timeout_ms: int = 60_000
    #: How long ``subscribe`` waits for the group to join and have a position.
    subscribe_timeout_ms: int = 60_000
    #: Prepended to every group name: a namespace for shared clusters (and per-test isolation).
    group_prefix: str = ""


def _coerce(name: str, raw: Any, like: Any, url: str) -> Any:
    if like is None and name.endswith(("_ms", "_records", "_bytes", "_size")):
        like = 0  # optional numeric client options default to None
    if not isinstance(raw, str) or like is None or isinstance(like, str):
        return raw
    try:
        if isinstance(like, bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes", "on")
        return type(like)(raw)
    except ValueError:
        raise ConfigurationError(
            f"kafka option {name}={raw!r} in {mask_url(url)} must be a {type(like).__name__}"
        ) from None


def _defaults(client: str) -> dict[str, Any]:
    params = inspect.signature(_CLIENTS[client]).parameters
    return {n: p.default for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n != "loop"}


def split_options(
    url: str, options: Mapping[str, Any]
) -> tuple[KafkaSettings, dict[str, dict[str, Any]]]:
    """Typed settings plus, per aiokafka client, the options its constructor accepts."""
    fields = {f.name: f.default for f in dataclasses.fields(KafkaSettings)}
    typed = {k: _coerce(k, v, fields[k], url) for k, v in options.items() if k in fields}
    settings = KafkaSettings(**typed)
    if settings.idempotence not in ("auto", "true", "false"):
        raise ConfigurationError(
            f"kafka option idempotence must be auto, true or false ({mask_url(url)})"
        )
    per_client: dict[str, dict[str, Any]] = {name: {} for name in _CLIENTS}
    defaults = {name: _defaults(name) for name in _CLIENTS}
    ssl = {k: v for k, v in options.items() if k in _SSL_OPTIONS}
    for name, raw in options.items():
        if name in fields or name in _SSL_OPTIONS:
            continue
        client, _, option = name.rpartition(".")
        targets = [client] if client else [c for c in _CLIENTS if name in defaults[c]]
        if (
            option in _RESERVED
            or not targets
            or any(option not in defaults.get(c, {}) for c in targets)
        ):
            raise ConfigurationError(
                f"unknown or reserved kafka option {name!r} in {mask_url(url)}; use an aiokafka "
                "client option (e.g. security_protocol, session_timeout_ms) or producer.<opt>"
            )
        for target in targets:
            per_client[target][option] = _coerce(name, raw, defaults[target][option], url)
    protocol = str(options.get("security_protocol", "PLAINTEXT")).upper()
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
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
    hosts = [h.strip() for h in netloc.split(",") if h.strip()]
    if not hosts:
        raise ConfigurationError(
            f"kafka URL {mask_url(url)!r} names no host; use kafka://host:9092"
        )
    return [h if ":" in h.rsplit("]", 1)[-1] else f"{h}:9092" for h in hosts]


# -- errors ---------------------------------------------------------------------------------------


def translate_error(exc: BaseException, url: str, what: str) -> BrokerError:
    """The :mod:`broker.errors` exception for an aiokafka error raised while doing ``what``."""
    where = mask_url(url)
    auth = (
        kerr.AuthenticationFailedError,
        kerr.SaslAuthenticationFailed,
        kerr.AuthenticationMethodNotSupported,
        kerr.UnsupportedSaslMechanismError,
        kerr.IllegalSaslStateError,
    )
    if isinstance(exc, auth):
        return BrokerUnavailableError(
            f"Kafka at {where} refused the credentials while {what} ({_text(exc)}); check "
            "security_protocol, sasl_mechanism, sasl_plain_username and sasl_plain_password"
        )
    if isinstance(
        exc, kerr.KafkaConnectionError | kerr.NoBrokersAvailable | kerr.NodeNotReadyError
    ):
        return BrokerUnavailableError(
            f"cannot reach Kafka at {where} while {what} ({_text(exc)}); check that the "
            "broker runs, the host and port, and the advertised listeners"
        )
    if isinstance(exc, kerr.KafkaTimeoutError | kerr.RequestTimedOutError | TimeoutError):
        return PublishTimeoutError(f"Kafka at {where} did not answer in time while {what}")
    if isinstance(exc, kerr.UnknownTopicOrPartitionError):
        return TopicNotFoundError(
            f"topic missing on Kafka at {where} while {what}; create it (choreo topics create) "
            "or set auto_create=true"
        )
    authz = (
        kerr.TopicAuthorizationFailedError,
        kerr.GroupAuthorizationFailedError,
        kerr.ClusterAuthorizationFailedError,
        kerr.TransactionalIdAuthorizationFailed,
    )
    if isinstance(exc, authz):
        return PublishError(
            f"Kafka at {where} denied access while {what} ({_text(exc)}); check the ACLs"
        )
    if isinstance(exc, kerr.KafkaConfigurationError | kerr.IllegalArgumentError):
        return ConfigurationError(f"invalid Kafka configuration for {where}: {_text(exc)}")
    return PublishError(f"Kafka at {where} failed while {what}: {type(exc).__name__}: {_text(exc)}")


def retriable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retriable", False)) or isinstance(exc, kerr.KafkaTimeoutError)
