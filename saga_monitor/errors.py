"""The saga monitor's exceptions.

::

    SagaError                                root of every error raised on purpose
    ├── SagaConfigError (ValueError)         the caller's input is wrong (a usage error)
    │   └── DefinitionError                  a saga definition is invalid (file, line and field)
    ├── SagaStoreError                       the state store failed or cannot be reached
    └── InstanceNotFoundError (LookupError)  no saga instance with that correlation id
"""

from __future__ import annotations

__all__ = [
    "DefinitionError",
    "InstanceNotFoundError",
    "SagaConfigError",
    "SagaError",
    "SagaStoreError",
]


class SagaError(Exception):
    """Root of every error the saga monitor raises on purpose."""


class SagaConfigError(SagaError, ValueError):
    """A definition, option or argument given by the caller is invalid; the message says which."""


class DefinitionError(SagaConfigError):
    """A saga definition is invalid; the message names the file, line and field."""


class SagaStoreError(SagaError):
    """The saga state store failed or cannot be reached; the message names the URL."""


class InstanceNotFoundError(SagaError, LookupError):
    """No saga instance matches the correlation id (and saga) asked for."""
