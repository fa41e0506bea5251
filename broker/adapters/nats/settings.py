"""Settings, names and error translation of the NATS adapter.

:class:`NatsSettings` is the adapter's own typed options (the rest of the URL's query string
goes to ``nats.connect``), :func:`safe_name` turns topics and groups into stream and consumer
names, and :func:`translate` maps nats-py exceptions onto :mod:`broker.errors`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import re
from collections.abc import Mapping
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client

from broker.errors import (
    BrokerError,
    BrokerUnavailableError,
    ClosedError,
    ConfigurationError,
    TopicNotFoundError,
)
from broker.urls import mask_url

__all__ = [
    "SUBJECT",
    "TRANSIENT",
    "NatsSettings",
    "check_topic",
    "safe_name",
    "servers",
    "translate",
]

SUBJECT = re.compile(r"[^.\s*>]+(?:\.[^.\s*>]+)*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_TRUE = ("1", "true", "yes", "on")
TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
)


# nats-py errors that mean the request itself was wrong, not that the server is unreachable.
_CALLER_ERRORS = (
    nats.errors.BadSubjectError,
    nats.errors.BadHeaderError,
    nats.errors.BadSubscriptionError,
    nats.errors.BadTimeoutError,
    nats.errors.MaxPayloadError,
    nats.errors.InvalidCallbackTypeError,
    nats.errors.NotJSMessageError,
    nats.errors.MsgAlreadyAckdError,
    nats.errors.JsonParseError,
    nats.js.errors.InvalidKeyError,
    nats.js.errors.InvalidBucketNameError,
    nats.js.errors.InvalidObjectNameError,
    nats.js.errors.BadObjectMetaError,
)


def safe_name(text: str) -> str:
    """A stream or consumer name for ``text``: unchanged when it is safe, else sanitised plus a
    digest of the original (so ``a.b`` and ``a_b`` never share a stream)."""
    cleaned = _UNSAFE.sub("_", text)
    if cleaned == text and len(text) <= 200:
        return text
    return f"{cleaned[:200]}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"


@dataclasses.dataclass(frozen=True, slots=True)
class NatsSettings:
    """The adapter's own options; everything else goes to ``nats.connect``."""

    ack_wait: float = 30.0
    max_ack_pending: int = 0  # 0: four times the subscription's prefetch
    publish_timeout: float = 30.0
    request_timeout: float = 5.0
    connect_timeout: float = 10.0
    heartbeat: float = 5.0
    storage: str = "file"
    replicas: int = 1
    max_age: float = 0.0
    duplicate_window: float = 120.0
    native_ttl: bool = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> tuple[NatsSettings, dict[str, Any]]:
        """Split URL options into settings and client options, converting strings."""
        values: dict[str, Any] = {}
        client: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, raw in options.items():
            if name in fields:
                values[name] = _convert(name, raw, fields[name].default)
            else:
                client[name] = _client_option(name, raw)
        settings = cls(**values)
        if settings.storage not in ("file", "memory"):
            raise ConfigurationError(
                f"nats:// storage must be 'file' or 'memory', not {settings.storage!r}"
            )
        return settings, client


def _convert(name: str, raw: Any, default: Any) -> Any:
    if not isinstance(raw, str) or isinstance(default, str) or default is None:
        return raw
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in _TRUE
        return type(default)(raw)
    except ValueError as exc:
        kind = type(default).__name__
        raise ConfigurationError(f"nats:// option {name}={raw!r} must be a {kind}") from exc


_CLIENT_PARAMS = inspect.signature(Client.connect).parameters
_RESERVED = ("servers", "error_cb", "disconnected_cb", "reconnected_cb", "closed_cb")


def _client_option(name: str, raw: Any) -> Any:
    param = _CLIENT_PARAMS.get(name)
    if param is None or name in _RESERVED:
        known = ", ".join(f.name for f in dataclasses.fields(NatsSettings))
        raise ConfigurationError(
            f"unknown nats:// option {name!r}; use one of {known} or a nats.connect argument"
        )
    return _convert(name, raw, param.default)


def check_topic(topic: str) -> None:
    if not SUBJECT.fullmatch(topic):
        raise ConfigurationError(
            f"topic {topic!r} is not a valid NATS subject: use tokens of letters, digits, '-' "
            "or '_' separated by single dots, without spaces or wildcards"
        )


def translate(exc: BaseException, url: str, what: str) -> BrokerError:
    """The broker error for a nats-py exception met while working on ``what``."""
    name = type(exc).__name__
    if isinstance(exc, nats.errors.ConnectionClosedError):
        return ClosedError(f"the adapter for {url} is closed; call connect() first")
    if isinstance(exc, nats.js.errors.NotFoundError):
        return TopicNotFoundError(f"{what} does not exist on NATS at {url}")
    if isinstance(exc, nats.errors.AuthorizationError | nats.errors.InvalidUserCredentialsError):
        return BrokerUnavailableError(
            f"NATS at {url} refused the credentials ({name}); check the user, password, token "
            "or credentials file in the URL"
        )
    if isinstance(exc, (nats.js.errors.BadRequestError, *_CALLER_ERRORS)):
        return ConfigurationError(f"NATS at {url} refused {what}: {_one_line(exc)}")
    if isinstance(exc, nats.js.errors.APIError) and not isinstance(exc, TRANSIENT):
        return BrokerError(f"NATS at {url} failed on {what}: {_one_line(exc)}")
    if isinstance(exc, (*TRANSIENT, OSError, nats.errors.Error)):
        return BrokerUnavailableError(
            f"NATS at {url} did not answer for {what} ({name}); check that nats-server is up "
            "with JetStream enabled (-js)"
        )
    return BrokerError(f"NATS at {url} failed on {what}: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # an error built without its arguments cannot always render itself
        text = ""
    return " ".join((text or type(exc).__name__).split())


def servers(url: str) -> list[str]:
    """``nats://u:p@h1:4222,h2:4222/?opts`` -> one nats-py server URL per host."""
    scheme, _, rest = url.partition("://")
    if not rest:
        raise ConfigurationError(f"broker URL {mask_url(url)!r} needs a host: nats://host:4222")
    location = rest.split("?", 1)[0].split("/", 1)[0]
    userinfo, _, hosts = location.rpartition("@")
    prefix = f"{scheme}://{userinfo + '@' if userinfo else ''}"
    return [prefix + (host or "127.0.0.1:4222") for host in hosts.split(",")]
