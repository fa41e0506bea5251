"""What the registry's operations do inside one storage transaction, shared by all of them:
versions and their rows, schemas by id, references resolved, fingerprints, modes.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from schemas.compatibility import Resolved
from schemas.errors import (
    InvalidSchemaError,
    InvalidVersionError,
    OperationNotPermittedError,
    ReferenceExistsError,
    SchemaNotFoundError,
    SubjectNotFoundError,
    VersionNotFoundError,
)
from schemas.model import Mode, RegisteredSchema, Schema
from schemas.normalize import identity, normalized
from schemas.storage import GLOBAL, Transaction, VersionRow

__all__ = [
    "MAX_VERSION",
    "VersionSpec",
    "check_subject",
    "check_unreferenced",
    "check_writable",
    "find",
    "fingerprint",
    "mode",
    "parse_version",
    "prepared",
    "registered",
    "resolve",
    "rows",
    "same_schema",
    "schema_of",
]

VersionSpec = int | Literal["latest"]
MAX_VERSION = 2**31 - 1


def parse_version(raw: str | int) -> VersionSpec:
    """``latest``/``-1`` or a positive integer; anything else is Confluent's 42202."""
    text = str(raw).strip()
    if text.lower() == "latest" or text == "-1":
        return "latest"
    try:
        version = int(text)
    except ValueError:
        version = 0
    if not 1 <= version <= MAX_VERSION:
        raise InvalidVersionError(
            f"the specified version {raw!r} is not a valid version id; "
            "use a positive integer, latest or -1"
        )
    return version


def fingerprint(resolved: Resolved, *, normalize: bool = False) -> str:
    """The SHA-256 of the schema's identity (equal schemas share one id)."""
    return hashlib.sha256(identity(resolved, normalize=normalize).encode()).hexdigest()


def same_schema(
    tx: Transaction, subject_rows: list[VersionRow], resolved: Resolved, *, normalize: bool
) -> VersionRow | None:
    """The newest row of ``subject_rows`` holding this schema (``normalize``: or an equivalent)."""
    known_id = tx.schema_id(fingerprint(resolved))
    for row in reversed(subject_rows):
        if row.schema_id == known_id:
            return row
    if not normalize:
        return None
    wanted = identity(resolved, normalize=True)
    for row in reversed(subject_rows):
        if identity(resolve(tx, schema_of(tx, row)), normalize=True) == wanted:
            return row
    return None


def registered(tx: Transaction, row: VersionRow) -> RegisteredSchema:
    """The row as Confluent's registered schema."""
    return RegisteredSchema(
        row.subject, row.version, row.schema_id, schema_of(tx, row), row.deleted
    )


def mode(tx: Transaction, subject: str) -> Mode:
    """The mode in force: a global READONLY_OVERRIDE wins over a subject's own mode."""
    top = tx.setting("mode", GLOBAL)
    if top is not None and Mode.parse(top) is Mode.READONLY_OVERRIDE:
        return Mode.READONLY_OVERRIDE
    raw = tx.setting("mode", subject) or top
    return Mode.parse(raw) if raw else Mode.READWRITE


def check_writable(tx: Transaction, subject: str) -> None:
    """42205 when the subject (or the registry) is read-only."""
    if mode(tx, subject).read_only:
        where = f"subject {subject!r}" if subject else "the registry"
        raise OperationNotPermittedError(f"{where} is in read-only mode")


def check_subject(subject: str) -> None:
    """42201 for an empty subject, surrounding spaces or control characters."""
    if not subject or subject.strip() != subject or any(ord(ch) < 32 for ch in subject):
        raise InvalidSchemaError(
            f"subject name {subject!r} is invalid: use a non-empty name without control "
            "characters or surrounding spaces"
        )


def rows(tx: Transaction, subject: str, *, deleted: bool = False) -> list[VersionRow]:
    """The subject's versions (soft-deleted ones too with ``deleted``); 40401 when none."""
    found = [row for row in tx.versions(subject) if deleted or not row.deleted]
    if not found:
        raise SubjectNotFoundError(f"subject {subject!r} not found")
    return found


def find(found: list[VersionRow], subject: str, spec: VersionSpec) -> VersionRow:
    """The row for ``spec`` (``latest``: the newest); 40402 when there is none."""
    if spec == "latest":
        return found[-1]
    for row in found:
        if row.version == spec:
            return row
    raise VersionNotFoundError(f"version {spec} of subject {subject!r} not found")


def schema_of(tx: Transaction, row: VersionRow) -> Schema:
    """The schema a version row points at."""
    schema = tx.schema(row.schema_id)
    if schema is None:  # pragma: no cover - the tables are written together
        raise SchemaNotFoundError(f"schema {row.schema_id} not found")
    return schema


def check_unreferenced(tx: Transaction, row: VersionRow) -> None:
    """42206 when another live schema references this version."""
    users = tx.referenced_by(row.subject, row.version)
    if users:
        raise ReferenceExistsError(
            f"version {row.version} of subject {row.subject!r} is referenced by schema "
            f"ids {users}; delete those first"
        )


def resolve(tx: Transaction, schema: Schema, depth: int = 0) -> Resolved:
    """The schema with its references' schemas, dependencies first (42201 when missing)."""
    if depth > 32:
        raise InvalidSchemaError("schema references nest too deeply (a cycle?)")
    dependencies: dict[str, Schema] = {}
    for ref in schema.references:
        row = next(
            (r for r in tx.versions(ref.subject) if r.version == ref.version and not r.deleted),
            None,
        )
        if row is None:
            raise InvalidSchemaError(
                f"reference {ref.name!r}: version {ref.version} of subject {ref.subject!r} "
                "not found; register it first"
            )
        target = resolve(tx, schema_of(tx, row), depth + 1)
        for name, dependency in target.dependencies:
            dependencies.setdefault(name, dependency)
        dependencies.setdefault(ref.name, target.schema)
    return Resolved(schema, tuple(dependencies.items()))


def prepared(tx: Transaction, schema: Schema, *, normalize: bool) -> Resolved:
    """The schema resolved, checked valid (42201 if not) and, ``normalize``, normalized."""
    from schemas.compatibility import check_valid

    resolved = resolve(tx, schema)
    check_valid(resolved)
    return normalized(resolved) if normalize else resolved
