"""aiormq exceptions, sorted by what the adapter does about them."""

from __future__ import annotations

from collections.abc import Sequence

import aiormq

from broker.adapters.kit import Translation, translate
from broker.errors import BrokerError, BrokerUnavailableError, PublishError

__all__ = ["CONNECT_ERRORS", "PUBLISH_ERRORS", "REFUSED", "RETRYABLE", "translate_error"]

#: Channel errors that retrying cannot fix: refused at once as PublishError.
REFUSED = (
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelPreconditionFailed,
    aiormq.exceptions.DeliveryError,
)
#: Errors after which the connection or channel is gone and the operation may be retried.
RETRYABLE = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    ConnectionError,
    OSError,
    RuntimeError,  # aiormq: "<Connection> closed" when a channel is asked of a dead connection
)
#: How a connection attempt that failed is reported.
CONNECT_ERRORS = (
    Translation(
        (OSError, aiormq.exceptions.AMQPError, TimeoutError),
        BrokerUnavailableError,
        "cannot connect to RabbitMQ at {url}: {detail}; check that the server runs and that "
        "the user, password and vhost in the URL are right",
    ),
)
#: How a publish that is not (or no longer) retried is reported.
PUBLISH_ERRORS = (
    Translation(REFUSED, PublishError, "RabbitMQ at {url} refused {what}: {detail}"),
    Translation(
        (BaseException,), PublishError, "RabbitMQ at {url} failed {what}: {name}: {detail}"
    ),
)


def translate_error(
    exc: BaseException, url: str, what: str, table: Sequence[Translation] = PUBLISH_ERRORS
) -> BrokerError:
    """The :mod:`broker.errors` exception for an aiormq error met while doing ``what``."""
    return translate(exc, table, url=url, what=what)
