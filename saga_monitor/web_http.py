"""HTTP plumbing of the saga web server: authentication, and path segments that keep a ``/``.

Authentication takes the schema registry's options: HTTP basic with one user, or one bearer
token, never both and never empty (:func:`auth_from_settings` refuses those). When it is on,
every path but ``/healthz`` needs it (pages, JSON API, ``/openapi.json``, the docs), and a
refusal is a 401 whose ``WWW-Authenticate`` names the scheme.

Correlation ids may hold ``/``: routing works on percent-decoded segments, so ``a%2Fb`` stays
one segment (and the last route parameter also takes a literal ``a/b``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import secrets
from urllib.parse import quote, unquote, unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from saga_monitor.errors import SagaConfigError

__all__ = [
    "OPEN_PATHS",
    "Auth",
    "AuthMiddleware",
    "BasicAuth",
    "BearerAuth",
    "SegmentPaths",
    "auth_from_settings",
    "segment",
]

#: Paths served without authentication (a load balancer's health check).
OPEN_PATHS = frozenset({"/healthz"})
REALM = "choreograph sagas"


@dataclasses.dataclass(frozen=True)
class BasicAuth:
    """HTTP basic authentication with one user."""

    username: str
    password: str = dataclasses.field(repr=False)

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of a refusal."""
        return f'Basic realm="{REALM}", charset="UTF-8"'

    def accepts(self, header: str) -> bool:
        """Whether an ``Authorization`` header carries these credentials."""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        expected = f"{self.username}:{self.password}".encode()
        return secrets.compare_digest(given, expected)


@dataclasses.dataclass(frozen=True)
class BearerAuth:
    """HTTP bearer-token authentication with one token."""

    token: str = dataclasses.field(repr=False)

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of a refusal."""
        return f'Bearer realm="{REALM}"'

    def accepts(self, header: str) -> bool:
        """Whether an ``Authorization`` header carries this token."""
        scheme, _, value = header.partition(" ")
        given = value.strip().encode("latin-1", "replace")
        return scheme.lower() == "bearer" and secrets.compare_digest(
            given, self.token.encode("utf-8")
        )


Auth = BasicAuth | BearerAuth


def auth_from_settings(
    user: str | None = None, password: str | None = None, token: str | None = None
) -> Auth | None:
    """The authentication the settings ask for, ``None`` when none is set; contradictory or
    empty settings raise :class:`SagaConfigError` (auth never switches itself off)."""
    if token is not None and (user is not None or password is not None):
        raise SagaConfigError(
            "choose one authentication: a bearer token (--auth-token) or basic auth "
            "(--auth-user and --auth-password), not both"
        )
    if token is not None:
        if not token.strip() or token != token.strip():
            raise SagaConfigError("the auth token is empty or has spaces around it; set a token")
        return BearerAuth(token)
    if user is None and password is None:
        return None
    if not user or not password:
        raise SagaConfigError("basic auth needs a non-empty --auth-user and --auth-password")
    if ":" in user:
        raise SagaConfigError(f"the auth user {user!r} cannot contain ':' (HTTP basic auth)")
    return BasicAuth(user, password)


class AuthMiddleware:
    """Refuse every HTTP request without the credentials (401), except :data:`OPEN_PATHS`."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app, self.auth = app, auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": "unauthorized: send the saga server's credentials"})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", self.auth.challenge.encode()),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body.encode()})

    def _allowed(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        return self.auth.accepts(header)


class SegmentPaths:
    """Route on the raw path split at its literal ``/``: each segment is percent-decoded (as
    UTF-8) and re-escaped for ``%`` and ``/`` only, so ``a%2Fb`` stays one segment.

    Endpoints read their path parameters with :func:`segment`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] == "http" and raw:
            parts = raw.split(b"?", 1)[0].split(b"/")
            decoded = (unquote_to_bytes(p).decode("utf-8", "replace") for p in parts)
            scope = {**scope, "path": "/".join(quote(d, safe="") for d in decoded)}
        await self.app(scope, receive, send)


def segment(value: str) -> str:
    """A path parameter as the client meant it (undoes :class:`SegmentPaths`' escaping)."""
    return unquote(value)
