"""choreograph's broker-agnostic pub/sub layer: CloudEvents over any backend, with retries,
dead-letter topics, TTLs, an idempotent inbox and a circuit breaker applied the same everywhere.

    from broker import Bus, Event

    async with Bus("sqlite:///.choreo/broker.db", source="billing") as bus:
        await bus.publish("invoices", type="invoice.issued", data={"total": 42})
"""

from broker.batch import Outcome, PartialFailure, PublishResult
from broker.bus import Bus, Subscriber
from broker.context import current_deliveries, current_delivery, current_event
from broker.deadletter import DeadLetterGroup, DeadLetterSelection
from broker.declarations import Publisher
from broker.envelope import Event
from broker.errors import (
    BrokerError,
    BrokerUnavailableError,
    CapabilityError,
    ClosedError,
    ConfigurationError,
    EnvelopeError,
    HandlerTimeoutError,
    MissingExtraError,
    PayloadError,
    PublishError,
    PublishTimeoutError,
    RequestFailedError,
    RequestTimeoutError,
    TopicNotFoundError,
    UnknownBackendError,
)
from broker.policies import CircuitBreaker, DeadLetter, MemoryInbox, Policy, Retry, SQLiteInbox
from broker.ports import (
    Adapter,
    Backlog,
    Capabilities,
    Delivery,
    PayloadCodec,
    Subscription,
    TopicInfo,
)
from broker.urls import DEFAULT_BROKER_URL, adapter_from_url, mask_url

__all__ = [
    "DEFAULT_BROKER_URL",
    "Adapter",
    "Backlog",
    "BrokerError",
    "BrokerUnavailableError",
    "Bus",
    "Capabilities",
    "CapabilityError",
    "CircuitBreaker",
    "ClosedError",
    "ConfigurationError",
    "DeadLetter",
    "DeadLetterGroup",
    "DeadLetterSelection",
    "Delivery",
    "EnvelopeError",
    "Event",
    "HandlerTimeoutError",
    "MemoryInbox",
    "MissingExtraError",
    "Outcome",
    "PartialFailure",
    "PayloadCodec",
    "PayloadError",
    "Policy",
    "PublishError",
    "PublishResult",
    "PublishTimeoutError",
    "Publisher",
    "RequestFailedError",
    "RequestTimeoutError",
    "Retry",
    "SQLiteInbox",
    "Subscriber",
    "Subscription",
    "TopicInfo",
    "TopicNotFoundError",
    "UnknownBackendError",
    "adapter_from_url",
    "current_deliveries",
    "current_delivery",
    "current_event",
    "mask_url",
]
