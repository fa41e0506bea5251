"""Where the registry keeps its state: one interface, a SQLite and a PostgreSQL backend.

A :class:`Store` hands out transactions; a write transaction holds the store's writer lock
(``BEGIN IMMEDIATE`` on SQLite, an advisory transaction lock on PostgreSQL) so that concurrent
registrations, even from several processes, never reuse an id or skip a version.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol

from schemas.errors import InvalidInputError
from schemas.model import Reference, Schema, SchemaType

__all__ = [
    "DEFAULT_STORAGE_URL",
    "SchemaRow",
    "SqlTransaction",
    "Store",
    "Transaction",
    "VersionRow",
    "open_store",
]

Setting = Literal["config", "mode"]
GLOBAL = ""  # the subject key of registry-wide settings


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


class Transaction(Protocol):
    """The operations the registry runs inside one storage transaction."""

    def schema(self, schema_id: int) -> Schema | None:
        """The schema with this id, if any."""
        ...

    def schema_id(self, fingerprint: str) -> int | None:
        """The id of the schema with this fingerprint, if any."""
        ...

    def schemas(self) -> list[SchemaRow]:
        """Every stored schema, by id."""
        ...

    def add_schema(self, schema: Schema, fingerprint: str, schema_id: int | None = None) -> int:
        """Store a new schema under the next id (or ``schema_id``, in import mode)."""
        ...

    def versions(
        self, subject: str | None = None, schema_id: int | None = None
    ) -> list[VersionRow]:
        """Versions (soft-deleted too) of one subject, of one schema, or all; in order."""
        ...

    def add_version(self, subject: str, version: int, schema_id: int) -> None:
        """Record a new version."""
        ...

    def mark_deleted(self, subject: str, version: int) -> None:
        """Soft-delete a version."""
        ...

    def remove_version(self, subject: str, version: int) -> None:
        """Hard-delete a version."""
        ...

    def referenced_by(self, subject: str, version: int) -> list[int]:
        """Ids of schemas with live versions that reference this version."""
        ...

    def setting(self, kind: Setting, subject: str) -> str | None:
        """A compatibility level or mode (``subject`` ``""`` for the global one)."""
        ...

    def set_setting(self, kind: Setting, subject: str, value: str) -> None:
        """Set a compatibility level or mode."""
        ...

    def delete_setting(self, kind: Setting, subject: str) -> None:
        """Forget a compatibility level or mode."""
        ...


class Store(Protocol):
    """A registry storage backend."""

    url: str

    def transaction(self, *, write: bool) -> AbstractContextManager[Transaction]:
        """A transaction; ``write=True`` takes the writer lock."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def ddl(prefix: str, id_type: str = "INTEGER") -> list[str]:
    """The tables (shared by both backends; ``prefix`` isolates several registries)."""
    return [
        f"CREATE TABLE IF NOT EXISTS {prefix}meta (key TEXT PRIMARY KEY, value {id_type} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {prefix}schemas (id {id_type} PRIMARY KEY, "
        "fingerprint TEXT NOT NULL UNIQUE, type TEXT NOT NULL, text TEXT NOT NULL, "
        "refs TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {prefix}versions (subject TEXT NOT NULL, "
        f"version INTEGER NOT NULL, schema_id {id_type} NOT NULL, deleted INTEGER NOT NULL, "
        "PRIMARY KEY (subject, version))",
        f"CREATE INDEX IF NOT EXISTS {prefix}versions_by_schema ON {prefix}versions (schema_id)",
        f"CREATE TABLE IF NOT EXISTS {prefix}refs (schema_id {id_type} NOT NULL, "
        "subject TEXT NOT NULL, version INTEGER NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {prefix}refs_by_target ON {prefix}refs (subject, version)",
        *(
            f"CREATE TABLE IF NOT EXISTS {prefix}{kind} "
            "(subject TEXT PRIMARY KEY, value TEXT NOT NULL)"
            for kind in ("config", "mode")
        ),
    ]


class Executor(Protocol):
    """The part of a DB-API connection that :class:`SqlTransaction` uses."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement."""
        ...


class SqlTransaction:
    """The :class:`Transaction` in portable SQL (``?`` placeholders, rewritten per backend)."""

    def __init__(self, conn: Executor, prefix: str, placeholder: str = "?") -> None:
        self._conn, self._p, self._placeholder = conn, prefix, placeholder

    def _run(self, sql: str, *params: Any) -> Any:
        sql = sql.replace("{p}", self._p)
        if self._placeholder != "?":
            sql = sql.replace("?", self._placeholder)
        return self._conn.execute(sql, params)

    def _rows(self, sql: str, *params: Any) -> Iterator[Any]:
        return iter(self._run(sql, *params).fetchall())

    def schema(self, schema_id: int) -> Schema | None:
        row = self._run(
            "SELECT type, text, refs FROM {p}schemas WHERE id = ?", schema_id
        ).fetchone()
        return None if row is None else _schema(row[0], row[1], row[2])

    def schema_id(self, fingerprint: str) -> int | None:
        row = self._run("SELECT id FROM {p}schemas WHERE fingerprint = ?", fingerprint).fetchone()
        return None if row is None else int(row[0])

    def schemas(self) -> list[SchemaRow]:
        rows = self._rows("SELECT id, type, text, refs FROM {p}schemas ORDER BY id")
        return [SchemaRow(int(r[0]), _schema(r[1], r[2], r[3])) for r in rows]

    def add_schema(self, schema: Schema, fingerprint: str, schema_id: int | None = None) -> int:
        row = self._run("SELECT value FROM {p}meta WHERE key = 'next_id'").fetchone()
        next_id = 1 if row is None else int(row[0])
        new_id = next_id if schema_id is None else schema_id
        refs = json.dumps([ref.to_dict() for ref in schema.references])
        self._run(
            "INSERT INTO {p}schemas (id, fingerprint, type, text, refs) VALUES (?, ?, ?, ?, ?)",
            new_id,
            fingerprint,
            schema.type.value,
            schema.text,
            refs,
        )
        for ref in schema.references:
            self._run(
                "INSERT INTO {p}refs (schema_id, subject, version) VALUES (?, ?, ?)",
                new_id,
                ref.subject,
                ref.version,
            )
        following = max(next_id, new_id + 1)
        if row is None:
            self._run("INSERT INTO {p}meta (key, value) VALUES ('next_id', ?)", following)
        else:
            self._run("UPDATE {p}meta SET value = ? WHERE key = 'next_id'", following)
        return new_id

    def versions(
        self, subject: str | None = None, schema_id: int | None = None
    ) -> list[VersionRow]:
        sql = "SELECT subject, version, schema_id, deleted FROM {p}versions"
        params: list[Any] = []
        if subject is not None:
            sql += " WHERE subject = ?"
            params.append(subject)
        elif schema_id is not None:
            sql += " WHERE schema_id = ?"
            params.append(schema_id)
        rows = self._rows(sql + " ORDER BY subject, version", *params)
        return [VersionRow(str(r[0]), int(r[1]), int(r[2]), bool(r[3])) for r in rows]

    def add_version(self, subject: str, version: int, schema_id: int) -> None:
        self._run(
            "INSERT INTO {p}versions (subject, version, schema_id, deleted) VALUES (?, ?, ?, 0)",
            subject,
            version,
            schema_id,
        )

    def mark_deleted(self, subject: str, version: int) -> None:
        self._run(
            "UPDATE {p}versions SET deleted = 1 WHERE subject = ? AND version = ?", subject, version
        )

    def remove_version(self, subject: str, version: int) -> None:
        self._run("DELETE FROM {p}versions WHERE subject = ? AND version = ?", subject, version)

    def referenced_by(self, subject: str, version: int) -> list[int]:
        rows = self._rows(
            "SELECT DISTINCT r.schema_id FROM {p}refs r JOIN {p}versions v "
            "ON v.schema_id = r.schema_id AND v.deleted = 0 "
            "WHERE r.subject = ? AND r.version = ? ORDER BY r.schema_id",
            subject,
            version,
        )
        return [int(r[0]) for r in rows]

    def setting(self, kind: Setting, subject: str) -> str | None:
        row = self._run(f"SELECT value FROM {{p}}{kind} WHERE subject = ?", subject).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, kind: Setting, subject: str, value: str) -> None:
        self._run(f"DELETE FROM {{p}}{kind} WHERE subject = ?", subject)
        self._run(f"INSERT INTO {{p}}{kind} (subject, value) VALUES (?, ?)", subject, value)

    def delete_setting(self, kind: Setting, subject: str) -> None:
        self._run(f"DELETE FROM {{p}}{kind} WHERE subject = ?", subject)


def _schema(kind: str, text: str, refs: str) -> Schema:
    references = tuple(Reference.from_dict(raw) for raw in json.loads(refs))
    return Schema(text=text, type=SchemaType(kind), references=references)


DEFAULT_STORAGE_URL = "sqlite:///.choreo/registry.db"


def open_store(url: str) -> Store:
    """The store for ``sqlite:///path``, ``sqlite://`` (a temporary file) or ``postgresql://``."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from schemas.storage_sqlite import SqliteStore

        return SqliteStore(url)
    if scheme in ("postgresql", "postgres"):
        from schemas.storage_postgres import PostgresStore

        return PostgresStore(url)
    raise InvalidInputError(
        f"unknown registry storage URL {url!r}: use sqlite:///path/to/registry.db or "
        "postgresql://user@host:5432/db"
    )
