"""The registry service: Confluent's rules for subjects, versions, ids, deletes, config, modes.

:class:`Registry` is what the REST server and the embedded client call. Every operation runs in
one storage transaction on a worker thread (the stores are synchronous), so its checks and its
writes see one consistent state; writes hold the store's writer lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from schemas import registry_tx as rtx
from schemas.compatibility import Resolved, check_compatibility
from schemas.errors import (
    CompatibilityNotConfiguredError,
    IncompatibleSchemaError,
    ModeNotConfiguredError,
    OperationNotPermittedError,
    SchemaNotFoundError,
    SubjectNotFoundError,
    SubjectNotSoftDeletedError,
    SubjectSoftDeletedError,
    VersionNotFoundError,
    VersionNotSoftDeletedError,
    VersionSoftDeletedError,
)
from schemas.model import (
    Compatibility,
    CompatibilityResult,
    Mode,
    RegisteredSchema,
    Schema,
    SchemaType,
)
from schemas.registry_tx import VersionSpec, parse_version
from schemas.storage import GLOBAL, SchemaStore, Transaction, VersionRow

__all__ = ["DEFAULT_COMPATIBILITY", "Registry", "VersionSpec", "parse_version"]

T = TypeVar("T")
DEFAULT_COMPATIBILITY = Compatibility.BACKWARD
_MAX_VERSION = rtx.MAX_VERSION


class Registry:
    """A schema registry over a :class:`~schemas.storage.SchemaStore`."""

    def __init__(self, store: SchemaStore) -> None:
        self.store = store
        self._by_id: dict[int, Schema] = {}

    @classmethod
    def open(cls, url: str) -> Registry:
        """A registry over the store at ``url`` (``sqlite:///...`` or ``postgresql://...``)."""
        return cls(SchemaStore(url))

    @property
    def url(self) -> str:
        """The storage URL."""
        return self.store.url

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    async def _run(self, func: Callable[[Transaction], T], *, write: bool = False) -> T:
        def work() -> T:
            with self.store.transaction(write=write) as tx:
                return func(tx)

        return await asyncio.to_thread(work)

    # -- registering and reading ---------------------------------------------------------

    async def register(
        self,
        subject: str,
        schema: Schema,
        *,
        schema_id: int | None = None,
        version: int | None = None,
        normalize: bool = False,
    ) -> RegisteredSchema:
        """Register ``schema`` under ``subject`` (idempotent); returns id and version.

        ``schema_id`` and ``version`` may be given only in IMPORT mode, which also skips the
        compatibility check. ``normalize`` stores the schema's normal form and finds an
        equivalent registered one (:mod:`schemas.normalize`).
        """
        return await self._run(
            lambda tx: self._register(tx, subject, schema, (schema_id, version), normalize),
            write=True,
        )

    def _register(
        self,
        tx: Transaction,
        subject: str,
        schema: Schema,
        wanted: tuple[int | None, int | None],
        normalize: bool,
    ) -> RegisteredSchema:
        rtx.check_subject(subject)
        rtx.check_writable(tx, subject)
        importing = rtx.mode(tx, subject) is Mode.IMPORT
        if wanted != (None, None) and not importing:
            raise OperationNotPermittedError(
                f"subject {subject!r} is not in import mode; an id or version cannot be given"
            )
        resolved = rtx.prepared(tx, schema, normalize=normalize)
        rows = tx.versions(subject)
        live = [row for row in rows if not row.deleted]
        found = rtx.same_schema(tx, live, resolved, normalize=normalize)
        if found is not None:
            return RegisteredSchema(subject, found.version, found.schema_id, resolved.schema)
        if not importing:
            self._check_or_raise(tx, subject, resolved, live)
        key = rtx.fingerprint(resolved)
        new_id = self._schema_id(tx, resolved.schema, key, tx.schema_id(key), wanted[0])
        new_version = wanted[1] or max((row.version for row in rows), default=0) + 1
        if any(row.version == new_version for row in rows):
            raise OperationNotPermittedError(
                f"subject {subject!r} already has a version {new_version}"
            )
        tx.add_version(subject, new_version, new_id)
        return RegisteredSchema(subject, new_version, new_id, resolved.schema)

    def _schema_id(
        self, tx: Transaction, schema: Schema, key: str, known: int | None, wanted: int | None
    ) -> int:
        if wanted is None:
            return known if known is not None else tx.add_schema(schema, key)
        if known == wanted:
            return wanted
        if known is not None or tx.schema(wanted) is not None:
            raise OperationNotPermittedError(
                f"schema id {wanted} is already used by another schema (42207)"
            )
        return tx.add_schema(schema, key, wanted)

    def _check_or_raise(
        self, tx: Transaction, subject: str, resolved: Resolved, live: list[VersionRow]
    ) -> None:
        level = self._compatibility(tx, subject)
        history = [(row.version, rtx.resolve(tx, rtx.schema_of(tx, row))) for row in live]
        result = check_compatibility(resolved, history, level)
        if not result.is_compatible:
            details = ", ".join(result.messages)
            raise IncompatibleSchemaError(
                f'Schema being registered is incompatible with an earlier schema for subject "'
                f'{subject}", details: [{details}]',
                list(result.messages),
            )

    async def lookup(
        self, subject: str, schema: Schema, *, deleted: bool = False, normalize: bool = False
    ) -> RegisteredSchema:
        """The version of ``subject`` that holds ``schema`` (40401 / 40403 when none)."""

        def work(tx: Transaction) -> RegisteredSchema:
            found = rtx.rows(tx, subject, deleted=deleted)
            resolved = rtx.prepared(tx, schema, normalize=normalize)
            row = rtx.same_schema(tx, found, resolved, normalize=normalize)
            if row is None:
                raise SchemaNotFoundError(f"schema not found under subject {subject!r}")
            return rtx.registered(tx, row)

        return await self._run(work)

    def cached_schema(self, schema_id: int) -> Schema | None:
        """The schema with this id if this process has read it already (no I/O)."""
        return self._by_id.get(schema_id)

    async def schema(self, schema_id: int) -> Schema:
        """The schema with this global id (40403 when none)."""
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached

        def work(tx: Transaction) -> Schema:
            schema = tx.schema(schema_id) if 0 <= schema_id <= _MAX_VERSION else None
            if schema is None or not tx.versions(schema_id=schema_id):
                raise SchemaNotFoundError(f"schema {schema_id} not found")
            return schema

        schema = await self._run(work)
        self._by_id[schema_id] = schema
        return schema

    async def formatted(self, schema: Schema, fmt: str | None) -> Schema:
        """The schema as ``format=`` asks: ``serialized`` gives a Protobuf schema as a base64
        ``FileDescriptorProto`` (what confluent-kafka's deserializer reads); other formats and
        types are returned as registered."""
        if fmt != "serialized" or schema.type is not SchemaType.PROTOBUF:
            return schema

        def work(tx: Transaction) -> Schema:
            from schemas.compatibility import compiled_proto

            text = compiled_proto(rtx.resolve(tx, schema)).serialized()
            return Schema(text, schema.type, schema.references)

        return await self._run(work)

    async def schemas(self, *, deleted: bool = False) -> list[RegisteredSchema]:
        """The latest version of every schema under every subject."""

        def work(tx: Transaction) -> list[RegisteredSchema]:
            return [
                RegisteredSchema(row.subject, row.version, row.schema_id, rtx.schema_of(tx, row))
                for row in tx.versions()
                if deleted or not row.deleted
            ]

        return await self._run(work)

    async def subject_versions_for_id(
        self, schema_id: int, *, deleted: bool = False
    ) -> list[tuple[str, int]]:
        """The ``(subject, version)`` pairs that use this schema id."""

        def work(tx: Transaction) -> list[tuple[str, int]]:
            if not 0 <= schema_id <= _MAX_VERSION:
                raise SchemaNotFoundError(f"schema {schema_id} not found")
            rows = tx.versions(schema_id=schema_id)
            if tx.schema(schema_id) is None or not rows:
                raise SchemaNotFoundError(f"schema {schema_id} not found")
            return [(row.subject, row.version) for row in rows if deleted or not row.deleted]

        return await self._run(work)

    async def version_for_id(self, schema_id: int, subject: str) -> RegisteredSchema:
        """A subject-version using the id: ``subject``'s newest one when it uses it, else the
        first one found (``GET /schemas/ids/{id}?subject=``)."""
        pairs = await self.subject_versions_for_id(schema_id, deleted=True)
        mine = [pair for pair in pairs if pair[0] == subject]
        name, number = (mine or pairs)[-1 if mine else 0]
        return RegisteredSchema(name, number, schema_id, await self.schema(schema_id))

    async def subjects(
        self, *, deleted: bool = False, deleted_only: bool = False, prefix: str = ""
    ) -> list[str]:
        """Subject names, sorted: with live versions; ``deleted`` adds those with soft-deleted
        versions; ``deleted_only`` lists only subjects that have soft-deleted versions."""

        def work(tx: Transaction) -> list[str]:
            live: set[str] = set()
            dead: set[str] = set()
            for row in tx.versions():
                (dead if row.deleted else live).add(row.subject)
            names = dead if deleted_only else (live | dead if deleted else live)
            return sorted(name for name in names if name.startswith(prefix))

        return await self._run(work)

    async def versions(
        self, subject: str, *, deleted: bool = False, deleted_only: bool = False
    ) -> list[int]:
        """The versions of ``subject`` (40401 when it has none); ``deleted_only`` lists only
        the soft-deleted ones."""
        found = await self._run(lambda tx: rtx.rows(tx, subject, deleted=deleted or deleted_only))
        return [row.version for row in found if row.deleted or not deleted_only]

    async def version(
        self, subject: str, version: str | int, *, deleted: bool = False
    ) -> RegisteredSchema:
        """One version of ``subject``; ``latest`` or ``-1`` is the newest."""
        spec = parse_version(version)

        def work(tx: Transaction) -> RegisteredSchema:
            return rtx.registered(
                tx, rtx.find(rtx.rows(tx, subject, deleted=deleted), subject, spec)
            )

        return await self._run(work)

    async def referenced_by(self, subject: str, version: str | int) -> list[int]:
        """Ids of the schemas that reference this version."""
        spec = parse_version(version)

        def work(tx: Transaction) -> list[int]:
            row = rtx.find(rtx.rows(tx, subject), subject, spec)
            return tx.referenced_by(subject, row.version)

        return await self._run(work)

    # -- deleting ------------------------------------------------------------------------

    async def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        """Soft-delete every version (or, ``permanent``, remove soft-deleted ones)."""
        deleted = await self._run(
            lambda tx: self._delete_subject(tx, subject, permanent), write=True
        )
        if permanent:
            self._by_id.clear()
        return deleted

    def _delete_subject(self, tx: Transaction, subject: str, permanent: bool) -> list[int]:
        rtx.check_writable(tx, subject)
        rows = tx.versions(subject)
        if not rows:
            raise SubjectNotFoundError(f"subject {subject!r} not found")
        live = [row for row in rows if not row.deleted]
        if permanent:
            if live:
                raise SubjectNotSoftDeletedError(
                    f"subject {subject!r} was not deleted first before being permanently "
                    "deleted; delete it without permanent=true first"
                )
            for row in rows:
                tx.remove_version(subject, row.version)
            tx.delete_setting("config", subject)
            tx.delete_setting("mode", subject)
            return [row.version for row in rows]
        if not live:
            raise SubjectSoftDeletedError(
                f"subject {subject!r} was soft deleted; set permanent=true to delete permanently"
            )
        for row in live:
            rtx.check_unreferenced(tx, row)
            tx.mark_deleted(subject, row.version)
        return [row.version for row in live]

    async def delete_version(
        self, subject: str, version: str | int, *, permanent: bool = False
    ) -> int:
        """Soft-delete one version (or, ``permanent``, remove a soft-deleted one)."""
        spec = parse_version(version)
        deleted = await self._run(
            lambda tx: self._delete_version(tx, subject, spec, permanent), write=True
        )
        if permanent:
            self._by_id.clear()
        return deleted

    def _delete_version(
        self, tx: Transaction, subject: str, spec: VersionSpec, permanent: bool
    ) -> int:
        rtx.check_writable(tx, subject)
        rows = rtx.rows(tx, subject, deleted=True)
        live = [r for r in rows if not r.deleted]
        row = rtx.find(live if spec == "latest" and live and not permanent else rows, subject, spec)
        if permanent and not row.deleted:
            raise VersionNotSoftDeletedError(
                f"version {row.version} of subject {subject!r} was not deleted first before "
                "being permanently deleted; delete it without permanent=true first"
            )
        if not permanent and row.deleted:
            raise VersionSoftDeletedError(
                f"version {row.version} of subject {subject!r} was soft deleted; "
                "set permanent=true to delete permanently"
            )
        rtx.check_unreferenced(tx, row)
        if permanent:
            tx.remove_version(subject, row.version)
        else:
            tx.mark_deleted(subject, row.version)
        return row.version

    # -- compatibility -------------------------------------------------------------------

    async def test_compatibility(
        self,
        subject: str,
        schema: Schema,
        version: str | int | None = None,
        *,
        normalize: bool = False,
    ) -> CompatibilityResult:
        """Whether ``schema`` may follow ``version`` (``None``: the versions the level names).

        A subject without versions (none registered, or all deleted) accepts anything, as
        Confluent's registry answers (``is_compatible: true``), unless a version number is asked
        for: 404 / 40402 ``Version N not found.``, as Confluent's.
        """
        spec = None if version is None else parse_version(version)

        def work(tx: Transaction) -> CompatibilityResult:
            resolved = rtx.prepared(tx, schema, normalize=normalize)
            level = self._compatibility(tx, subject)
            live = [row for row in tx.versions(subject) if not row.deleted]
            if spec is not None and (live or spec != "latest"):
                live = [row for row in live if spec in ("latest", row.version)][-1:]
                if not live:  # Confluent's words, whether or not the subject exists
                    raise VersionNotFoundError(f"Version {spec} not found.")
                level = Compatibility.parse(level.value.removesuffix("_TRANSITIVE"))
            history = [(row.version, rtx.resolve(tx, rtx.schema_of(tx, row))) for row in live]
            return check_compatibility(resolved, history, level)

        return await self._run(work)

    # -- config and mode -----------------------------------------------------------------

    def _compatibility(self, tx: Transaction, subject: str) -> Compatibility:
        raw = tx.setting("config", subject) or tx.setting("config", GLOBAL)
        return Compatibility.parse(raw) if raw else DEFAULT_COMPATIBILITY

    async def compatibility(
        self, subject: str | None = None, *, default_to_global: bool = False
    ) -> Compatibility:
        """The level of ``subject`` (40408 if it has none, unless ``default_to_global``)."""

        def work(tx: Transaction) -> Compatibility:
            if subject is None or default_to_global:
                return self._compatibility(tx, subject or GLOBAL)
            raw = tx.setting("config", subject)
            if raw is None:
                raise CompatibilityNotConfiguredError(
                    f"subject {subject!r} does not have subject-level compatibility configured"
                )
            return Compatibility.parse(raw)

        return await self._run(work)

    async def set_compatibility(
        self, level: str | Compatibility, subject: str | None = None
    ) -> Compatibility:
        """Set the level of ``subject`` or, ``None``, the global one."""
        parsed = Compatibility.parse(level)

        def work(tx: Transaction) -> None:
            rtx.check_writable(tx, subject or GLOBAL)
            tx.set_setting("config", subject or GLOBAL, parsed.value)

        await self._run(work, write=True)
        return parsed

    async def delete_compatibility(self, subject: str | None = None) -> Compatibility:
        """Forget a level (the global one falls back to BACKWARD); returns the old one."""

        def work(tx: Transaction) -> Compatibility:
            rtx.check_writable(tx, subject or GLOBAL)
            old = self._compatibility(tx, subject or GLOBAL)
            tx.delete_setting("config", subject or GLOBAL)
            return old

        return await self._run(work, write=True)

    async def mode(self, subject: str | None = None, *, default_to_global: bool = False) -> Mode:
        """The mode of ``subject`` (40409 if it has none, unless ``default_to_global``)."""

        def work(tx: Transaction) -> Mode:
            if subject is None or default_to_global:
                return rtx.mode(tx, subject or GLOBAL)
            raw = tx.setting("mode", subject)
            if raw is None:
                raise ModeNotConfiguredError(
                    f"subject {subject!r} does not have subject-level mode configured"
                )
            return Mode.parse(raw)

        return await self._run(work)

    async def set_mode(
        self, mode: str | Mode, subject: str | None = None, *, force: bool = False
    ) -> Mode:
        """Set the mode; IMPORT needs an empty subject (or registry) unless ``force``."""
        parsed = Mode.parse(mode)

        def work(tx: Transaction) -> Mode:
            if parsed is Mode.IMPORT and not force:
                rows = tx.versions(subject) if subject else tx.versions()
                if any(not row.deleted for row in rows):
                    raise OperationNotPermittedError(
                        "cannot import since found existing subjects; use force=true to override"
                    )
            tx.set_setting("mode", subject or GLOBAL, parsed.value)
            return parsed

        return await self._run(work, write=True)

    async def delete_mode(self, subject: str) -> Mode:
        """Forget a subject's mode; returns the old one."""

        def work(tx: Transaction) -> Mode:
            old = rtx.mode(tx, subject)
            tx.delete_setting("mode", subject)
            return old

        return await self._run(work, write=True)

    @staticmethod
    def schema_types() -> list[str]:
        """The schema types this registry accepts."""
        return [kind.value for kind in SchemaType]

    def __repr__(self) -> str:
        return f"Registry({self.url!r})"
