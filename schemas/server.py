"""The Confluent-compatible REST API over a :class:`~schemas.registry.Registry` (FastAPI).

Everything ``confluent_kafka.schema_registry.SchemaRegistryClient`` calls is here, with
Confluent's JSON shapes, error codes and content type. Subjects may contain ``/`` when it is
percent-encoded (``a%2Fb``); ``GET /associations/...`` answers 404 so that recent clients fall
back to the topic name strategy.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import Body, FastAPI, Query, Request
from fastapi import Path as FastPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.errors import (
    InvalidCompatibilityError,
    InvalidModeError,
    InvalidSchemaError,
    RegistryError,
)
from schemas.http_auth import Auth, AuthMiddleware, BasicAuth, BearerAuth
from schemas.model import Compatibility, CompatibilityResult, Reference, Schema, SchemaType
from schemas.registry import Registry

__all__ = ["CONTENT_TYPE", "OPEN_PATHS", "REALM", "Auth", "BasicAuth", "BearerAuth", "create_app"]

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_MAX_ID = 2**31 - 1  # ids and versions are Java ints in Confluent's API
#: Paths served without authentication (a load balancer's health check).
OPEN_PATHS = frozenset({"/healthz"})
#: The realm named in a refusal's ``WWW-Authenticate``.
REALM = "choreograph schema registry"


class RegistryResponse(JSONResponse):
    """JSON with Confluent's content type."""

    media_type = CONTENT_TYPE


class _ReferenceBody(BaseModel):
    name: str
    subject: str
    version: int = Field(ge=-1, le=_MAX_ID)


class SchemaBody(BaseModel):
    """A schema in a request: ``schema``, ``schemaType``, ``references`` (Confluent's names)."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    schema_text: str = Field(alias="schema")
    schemaType: str | None = None
    references: list[_ReferenceBody] | None = None
    id: int | None = Field(default=None, ge=0, le=_MAX_ID)
    version: int | None = Field(default=None, ge=1, le=_MAX_ID)

    def to_schema(self) -> Schema:
        """The model's schema."""
        refs = tuple(Reference(r.name, r.subject, r.version) for r in self.references or ())
        return Schema(self.schema_text, SchemaType.parse(self.schemaType), refs)


class ConfigBody(BaseModel):
    """``{"compatibility": LEVEL}`` (``compatibilityLevel`` is accepted too)."""

    model_config = ConfigDict(extra="allow")

    compatibility: str | None = None
    compatibilityLevel: str | None = None


class ModeBody(BaseModel):
    """``{"mode": MODE}``."""

    mode: str


class _SubjectPaths:
    """Decode the path segment by segment, keeping an encoded ``/`` inside a segment.

    Starlette routes on the fully decoded path, where ``a%2Fb`` would become two segments.
    Here each segment is decoded and then re-escaped (``%`` and ``/`` only); endpoints unquote
    the subject, so a subject reads back exactly as the client encoded it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] == "http" and raw:
            segments = raw.decode("latin-1").split("?", 1)[0].split("/")
            escaped = (unquote(s).replace("%", "%25").replace("/", "%2F") for s in segments)
            scope = {**scope, "path": "/".join(escaped)}
        await self.app(scope, receive, send)


class _SchemaByIdFastPath:
    """Serve ``GET /schemas/ids/{id}`` for already-read schemas without the framework.

    The hottest call of every deserializer; answering it here, from the registry's cache and
    with the JSON body kept per schema, roughly triples the requests per second. Anything
    else, or a schema not read yet, goes through the FastAPI app as usual.
    """

    def __init__(self, app: ASGIApp, registry: Registry, auth: Auth | None) -> None:
        self.app, self.registry, self.auth = app, registry, auth
        self._bodies: dict[int, tuple[Schema, bytes]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self._body(scope) if scope["type"] == "http" else None
        if body is None:
            await self.app(scope, receive, send)
            return
        headers = [
            (b"content-type", CONTENT_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _body(self, scope: Scope) -> bytes | None:
        path: str = scope["path"]
        if scope["method"] != "GET" or not path.startswith("/schemas/ids/"):
            return None
        if scope.get("query_string"):
            return None
        tail = path[len("/schemas/ids/") :]
        if not tail.isdigit() or not tail.isascii():
            return None
        if self.auth is not None:
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not self.auth.accepts(header):
                return None
        schema = self.registry.cached_schema(int(tail))
        if schema is None:
            return None
        known = self._bodies.get(int(tail))
        if known is None or known[0] is not schema:
            known = self._bodies[int(tail)] = (schema, json.dumps(schema.to_dict()).encode())
        return known[1]


Subject = Annotated[str, "a subject name, percent-encoded in the path"]
SchemaId = Annotated[int, FastPath(ge=0, le=_MAX_ID, description="a global schema id")]
Flag = Annotated[bool, Query()]


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error_code": code, "message": message}
    return RegistryResponse(body, status_code=status, headers=headers)


def _install_errors(app: FastAPI) -> None:
    async def registry_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RegistryError)
        return _error(exc.http_status, exc.error_code, str(exc))

    async def invalid_request(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _error(422, 422, f"invalid request at {where}: {first.get('msg', 'invalid')}")

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return _error(exc.status_code, exc.status_code, f"HTTP {exc.status_code} {exc.detail}")

    app.add_exception_handler(RegistryError, registry_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)


def create_app(registry: Registry, *, auth: Auth | None = None) -> FastAPI:
    """The REST application over ``registry``; ``auth`` protects every path but ``/healthz``
    (the API, ``/openapi.json`` and ``/docs`` alike)."""
    app = FastAPI(
        title="choreograph schema registry",
        version="1",
        description="A Confluent Schema Registry compatible API.",
        default_response_class=RegistryResponse,
    )
    app.add_middleware(_SchemaByIdFastPath, registry=registry, auth=auth)
    app.add_middleware(_SubjectPaths)
    if auth is not None:  # outermost: nothing is served before it
        refusal = {"error_code": 40101, "message": "unauthorized: send the registry's credentials"}
        app.add_middleware(
            AuthMiddleware,
            auth=auth,
            body=json.dumps(refusal).encode(),
            content_type=CONTENT_TYPE,
            open_paths=OPEN_PATHS,
        )
    _install_errors(app)
    _schema_routes(app, registry)
    _subject_routes(app, registry)
    _config_routes(app, registry)
    return app


def _raw(text: str) -> Response:
    return Response(content=text, media_type=CONTENT_TYPE)


def _schema_routes(app: FastAPI, registry: Registry) -> None:
    @app.get("/", summary="Root")
    async def root() -> dict[str, Any]:
        return {}

    @app.get("/healthz", summary="Health check (open when auth is on)")
    async def healthz() -> dict[str, Any]:
        return {}

    @app.get("/schemas/types", summary="Supported schema types")
    async def schema_types() -> list[str]:
        return registry.schema_types()

    @app.get("/schemas", summary="Registered schemas")
    async def list_schemas(
        deleted: Flag = False, subjectPrefix: str = "", latestOnly: Flag = False
    ) -> list[dict[str, Any]]:
        found = await registry.schemas(deleted=deleted)
        found = [s for s in found if s.subject.startswith(subjectPrefix)]
        if latestOnly:
            latest = {s.subject: s for s in found}
            found = list(latest.values())
        return [s.to_dict() for s in found]

    @app.get("/schemas/ids/{schema_id}", summary="A schema by its global id")
    async def schema_by_id(
        schema_id: SchemaId, subject: str | None = None, format: str | None = None
    ) -> dict[str, Any]:
        if subject is None:
            schema = await registry.schema(schema_id)
            return (await registry.formatted(schema, format)).to_dict()
        found = await registry.version_for_id(schema_id, unquote(subject))
        body = {"subject": found.subject, "version": found.version, "id": found.id}
        return {**body, **(await registry.formatted(found.schema, format)).to_dict()}

    @app.get("/schemas/ids/{schema_id}/schema", summary="A schema's raw text by its id")
    async def raw_schema_by_id(schema_id: SchemaId) -> Response:
        return _raw((await registry.schema(schema_id)).text)

    @app.get("/schemas/ids/{schema_id}/subjects", summary="Subjects using a schema id")
    async def subjects_by_id(
        schema_id: SchemaId, deleted: Flag = False, subject: str = ""
    ) -> list[str]:
        pairs = await registry.subject_versions_for_id(schema_id, deleted=deleted)
        return sorted({s for s, _ in pairs if not subject or s == subject})

    @app.get("/schemas/ids/{schema_id}/versions", summary="Subject-versions using a schema id")
    async def versions_by_id(
        schema_id: SchemaId, deleted: Flag = False, subject: str = ""
    ) -> list[dict[str, Any]]:
        pairs = await registry.subject_versions_for_id(schema_id, deleted=deleted)
        return [{"subject": s, "version": v} for s, v in pairs if not subject or s == subject]

    @app.get("/contexts", summary="Contexts (only the default one)")
    async def contexts() -> list[str]:
        return ["."]


def _subject_routes(app: FastAPI, registry: Registry) -> None:
    @app.get("/subjects", summary="Subjects")
    async def subjects(
        deleted: Flag = False,
        deletedOnly: Flag = False,
        subjectPrefix: str = "",
        offset: int = 0,
        limit: int = -1,
    ) -> list[str]:
        names = await registry.subjects(
            deleted=deleted, deleted_only=deletedOnly, prefix=subjectPrefix
        )
        names = names[max(offset, 0) :]
        return names if limit < 0 else names[:limit]

    @app.get("/subjects/{subject}/versions", summary="Versions of a subject")
    async def versions(
        subject: Subject, deleted: Flag = False, deletedOnly: Flag = False
    ) -> list[int]:
        return await registry.versions(unquote(subject), deleted=deleted, deleted_only=deletedOnly)

    @app.post("/subjects/{subject}/versions", summary="Register a schema under a subject")
    async def register(
        subject: Subject, body: Annotated[SchemaBody, Body()], normalize: Flag = False
    ) -> dict[str, Any]:
        found = await registry.register(
            unquote(subject),
            body.to_schema(),
            schema_id=body.id,
            version=body.version,
            normalize=normalize,
        )
        return {"id": found.id, "version": found.version, "subject": found.subject}

    @app.post("/subjects/{subject}", summary="Look a schema up under a subject")
    async def lookup(
        subject: Subject,
        body: Annotated[SchemaBody, Body()],
        normalize: Flag = False,
        deleted: Flag = False,
    ) -> dict[str, Any]:
        found = await registry.lookup(
            unquote(subject), body.to_schema(), deleted=deleted, normalize=normalize
        )
        return found.to_dict()

    @app.get("/subjects/{subject}/versions/{version}", summary="One version of a subject")
    async def version(
        subject: Subject, version: str, deleted: Flag = False, format: str | None = None
    ) -> dict[str, Any]:
        found = await registry.version(unquote(subject), version, deleted=deleted)
        schema = await registry.formatted(found.schema, format)
        return dataclasses.replace(found, schema=schema).to_dict()

    @app.get("/subjects/{subject}/versions/{version}/schema", summary="A version's raw schema")
    async def raw_version(subject: Subject, version: str, deleted: Flag = False) -> Response:
        found = await registry.version(unquote(subject), version, deleted=deleted)
        return _raw(found.schema.text)

    @app.get("/subjects/{subject}/versions/{version}/referencedby", summary="Referencing ids")
    async def referenced_by(subject: Subject, version: str) -> list[int]:
        return await registry.referenced_by(unquote(subject), version)

    @app.delete("/subjects/{subject}", summary="Delete a subject (soft, or permanent)")
    async def delete_subject(subject: Subject, permanent: Flag = False) -> list[int]:
        return await registry.delete_subject(unquote(subject), permanent=permanent)

    @app.delete("/subjects/{subject}/versions/{version}", summary="Delete one version")
    async def delete_version(subject: Subject, version: str, permanent: Flag = False) -> int:
        return await registry.delete_version(unquote(subject), version, permanent=permanent)

    @app.post(
        "/compatibility/subjects/{subject}/versions/{version}",
        summary="Test a schema against one version",
    )
    async def compatible_with(
        subject: Subject,
        version: str,
        body: Annotated[SchemaBody, Body()],
        verbose: Flag = False,
        normalize: Flag = False,
    ) -> dict[str, Any]:
        found = _checked(registry, unquote(subject), body, version, normalize=normalize)
        return (await found(verbose)).to_dict(verbose=verbose)

    @app.post(
        "/compatibility/subjects/{subject}/versions",
        summary="Test a schema against the versions its level names",
    )
    async def compatible(
        subject: Subject,
        body: Annotated[SchemaBody, Body()],
        verbose: Flag = False,
        normalize: Flag = False,
    ) -> dict[str, Any]:
        found = _checked(registry, unquote(subject), body, None, normalize=normalize)
        return (await found(verbose)).to_dict(verbose=verbose)


def _checked(
    registry: Registry, subject: str, body: SchemaBody, version: str | None, *, normalize: bool
) -> Callable[[bool], Awaitable[CompatibilityResult]]:
    """The compatibility check; with ``verbose`` an invalid schema is a failed verdict whose
    message says why, as Confluent answers, instead of a 42201."""

    async def check(verbose: bool) -> CompatibilityResult:
        try:
            schema = body.to_schema()
            return await registry.test_compatibility(subject, schema, version, normalize=normalize)
        except InvalidSchemaError as exc:
            if not verbose:
                raise
            return CompatibilityResult(False, (str(exc),))

    return check


def _level(body: ConfigBody) -> Compatibility:
    raw = body.compatibility or body.compatibilityLevel
    if raw is None:
        raise InvalidCompatibilityError("the body needs a 'compatibility' level")
    return Compatibility.parse(raw)


def _config_routes(app: FastAPI, registry: Registry) -> None:
    @app.get("/config", summary="Global compatibility level")
    async def get_global() -> dict[str, Any]:
        return {"compatibilityLevel": (await registry.compatibility()).value}

    @app.put("/config", summary="Set the global compatibility level")
    async def put_global(body: Annotated[ConfigBody, Body()]) -> dict[str, Any]:
        return {"compatibility": (await registry.set_compatibility(_level(body))).value}

    @app.delete("/config", summary="Reset the global compatibility level")
    async def delete_global() -> dict[str, Any]:
        return {"compatibilityLevel": (await registry.delete_compatibility()).value}

    @app.get("/config/{subject}", summary="A subject's compatibility level")
    async def get_subject(subject: Subject, defaultToGlobal: Flag = False) -> dict[str, Any]:
        level = await registry.compatibility(unquote(subject), default_to_global=defaultToGlobal)
        return {"compatibilityLevel": level.value}

    @app.put("/config/{subject}", summary="Set a subject's compatibility level")
    async def put_subject(subject: Subject, body: Annotated[ConfigBody, Body()]) -> dict[str, Any]:
        level = await registry.set_compatibility(_level(body), unquote(subject))
        return {"compatibility": level.value}

    @app.delete("/config/{subject}", summary="Forget a subject's compatibility level")
    async def delete_subject(subject: Subject) -> dict[str, Any]:
        return {"compatibilityLevel": (await registry.delete_compatibility(unquote(subject))).value}

    @app.get("/mode", summary="Global mode")
    async def get_mode() -> dict[str, Any]:
        return {"mode": (await registry.mode()).value}

    @app.put("/mode", summary="Set the global mode")
    async def put_mode(body: Annotated[ModeBody, Body()], force: Flag = False) -> dict[str, Any]:
        return {"mode": (await registry.set_mode(_mode(body), force=force)).value}

    @app.get("/mode/{subject}", summary="A subject's mode")
    async def get_subject_mode(subject: Subject, defaultToGlobal: Flag = False) -> dict[str, Any]:
        mode = await registry.mode(unquote(subject), default_to_global=defaultToGlobal)
        return {"mode": mode.value}

    @app.put("/mode/{subject}", summary="Set a subject's mode")
    async def put_subject_mode(
        subject: Subject, body: Annotated[ModeBody, Body()], force: Flag = False
    ) -> dict[str, Any]:
        mode = await registry.set_mode(_mode(body), unquote(subject), force=force)
        return {"mode": mode.value}

    @app.delete("/mode/{subject}", summary="Forget a subject's mode")
    async def delete_subject_mode(subject: Subject) -> dict[str, Any]:
        return {"mode": (await registry.delete_mode(unquote(subject))).value}


def _mode(body: ModeBody) -> str:
    if not body.mode:
        raise InvalidModeError("the body needs a 'mode'")
    return body.mode
