"""aiokafka exceptions as :mod:`broker.errors`, by table (see :mod:`broker.adapters.kit.errors`)."""

from __future__ import annotations

from aiokafka import errors as kerr

from broker.adapters.kit import Translation, translate
from broker.errors import (
    BrokerError,
    BrokerUnavailableError,
    ConfigurationError,
    PublishError,
    PublishTimeoutError,
    TopicNotFoundError,
)

__all__ = ["TRANSLATIONS", "retriable", "translate_error"]

TRANSLATIONS = (
    Translation(
        (
            kerr.AuthenticationFailedError,
            kerr.SaslAuthenticationFailed,
            kerr.AuthenticationMethodNotSupported,
            kerr.UnsupportedSaslMechanismError,
            kerr.IllegalSaslStateError,
        ),
        BrokerUnavailableError,
        "Kafka at {url} refused the credentials while {what} ({detail}); check "
        "security_protocol, sasl_mechanism, sasl_plain_username and sasl_plain_password",
    ),
    Translation(
        (kerr.KafkaConnectionError, kerr.NoBrokersAvailable, kerr.NodeNotReadyError),
        BrokerUnavailableError,
        "cannot reach Kafka at {url} while {what} ({detail}); check that the broker runs, "
        "the host and port, and the advertised listeners",
    ),
    Translation(
        (kerr.KafkaTimeoutError, kerr.RequestTimedOutError, TimeoutError),
        PublishTimeoutError,
        "Kafka at {url} did not answer in time while {what}",
    ),
    Translation(
        (kerr.UnknownTopicOrPartitionError,),
        TopicNotFoundError,
        "topic missing on Kafka at {url} while {what}; create it first or set auto_create=true",
    ),
    Translation(
        (
            kerr.TopicAuthorizationFailedError,
            kerr.GroupAuthorizationFailedError,
            kerr.ClusterAuthorizationFailedError,
            kerr.TransactionalIdAuthorizationFailed,
        ),
        PublishError,
        "Kafka at {url} denied access while {what} ({detail}); check the ACLs",
    ),
    Translation(
        (kerr.KafkaConfigurationError, kerr.IllegalArgumentError),
        ConfigurationError,
        "invalid Kafka configuration for {url}: {detail}",
    ),
    Translation(
        (BaseException,), PublishError, "Kafka at {url} failed while {what}: {name}: {detail}"
    ),
)


def translate_error(exc: BaseException, url: str, what: str) -> BrokerError:
    """The :mod:`broker.errors` exception for an aiokafka error raised while doing ``what``."""
    return translate(exc, TRANSLATIONS, url=url, what=what)


def retriable(exc: BaseException) -> bool:
    """Whether trying again may succeed (aiokafka marks such errors ``retriable``)."""
    return bool(getattr(exc, "retriable", False)) or isinstance(exc, kerr.KafkaTimeoutError)
