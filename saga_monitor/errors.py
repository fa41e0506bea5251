"""The saga monitor's exceptions.

::

    SagaError                                root; the CLI prints its message on one line (exit 1)
    ├── DefinitionError (ValueError)         a saga definition is invalid (file, line and field)
    ├── StoreError                           the state store failed or cannot be reached
    └── InstanceNotFoundError (LookupError)  no saga instance with that correlation id
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["DefinitionError", "InstanceNotFoundError", "SagaError", "StoreError"]


class SagaError(Exception):
    """Root of every error the saga monitor raises on purpose."""

    cli_exit_code: ClassVar[int] = 1


class DefinitionError(SagaError, ValueError):
    """A saga definition is invalid; the message names the file, line and field."""

    cli_exit_code: ClassVar[int] = 2


class StoreError(SagaError):
    """The saga state store failed or cannot be reached; the message names the URL."""


class InstanceNotFoundError(SagaError, LookupError):
    """No saga instance matches the correlation id (and saga) asked for."""
