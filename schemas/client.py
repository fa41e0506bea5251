"""An async registry client: over HTTP (any Confluent-compatible registry) or embedded.

``RegistryClient.from_url("http://localhost:8081")`` talks REST;
``RegistryClient.from_url("sqlite:///.choreo/registry.db")`` (or ``postgresql://...``) opens the
registry's storage directly, so a demo needs no server. Both behave the same and raise the same
:mod:`schemas.errors`. Schemas by id are cached for good (ids are immutable); registrations by
(subject, schema); the latest version of a subject for ``latest_ttl`` seconds.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from broker.urls import mask_url
from schemas.compatibility import Resolved
from schemas.errors import RegistryError, RegistryUnavailableError, error_for_code
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

__all__ = ["HttpRegistry", "RegistryClient"]

_ACCEPT = "application/vnd.schemaregistry.v1+json, application/json"


def _schema(body: dict[str, Any]) -> Schema:
    refs = tuple(Reference.from_dict(raw) for raw in body.get("references") or ())
    return Schema(str(body["schema"]), SchemaType.parse(body.get("schemaType")), refs)


def _registered(body: dict[str, Any], subject: str | None = None) -> RegisteredSchema:
    return RegisteredSchema(
        subject=str(body.get("subject", subject)),
        version=int(body["version"]),
        id=int(body["id"]),
        schema=_schema(body),
    )


class HttpRegistry:
    """The :class:`~schemas.registry.Registry` operations over Confluent's REST API."""

    def __init__(
        self, url: str, *, auth: tuple[str, str] | str | None = None, timeout: float = 10.0
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Accept": _ACCEPT}
        basic: httpx.BasicAuth | None = None
        if isinstance(auth, str):
            headers["Authorization"] = f"Bearer {auth}"
        elif auth is not None:
            basic = httpx.BasicAuth(*auth)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, auth=basic, timeout=timeout
        )

    async def _call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        query = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
        try:
            response = await self._http.request(method, path, json=body, params=query)
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(
                f"cannot reach the schema registry at {mask_url(self.url)}: "
                f"{exc or type(exc).__name__}; "
                "check that the registry runs there and that the URL is right"
            ) from exc
        if response.is_success:
            return response.json()
        try:
            error = response.json()
            code, message = int(error["error_code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = response.status_code, response.text[:200]
        raise error_for_code(code, response.status_code, message)

    async def register(self, subject: str, schema: Schema) -> RegisteredSchema:
        """Register (``POST /subjects/{s}/versions``), then read back the version."""
        body = await self._call(
            "POST", f"/subjects/{quote(subject, safe='')}/versions", schema.to_dict()
        )
        version = body.get("version")
        if version is None:
            return await self.lookup(subject, schema)
        return RegisteredSchema(subject, int(version), int(body["id"]), schema)

    async def lookup(
        self, subject: str, schema: Schema, *, deleted: bool = False
    ) -> RegisteredSchema:
        """``POST /subjects/{s}``."""
        path = f"/subjects/{quote(subject, safe='')}"
        return _registered(
            await self._call("POST", path, schema.to_dict(), deleted=deleted), subject
        )

    async def schema(self, schema_id: int) -> Schema:
        """``GET /schemas/ids/{id}``."""
        return _schema(await self._call("GET", f"/schemas/ids/{schema_id}"))

    async def version(
        self, subject: str, version: str | int, *, deleted: bool = False
    ) -> RegisteredSchema:
        """``GET /subjects/{s}/versions/{v}``."""
        path = f"/subjects/{quote(subject, safe='')}/versions/{quote(str(version), safe='')}"
        return _registered(await self._call("GET", path, deleted=deleted), subject)

    async def versions(self, subject: str, *, deleted: bool = False) -> list[int]:
        """``GET /subjects/{s}/versions``."""
        path = f"/subjects/{quote(subject, safe='')}/versions"
        return [int(v) for v in await self._call("GET", path, deleted=deleted)]

    async def subjects(self, *, deleted: bool = False) -> list[str]:
        """``GET /subjects``."""
        return [str(s) for s in await self._call("GET", "/subjects", deleted=deleted)]

    async def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        """``DELETE /subjects/{s}``."""
        path = f"/subjects/{quote(subject, safe='')}"
        return [int(v) for v in await self._call("DELETE", path, permanent=permanent)]

    async def delete_version(
        self, subject: str, version: str | int, *, permanent: bool = False
    ) -> int:
        """``DELETE /subjects/{s}/versions/{v}``."""
        path = f"/subjects/{quote(subject, safe='')}/versions/{quote(str(version), safe='')}"
        return int(await self._call("DELETE", path, permanent=permanent))

    async def test_compatibility(
        self, subject: str, schema: Schema, version: str | int | None = None
    ) -> CompatibilityResult:
        """``POST /compatibility/subjects/{s}/versions[/{v}]?verbose=true``."""
        path = f"/compatibility/subjects/{quote(subject, safe='')}/versions"
        if version is not None:
            path += f"/{quote(str(version), safe='')}"
        body = await self._call("POST", path, schema.to_dict(), verbose=True)
        return CompatibilityResult(bool(body["is_compatible"]), tuple(body.get("messages") or ()))

    async def compatibility(
        self, subject: str | None = None, *, default_to_global: bool = False
    ) -> Compatibility:
        """``GET /config[/{s}]``."""
        path = "/config" if subject is None else f"/config/{quote(subject, safe='')}"
        body = await self._call("GET", path, defaultToGlobal=default_to_global)
        return Compatibility.parse(body["compatibilityLevel"])

    async def set_compatibility(
        self, level: str | Compatibility, subject: str | None = None
    ) -> Compatibility:
        """``PUT /config[/{s}]``."""
        path = "/config" if subject is None else f"/config/{quote(subject, safe='')}"
        body = await self._call("PUT", path, {"compatibility": Compatibility.parse(level).value})
        return Compatibility.parse(body["compatibility"])

    async def mode(self, subject: str | None = None, *, default_to_global: bool = False) -> Mode:
        """``GET /mode[/{s}]``."""
        path = "/mode" if subject is None else f"/mode/{quote(subject, safe='')}"
        return Mode.parse(
            (await self._call("GET", path, defaultToGlobal=default_to_global))["mode"]
        )

    async def set_mode(
        self, mode: str | Mode, subject: str | None = None, *, force: bool = False
    ) -> Mode:
        """``PUT /mode[/{s}]``."""
        path = "/mode" if subject is None else f"/mode/{quote(subject, safe='')}"
        body = await self._call("PUT", path, {"mode": Mode.parse(mode).value}, force=force)
        return Mode.parse(body["mode"])

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()


class RegistryClient:
    """The registry as the bus and the serializers use it, with caches.

    Build one with :meth:`from_url`; use it as an async context manager or call :meth:`close`.
    """

    def __init__(
        self,
        backend: Registry | HttpRegistry,
        *,
        owns_backend: bool = True,
        latest_ttl: float = 30.0,
    ) -> None:
        self._backend = backend
        self._owns = owns_backend
        self.latest_ttl = latest_ttl
        self._by_id: dict[int, Schema] = {}
        self._registered: dict[tuple[str, str], RegisteredSchema] = {}
        self._latest: dict[str, tuple[float, RegisteredSchema]] = {}

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        auth: tuple[str, str] | str | None = None,
        timeout: float = 10.0,
        latest_ttl: float = 30.0,
    ) -> RegistryClient:
        """``http(s)://`` for a registry server; ``sqlite:///`` or ``postgresql://`` embedded.

        ``auth`` is ``(user, password)`` for basic auth or a bearer token string.
        """
        scheme = urlsplit(url).scheme.lower()
        backend: Registry | HttpRegistry
        if scheme in ("http", "https"):
            backend = HttpRegistry(url, auth=auth, timeout=timeout)
        else:
            backend = Registry.open(url)
        return cls(backend, latest_ttl=latest_ttl)

    @classmethod
    def embedded(cls, registry: Registry, *, latest_ttl: float = 30.0) -> RegistryClient:
        """A client over a registry object that the caller keeps (and closes)."""
        return cls(registry, owns_backend=False, latest_ttl=latest_ttl)

    @property
    def url(self) -> str:
        """The registry's URL (the storage URL when embedded), as used in ``dataschema``."""
        return mask_url(self._backend.url).rstrip("/")

    @property
    def is_embedded(self) -> bool:
        """Whether the client opens the registry's storage directly."""
        return isinstance(self._backend, Registry)

    async def register(self, subject: str, schema: Schema | str, schema_type: str = "AVRO") -> int:
        """Register a schema under ``subject`` (idempotent) and return its global id."""
        return (await self.register_full(subject, schema, schema_type)).id

    async def register_full(
        self, subject: str, schema: Schema | str, schema_type: str = "AVRO"
    ) -> RegisteredSchema:
        """Register a schema and return subject, version and id."""
        schema = _as_schema(schema, schema_type)
        key = (subject, schema.identity())
        cached = self._registered.get(key)
        if cached is not None:
            return cached
        found = await self._backend.register(subject, schema)
        self._registered[key] = found
        self._by_id.setdefault(found.id, schema)
        self._latest.pop(subject, None)
        return found

    async def lookup(
        self, subject: str, schema: Schema | str, schema_type: str = "AVRO"
    ) -> RegisteredSchema:
        """The version of ``subject`` holding ``schema`` (:class:`SchemaNotFoundError` if none)."""
        schema = _as_schema(schema, schema_type)
        key = (subject, schema.identity())
        cached = self._registered.get(key)
        if cached is None:
            cached = self._registered[key] = await self._backend.lookup(subject, schema)
        return cached

    async def get_schema(self, schema_id: int) -> Schema:
        """The schema with this global id (cached for good)."""
        schema = self._by_id.get(schema_id)
        if schema is None:
            schema = self._by_id[schema_id] = await self._backend.schema(schema_id)
        return schema

    async def resolve(self, schema: Schema) -> Resolved:
        """The schema with the schemas it references, dependencies first."""
        dependencies: dict[str, Schema] = {}
        for ref in schema.references:
            target = await self.resolve((await self.version(ref.subject, ref.version)).schema)
            for name, dependency in target.dependencies:
                dependencies.setdefault(name, dependency)
            dependencies.setdefault(ref.name, target.schema)
        return Resolved(schema, tuple(dependencies.items()))

    async def latest(self, subject: str) -> RegisteredSchema:
        """The newest live version of ``subject`` (cached for ``latest_ttl`` seconds)."""
        now = time.monotonic()
        cached = self._latest.get(subject)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await self._backend.version(subject, "latest")
        self._latest[subject] = (now + self.latest_ttl, found)
        self._by_id.setdefault(found.id, found.schema)
        return found

    async def version(self, subject: str, version: int | str) -> RegisteredSchema:
        """One version of ``subject`` (``latest`` for the newest, uncached)."""
        return await self._backend.version(subject, version)

    async def versions(self, subject: str) -> list[int]:
        """The live versions of ``subject``."""
        return await self._backend.versions(subject)

    async def subjects(self, *, deleted: bool = False) -> list[str]:
        """Subject names, sorted."""
        return await self._backend.subjects(deleted=deleted)

    async def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        """Soft-delete a subject (``permanent`` removes a soft-deleted one)."""
        self._forget(subject)
        return await self._backend.delete_subject(subject, permanent=permanent)

    async def delete_version(
        self, subject: str, version: int | str, *, permanent: bool = False
    ) -> int:
        """Soft-delete one version (``permanent`` removes a soft-deleted one)."""
        self._forget(subject)
        return await self._backend.delete_version(subject, version, permanent=permanent)

    async def check_compatibility(
        self,
        subject: str,
        schema: Schema | str,
        schema_type: str = "AVRO",
        *,
        version: int | str | None = None,
    ) -> CompatibilityResult:
        """Whether ``schema`` may be registered under ``subject``, with the reasons if not."""
        schema = _as_schema(schema, schema_type)
        return await self._backend.test_compatibility(subject, schema, version)

    async def compatibility(self, subject: str | None = None) -> Compatibility:
        """The level in force for ``subject`` (its own, else the global one)."""
        return await self._backend.compatibility(subject, default_to_global=True)

    async def set_compatibility(
        self, level: str | Compatibility, subject: str | None = None
    ) -> Compatibility:
        """Set the level of ``subject``, or the global one."""
        return await self._backend.set_compatibility(level, subject)

    async def mode(self, subject: str | None = None) -> Mode:
        """The mode in force for ``subject`` (its own, else the global one)."""
        return await self._backend.mode(subject, default_to_global=True)

    async def set_mode(
        self, mode: str | Mode, subject: str | None = None, *, force: bool = False
    ) -> Mode:
        """Set the mode of ``subject``, or the global one."""
        return await self._backend.set_mode(mode, subject, force=force)

    def _forget(self, subject: str) -> None:
        self._latest.pop(subject, None)
        for key in [key for key in self._registered if key[0] == subject]:
            del self._registered[key]

    async def close(self) -> None:
        """Close the HTTP pool or the embedded store (if this client opened it)."""
        if isinstance(self._backend, HttpRegistry):
            await self._backend.aclose()
        elif self._owns:
            self._backend.close()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.url!r})"


def _as_schema(schema: Schema | str, schema_type: str) -> Schema:
    if isinstance(schema, Schema):
        return schema
    if not isinstance(schema, str):
        raise RegistryError(f"a schema must be a Schema or its text, got {type(schema).__name__}")
    return Schema(schema, SchemaType.parse(schema_type))
