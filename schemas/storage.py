"""Where the registry keeps its state: its tables and queries over :mod:`broker.sqlstore`.

``sqlite:///path/to/registry.db`` (the default; ``sqlite://`` alone is a temporary file) or
``postgresql://user@host:5432/db?table_prefix=registry_&schema=name``: the tables are named
``<table_prefix>schemas`` and so on (default prefix ``registry_`` on PostgreSQL, none in a SQLite
file of its own), so several registries can share a database. A write transaction is exclusive
(``BEGIN IMMEDIATE`` on SQLite, an advisory transaction lock keyed by the prefix on PostgreSQL),
so concurrent registrations, even from several processes, never reuse an id or skip a version.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from broker.sqlstore import POSTGRESQL, Migration, SqlStore, Tx, upsert
from schemas.errors import InvalidInputError, SchemaStoreError
from schemas.model import Reference, Schema, SchemaType

__all__ = [
    "DEFAULT_STORAGE_URL",
    "MIGRATIONS",
    "SchemaRow",
    "SchemaStore",
    "Transaction",
    "VersionRow",
]

DEFAULT_STORAGE_URL = "sqlite:///.choreo/registry.db"
Setting = Literal["config", "mode"]
GLOBAL = ""  # the subject key of registry-wide settings

#: The registry's layout, version by version (1: the tables from before versions were kept).
MIGRATIONS = (
    Migration(
        1,
        (
            "CREATE TABLE IF NOT EXISTS {p}meta (key TEXT PRIMARY KEY, value {bigint} NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {p}schemas (id {bigint} PRIMARY KEY, "
            "fingerprint TEXT NOT NULL UNIQUE, type TEXT NOT NULL, text TEXT NOT NULL, "
            "refs TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {p}versions (subject TEXT NOT NULL, "
            "version INTEGER NOT NULL, schema_id {bigint} NOT NULL, deleted INTEGER NOT NULL, "
            "PRIMARY KEY (subject, version))",
            "CREATE INDEX IF NOT EXISTS {p}versions_by_schema ON {p}versions (schema_id)",
            "CREATE TABLE IF NOT EXISTS {p}refs (schema_id {bigint} NOT NULL, "
            "subject TEXT NOT NULL, version INTEGER NOT NULL)",
            "CREATE INDEX IF NOT EXISTS {p}refs_by_target ON {p}refs (subject, version)",
            "CREATE TABLE IF NOT EXISTS {p}config (subject TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {p}mode (subject TEXT PRIMARY KEY, value TEXT NOT NULL)",
        ),
    ),
)


@dataclasses.dataclass(frozen=True, slots=True)
class VersionRow:
    """One version of a subject."""

    subject: str
    version: int
    schema_id: int
    deleted: bool


@dataclasses.dataclass(frozen=True, slots=True)
class SchemaRow:
    """One schema with its global id."""

    id: int
    schema: Schema


class SchemaStore:
    """The registry's database: :meth:`transaction` hands out a :class:`Transaction`."""

    def __init__(self, url: str = DEFAULT_STORAGE_URL) -> None:
        self._db = SqlStore(
            url,
            what="registry storage",
            hint="sqlite:///path/to/registry.db or postgresql://user@host:5432/db",
            error=SchemaStoreError,
            usage_error=InvalidInputError,
            options=("table_prefix",),
        )
        default = "registry_" if self._db.dialect is POSTGRESQL else ""
        self._db.open(self._db.options.get("table_prefix", default), MIGRATIONS)
        self.url = self._db.url

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Transaction]:
        """A transaction; ``write=True`` takes the writer lock until it ends."""
        with self._db.transaction(write=write, exclusive=write) as tx:
            yield Transaction(tx)

    def close(self) -> None:
        """Release connections."""
        self._db.close()


class Transaction:
    """The operations the registry runs inside one storage transaction."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx

    def schema(self, schema_id: int) -> Schema | None:
        """The schema with this id, if any."""
        row = self._tx.one("SELECT type, text, refs FROM {p}schemas WHERE id = ?", schema_id)
        return None if row is None else _schema(row[0], row[1], row[2])

    def schema_id(self, fingerprint: str) -> int | None:
        """The id of the schema with this fingerprint, if any."""
        row = self._tx.one("SELECT id FROM {p}schemas WHERE fingerprint = ?", fingerprint)
        return None if row is None else int(row[0])

    def schemas(self) -> list[SchemaRow]:
        """Every stored schema, by id."""
        rows = self._tx.all("SELECT id, type, text, refs FROM {p}schemas ORDER BY id")
        return [SchemaRow(int(r[0]), _schema(r[1], r[2], r[3])) for r in rows]

    def add_schema(self, schema: Schema, fingerprint: str, schema_id: int | None = None) -> int:
        """Store a new schema under the next id (or ``schema_id``, in import mode)."""
        row = self._tx.one("SELECT value FROM {p}meta WHERE key = 'next_id'")
        next_id = 1 if row is None else int(row[0])
        new_id = next_id if schema_id is None else schema_id
        refs = json.dumps([ref.to_dict() for ref in schema.references])
        self._tx.execute(
            "INSERT INTO {p}schemas (id, fingerprint, type, text, refs) VALUES (?, ?, ?, ?, ?)",
            new_id,
            fingerprint,
            schema.type.value,
            schema.text,
            refs,
        )
        for ref in schema.references:
            self._tx.execute(
                "INSERT INTO {p}refs (schema_id, subject, version) VALUES (?, ?, ?)",
                new_id,
                ref.subject,
                ref.version,
            )
        following = max(next_id, new_id + 1)
        self._tx.execute(_NEXT_ID, "next_id", following)
        return new_id

    def versions(
        self, subject: str | None = None, schema_id: int | None = None
    ) -> list[VersionRow]:
        """Versions (soft-deleted too) of one subject, of one schema, or all; in order."""
        sql = "SELECT subject, version, schema_id, deleted FROM {p}versions"
        params: list[Any] = []
        if subject is not None:
            sql += " WHERE subject = ?"
            params.append(subject)
        elif schema_id is not None:
            sql += " WHERE schema_id = ?"
            params.append(schema_id)
        rows = self._tx.all(sql + " ORDER BY subject, version", *params)
        return [VersionRow(str(r[0]), int(r[1]), int(r[2]), bool(r[3])) for r in rows]

    def add_version(self, subject: str, version: int, schema_id: int) -> None:
        """Record a new version."""
        self._tx.execute(
            "INSERT INTO {p}versions (subject, version, schema_id, deleted) VALUES (?, ?, ?, 0)",
            subject,
            version,
            schema_id,
        )

    def mark_deleted(self, subject: str, version: int) -> None:
        """Soft-delete a version."""
        self._tx.execute(
            "UPDATE {p}versions SET deleted = 1 WHERE subject = ? AND version = ?", subject, version
        )

    def remove_version(self, subject: str, version: int) -> None:
        """Hard-delete a version."""
        self._tx.execute(
            "DELETE FROM {p}versions WHERE subject = ? AND version = ?", subject, version
        )

    def referenced_by(self, subject: str, version: int) -> list[int]:
        """Ids of schemas with live versions that reference this version."""
        rows = self._tx.all(
            "SELECT DISTINCT r.schema_id FROM {p}refs r JOIN {p}versions v "
            "ON v.schema_id = r.schema_id AND v.deleted = 0 "
            "WHERE r.subject = ? AND r.version = ? ORDER BY r.schema_id",
            subject,
            version,
        )
        return [int(r[0]) for r in rows]

    def setting(self, kind: Setting, subject: str) -> str | None:
        """A compatibility level or mode (``subject`` ``""`` for the global one)."""
        row = self._tx.one(f"SELECT value FROM {{p}}{kind} WHERE subject = ?", subject)
        return None if row is None else str(row[0])

    def set_setting(self, kind: Setting, subject: str, value: str) -> None:
        """Set a compatibility level or mode."""
        self._tx.execute(_SET[kind], subject, value)

    def delete_setting(self, kind: Setting, subject: str) -> None:
        """Forget a compatibility level or mode."""
        self._tx.execute(f"DELETE FROM {{p}}{kind} WHERE subject = ?", subject)


_NEXT_ID = upsert("{p}meta", ("key", "value"), key=("key",))
_SET = {
    kind: upsert(f"{{p}}{kind}", ("subject", "value"), key=("subject",))
    for kind in ("config", "mode")
}


def _schema(kind: str, text: str, refs: str) -> Schema:
    references = tuple(Reference.from_dict(raw) for raw in json.loads(refs))
    return Schema(text=text, type=SchemaType(kind), references=references)
