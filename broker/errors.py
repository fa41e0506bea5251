"""The broker exception hierarchy.

Every error the pub/sub layer raises on purpose is a :class:`BrokerError`; where the meaning
matches a builtin, the error subclasses it too, so ``except TimeoutError`` keeps working::

    BrokerError
    ├── ConfigurationError (ValueError)       a bad URL, option or policy
    │   ├── UnknownBackendError               a URL scheme no adapter serves (did-you-mean)
    │   └── MissingExtraError (ImportError)   the adapter's client library is not installed
    ├── BrokerUnavailableError (ConnectionError)  server unreachable or credentials refused
    ├── PublishError                          the broker did not durably accept an event
    │   └── PublishTimeoutError (TimeoutError)
    ├── EnvelopeError (ValueError)            bytes that are not a CloudEvent
    ├── PayloadError (ValueError)             data refused by the topic's codec (schema)
    ├── TopicNotFoundError (LookupError)      a topic (or DLQ entry) that does not exist
    ├── CapabilityError                       the backend cannot do what was asked
    ├── RequestTimeoutError (TimeoutError)    no reply to a request in time
    ├── RequestFailedError                    the reply to a request is an error reply
    ├── HandlerTimeoutError (TimeoutError)    a handler ran past the policy's handler_timeout
    └── ClosedError                           the bus or adapter is already closed

Messages are single sentences that name the thing and what to do about it; URLs in them carry
masked passwords (see :func:`broker.urls.mask_url`).
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "BrokerUnavailableError",
    "CapabilityError",
    "ClosedError",
    "ConfigurationError",
    "EnvelopeError",
    "HandlerTimeoutError",
    "MissingExtraError",
    "PayloadError",
    "PublishError",
    "PublishTimeoutError",
    "RequestFailedError",
    "RequestTimeoutError",
    "TopicNotFoundError",
    "UnknownBackendError",
]


class BrokerError(Exception):
    """Root of every error raised on purpose by :mod:`broker`."""


class ConfigurationError(BrokerError, ValueError):
    """A URL, option or policy is invalid; the message says which and how to fix it."""


class UnknownBackendError(ConfigurationError):
    """The URL scheme names no known backend."""


class MissingExtraError(ConfigurationError, ImportError):
    """The backend's client library is not installed; the message names the extra."""


class BrokerUnavailableError(BrokerError, ConnectionError):
    """The broker cannot be reached, or refused the credentials."""


class PublishError(BrokerError):
    """The broker did not durably accept an event."""


class PublishTimeoutError(PublishError, TimeoutError):
    """The broker did not confirm an event in time."""


class EnvelopeError(BrokerError, ValueError):
    """A message is not a valid CloudEvent."""


class PayloadError(BrokerError, ValueError):
    """An event's data was refused by the codec bound to its topic (for example a schema)."""


class TopicNotFoundError(BrokerError, LookupError):
    """A topic, or an entry in it, does not exist."""


class CapabilityError(BrokerError):
    """The backend cannot provide the requested behaviour and it cannot be emulated."""


class HandlerTimeoutError(BrokerError, TimeoutError):
    """A handler did not return within the policy's ``handler_timeout``: a failed attempt."""


class ClosedError(BrokerError):
    """The bus or adapter was used after it was closed."""


class RequestTimeoutError(BrokerError, TimeoutError):
    """No reply to a :meth:`Bus.request <broker.Bus.request>` arrived within its timeout."""


class RequestFailedError(BrokerError):
    """The handler of a request failed: the reply is an error reply (``replyerror``)."""

    def __init__(self, message: str, reply: object = None) -> None:
        super().__init__(message)
        #: The error reply :class:`~broker.Event` (its ``replyerror`` extension says why).
        self.reply = reply
