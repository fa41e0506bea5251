"""The schema registry: a Confluent-compatible REST server, compatibility checks, storage,
an async client (HTTP or embedded), wire-format serializers and the bus codec.

Quick use::

    from schemas import RegistryClient, SchemaCodec

    client = RegistryClient.from_url("sqlite:///.choreo/registry.db")  # or http://host:8081
    codec = SchemaCodec(client, {"orders": "orders-value"})
"""

from schemas.client import HttpRegistry, RegistryClient
from schemas.codec import EventLike, SchemaCodec
from schemas.compatibility import Resolved, check_compatibility
from schemas.errors import (
    IncompatibleSchemaError,
    InvalidCompatibilityError,
    InvalidInputError,
    InvalidSchemaError,
    InvalidVersionError,
    NotFoundError,
    OperationNotPermittedError,
    RegistryError,
    RegistryUnavailableError,
    SchemaDecodeError,
    SchemaNotFoundError,
    SchemaStoreError,
    SchemaValidationError,
    SubjectNotFoundError,
    UnauthorizedError,
    VersionNotFoundError,
)
from schemas.model import (
    Compatibility,
    CompatibilityResult,
    Mode,
    Reference,
    RegisteredSchema,
    Schema,
    SchemaType,
)
from schemas.registry import Registry
from schemas.serde import (
    Deserializer,
    Serializer,
    json_schema_for,
    pack,
    record_name_strategy,
    topic_name_strategy,
    topic_record_name_strategy,
    unpack,
)
from schemas.storage import DEFAULT_STORAGE_URL, SchemaStore

__all__ = [
    "DEFAULT_STORAGE_URL",
    "Compatibility",
    "CompatibilityResult",
    "Deserializer",
    "EventLike",
    "HttpRegistry",
    "IncompatibleSchemaError",
    "InvalidCompatibilityError",
    "InvalidInputError",
    "InvalidSchemaError",
    "InvalidVersionError",
    "Mode",
    "NotFoundError",
    "OperationNotPermittedError",
    "Reference",
    "RegisteredSchema",
    "Registry",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailableError",
    "Resolved",
    "Schema",
    "SchemaCodec",
    "SchemaDecodeError",
    "SchemaNotFoundError",
    "SchemaStore",
    "SchemaStoreError",
    "SchemaType",
    "SchemaValidationError",
    "Serializer",
    "SubjectNotFoundError",
    "UnauthorizedError",
    "VersionNotFoundError",
    "check_compatibility",
    "json_schema_for",
    "pack",
    "record_name_strategy",
    "topic_name_strategy",
    "topic_record_name_strategy",
    "unpack",
]
