"""The schema registry's exceptions, each carrying Confluent's HTTP status and error code.

::

    RegistryError                              root; 500 / 50001 (store error) unless overridden
    ├── SchemaStoreError                       the storage failed or is unreachable
    ├── RegistryUnavailableError               the registry URL cannot be reached
    ├── UnauthorizedError                      401 / 40101: missing or wrong credentials
    ├── NotFoundError (LookupError)            404
    │   ├── SubjectNotFoundError               40401
    │   ├── VersionNotFoundError               40402
    │   ├── SchemaNotFoundError                40403
    │   ├── SubjectSoftDeletedError            40404: soft-deleted already
    │   ├── SubjectNotSoftDeletedError         40405: hard delete needs a soft delete first
    │   ├── VersionSoftDeletedError            40406
    │   ├── VersionNotSoftDeletedError         40407
    │   ├── CompatibilityNotConfiguredError    40408: no subject-level compatibility
    │   └── ModeNotConfiguredError             40409: no subject-level mode
    ├── IncompatibleSchemaError                409 / 409: refused by the compatibility level
    ├── InvalidInputError (ValueError)         422: the caller's input is wrong (a usage error)
    │   ├── InvalidSchemaError                 42201
    │   ├── InvalidVersionError                42202
    │   ├── InvalidCompatibilityError          42203
    │   ├── InvalidModeError                   42204
    │   ├── OperationNotPermittedError         42205: read-only or import mode rules
    │   └── ReferenceExistsError               42206: a deleted version is still referenced
    ├── SchemaValidationError (ValueError)     data does not match its schema (publish refused)
    └── SchemaDecodeError (ValueError)         bytes are not a readable wire-format payload
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CompatibilityNotConfiguredError",
    "IncompatibleSchemaError",
    "InvalidCompatibilityError",
    "InvalidInputError",
    "InvalidModeError",
    "InvalidSchemaError",
    "InvalidVersionError",
    "ModeNotConfiguredError",
    "NotFoundError",
    "OperationNotPermittedError",
    "ReferenceExistsError",
    "RegistryError",
    "RegistryUnavailableError",
    "SchemaDecodeError",
    "SchemaNotFoundError",
    "SchemaStoreError",
    "SchemaValidationError",
    "SubjectNotFoundError",
    "SubjectNotSoftDeletedError",
    "SubjectSoftDeletedError",
    "UnauthorizedError",
    "VersionNotFoundError",
    "VersionNotSoftDeletedError",
    "VersionSoftDeletedError",
    "error_for_code",
]


class RegistryError(Exception):
    """Root of the registry's errors; ``http_status`` and ``error_code`` are Confluent's."""

    http_status: ClassVar[int] = 500
    error_code: ClassVar[int] = 50001


class SchemaStoreError(RegistryError):
    """The storage backend failed (disk, database connection, schema of the tables)."""


class RegistryUnavailableError(RegistryError):
    """The registry at a URL could not be reached."""


class UnauthorizedError(RegistryError):
    """The request carried no or wrong credentials."""

    http_status = 401
    error_code = 40101


class NotFoundError(RegistryError, LookupError):
    """Something asked for does not exist."""

    http_status = 404
    error_code = 404


class SubjectNotFoundError(NotFoundError):
    """The subject does not exist (or only has soft-deleted versions)."""

    error_code = 40401


class VersionNotFoundError(NotFoundError):
    """The subject has no such version."""

    error_code = 40402


class SchemaNotFoundError(NotFoundError):
    """No schema has this id, or the subject has no version with this schema."""

    error_code = 40403


class SubjectSoftDeletedError(NotFoundError):
    """The subject was soft-deleted already; delete it with ``permanent=true``."""

    error_code = 40404


class SubjectNotSoftDeletedError(NotFoundError):
    """A permanent delete of a subject needs a soft delete first."""

    error_code = 40405


class VersionSoftDeletedError(NotFoundError):
    """The version was soft-deleted already; delete it with ``permanent=true``."""

    error_code = 40406


class VersionNotSoftDeletedError(NotFoundError):
    """A permanent delete of a version needs a soft delete first."""

    error_code = 40407


class CompatibilityNotConfiguredError(NotFoundError):
    """The subject has no compatibility level of its own."""

    error_code = 40408


class ModeNotConfiguredError(NotFoundError):
    """The subject has no mode of its own."""

    error_code = 40409


class IncompatibleSchemaError(RegistryError):
    """The schema breaks the subject's compatibility level; ``reasons`` says why."""

    http_status = 409
    error_code = 409

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.reasons = list(reasons or [])


class InvalidInputError(RegistryError, ValueError):
    """The request itself is wrong (HTTP 422): the caller's usage error."""

    http_status = 422
    error_code = 422


class InvalidSchemaError(InvalidInputError):
    """The schema text does not parse as its type, or a reference cannot be resolved."""

    error_code = 42201


class InvalidVersionError(InvalidInputError):
    """A version is neither a positive integer, ``latest`` nor ``-1``."""

    error_code = 42202


class InvalidCompatibilityError(InvalidInputError):
    """Not one of the seven compatibility levels."""

    error_code = 42203


class InvalidModeError(InvalidInputError):
    """Not one of READWRITE, READONLY, IMPORT."""

    error_code = 42204


class OperationNotPermittedError(InvalidInputError):
    """The subject's mode forbids the operation."""

    error_code = 42205


class ReferenceExistsError(InvalidInputError):
    """Another schema still references the version being deleted."""

    error_code = 42206


class SchemaValidationError(RegistryError, ValueError):
    """Data does not match the schema of its subject; the message names the field."""

    dlq_reason: ClassVar[str] = "schema-mismatch"
    field: str = ""  # the offending field's path, when known


class SchemaDecodeError(RegistryError, ValueError):
    """Bytes are not a Confluent wire-format payload with a known schema id."""

    dlq_reason: ClassVar[str] = "undecodable"


_BY_CODE: dict[int, type[RegistryError]] = {
    cls.error_code: cls
    for cls in (
        UnauthorizedError,
        SubjectNotFoundError,
        VersionNotFoundError,
        SchemaNotFoundError,
        SubjectSoftDeletedError,
        SubjectNotSoftDeletedError,
        VersionSoftDeletedError,
        VersionNotSoftDeletedError,
        CompatibilityNotConfiguredError,
        ModeNotConfiguredError,
        IncompatibleSchemaError,
        InvalidSchemaError,
        InvalidVersionError,
        InvalidCompatibilityError,
        InvalidModeError,
        OperationNotPermittedError,
        ReferenceExistsError,
    )
}


def error_for_code(error_code: int, http_status: int, message: str) -> RegistryError:
    """The exception for a Confluent error response (used by the HTTP client)."""
    cls = _BY_CODE.get(error_code)
    if cls is not None:
        return cls(message)
    if http_status == 404:
        return NotFoundError(message)
    if http_status == 422:
        return InvalidInputError(message)
    return RegistryError(message)
