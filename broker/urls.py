"""Broker URLs: scheme -> adapter factory, with lazy imports, install hints and did-you-mean.

``memory://``, ``sqlite:///path/to/broker.db``, ``kafka://host:9092[,host2:9092]``,
``amqp://user:pass@host:5672/vhost`` (``amqps://`` for TLS) and ``nats://host:4222``. Options ride
in the query string; each adapter reads them into its typed settings (``broker.adapters.kit``).
:func:`mask_url` is the one place that hides secrets in a URL before it is shown anywhere.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from broker.errors import ConfigurationError, MissingExtraError, UnknownBackendError

if TYPE_CHECKING:
    from broker.ports import Adapter

__all__ = ["DEFAULT_BROKER_URL", "BackendSpec", "adapter_from_url", "mask_url", "resolve_url"]

DEFAULT_BROKER_URL = "sqlite:///.choreo/broker.db"


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """Where a scheme's adapter lives and which extra installs its client library."""

    module: str
    factory: str
    extra: str | None
    client_module: str | None


BACKENDS: Mapping[str, BackendSpec] = {
    "memory": BackendSpec("broker.adapters.memory", "MemoryAdapter", None, None),
    "sqlite": BackendSpec("broker.adapters.sqlite", "SQLiteAdapter", None, None),
    "kafka": BackendSpec("broker.adapters.kafka", "KafkaAdapter", "kafka", "aiokafka"),
    "amqp": BackendSpec("broker.adapters.rabbitmq", "RabbitMQAdapter", "rabbitmq", "aio_pika"),
    "amqps": BackendSpec("broker.adapters.rabbitmq", "RabbitMQAdapter", "rabbitmq", "aio_pika"),
    "nats": BackendSpec("broker.adapters.nats", "NatsAdapter", "nats", "nats"),
    "tls": BackendSpec("broker.adapters.nats", "NatsAdapter", "nats", "nats"),
}

#: Query options whose value is a secret (passwords, tokens, key seeds), prefixed or not.
_SECRET_OPTION = re.compile(r"(?i)((?:^|&)[^=&]*(?:password|secret|token|seed)[^=&]*=)[^&]*")
#: Schemes whose userinfo without a password is a user name (shown); on any other scheme
#: (``nats://TOKEN@host``, an API key in ``https://KEY@registry``, a scheme we do not know)
#: it may be a token and is masked.
_USER_NAME_SCHEMES = frozenset(
    ("amqp", "amqps", "kafka", "postgresql", "postgres", "mysql", "mariadb")
)
#: The userinfo of a URL that does not parse (``scheme://userinfo@``).
_ANY_USERINFO = re.compile(r"(://)[^/?#]*@")


def mask_url(url: str) -> str:
    """The URL with its secrets replaced by ``***``: the password, secret-looking query options
    (``sasl_plain_password``, ``token``, ...) and a bare user part that may be a token (on
    ``nats://`` and unknown schemes). A URL that does not parse loses its whole user part."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _SECRET_OPTION.sub(r"\1***", _ANY_USERINFO.sub(r"\1***@", url))
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    elif at and userinfo and parts.scheme.lower() not in _USER_NAME_SCHEMES:
        netloc = f"***@{hosts}"
    query = _SECRET_OPTION.sub(r"\1***", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def resolve_url(url: str | None) -> str:
    """The broker URL to use: the argument, else CHOREO_BROKER_URL, else the embedded default."""
    return url or os.environ.get("CHOREO_BROKER_URL") or DEFAULT_BROKER_URL


def _spec_for(url: str) -> BackendSpec:
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    spec = BACKENDS.get(scheme)
    if spec is not None:
        return spec
    known = sorted(BACKENDS)
    guess = difflib.get_close_matches(scheme, known, n=1)
    hint = f"; did you mean {guess[0]}://?" if guess else ""
    shown = f"an unknown scheme {scheme!r}" if scheme else "no scheme"
    raise UnknownBackendError(
        f"broker URL {mask_url(url)!r} has {shown}{hint}; use one of "
        + ", ".join(f"{name}://" for name in known)
    )


def adapter_from_url(url: str, **options: Any) -> Adapter:
    """Build the adapter for ``url``; it reads the query string, and ``options`` win over it."""
    spec = _spec_for(url)
    if spec.client_module is not None:
        try:
            importlib.import_module(spec.client_module)
        except ImportError as exc:
            raise MissingExtraError(
                f"{urlsplit(url).scheme}:// needs the {spec.client_module} client library; "
                f"install it with: pip install 'choreograph[{spec.extra}]'"
            ) from exc
    module = importlib.import_module(spec.module)
    factory = getattr(module, spec.factory)
    try:
        adapter: Adapter = factory(url, **options)
    except TypeError as exc:
        raise ConfigurationError(f"broker URL {mask_url(url)!r}: {exc}") from exc
    return adapter
