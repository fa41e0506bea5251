"""nats-py exceptions as :mod:`broker.errors`, by table (see :mod:`broker.adapters.kit.errors`)."""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors

from broker.adapters.kit import Translation, translate
from broker.errors import (
    BrokerError,
    BrokerUnavailableError,
    ClosedError,
    ConfigurationError,
    TopicNotFoundError,
)

__all__ = ["TRANSIENT", "TRANSLATIONS", "translate_error"]

#: Errors after which the same request may succeed: retried until the operation's deadline.
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
    nats.js.errors.BadRequestError,
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
_UNAVAILABLE = (
    "NATS at {url} did not answer for {what} ({name}); check that nats-server is up with "
    "JetStream enabled (-js)"
)
TRANSLATIONS = (
    Translation(
        (nats.errors.ConnectionClosedError,),
        ClosedError,
        "the adapter for {url} is closed; call connect() first",
    ),
    Translation(
        (nats.js.errors.NotFoundError,),
        TopicNotFoundError,
        "{what} does not exist on NATS at {url}",
    ),
    Translation(
        (nats.errors.AuthorizationError, nats.errors.InvalidUserCredentialsError),
        BrokerUnavailableError,
        "NATS at {url} refused the credentials ({name}); check the user, password, token or "
        "credentials file in the URL",
    ),
    Translation(_CALLER_ERRORS, ConfigurationError, "NATS at {url} refused {what}: {detail}"),
    Translation(TRANSIENT, BrokerUnavailableError, _UNAVAILABLE),
    Translation(
        (nats.js.errors.APIError,), BrokerError, "NATS at {url} failed on {what}: {detail}"
    ),
    Translation((OSError, nats.errors.Error), BrokerUnavailableError, _UNAVAILABLE),
    Translation((BaseException,), BrokerError, "NATS at {url} failed on {what}: {detail}"),
)


def translate_error(exc: BaseException, url: str, what: str) -> BrokerError:
    """The broker error for a nats-py exception met while working on ``what``."""
    return translate(exc, TRANSLATIONS, url=url, what=what)
