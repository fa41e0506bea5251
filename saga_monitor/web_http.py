"""HTTP plumbing of the saga web server: authentication, and path segments that keep a ``/``.

Authentication takes the schema registry's options: HTTP basic with one user, or one bearer
token, never both and never empty (:func:`auth_from_settings` refuses those). When it is on,
every path but ``/healthz`` needs it (pages, JSON API, ``/openapi.json``, the docs), and a
refusal is a 401 whose ``WWW-Authenticate`` names the scheme.

Correlation ids may hold ``/``: routing works on percent-decoded segments, so ``a%2Fb`` stays
one segment (and the last route parameter also takes a literal ``a/b``).
"""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import quote, unquote, unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from saga_monitor.errors import SagaConfigError
from schemas import http_auth
from schemas.errors import InvalidInputError

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
class BasicAuth(http_auth.BasicAuth):
    """HTTP basic authentication with one user, in the saga server's realm."""

    realm: str = REALM


@dataclasses.dataclass(frozen=True)
class BearerAuth(http_auth.BearerAuth):
    """HTTP bearer-token authentication with one token, in the saga server's realm."""

    realm: str = REALM


Auth = http_auth.BasicAuth | http_auth.BearerAuth


def auth_from_settings(
    user: str | None = None, password: str | None = None, token: str | None = None
) -> Auth | None:
    """The authentication the settings ask for, ``None`` when none is set; contradictory or
    empty settings raise :class:`SagaConfigError` (auth never switches itself off)."""
    try:
        return http_auth.auth_from_settings(user, password, token, realm=REALM)
    except InvalidInputError as exc:
        raise SagaConfigError(str(exc)) from None


def AuthMiddleware(app: ASGIApp, auth: Auth) -> http_auth.AuthMiddleware:
    """Refuse every HTTP request without the credentials (401), except :data:`OPEN_PATHS`."""
    body = json.dumps({"detail": "unauthorized: send the saga server's credentials"})
    return http_auth.AuthMiddleware(app, auth, body.encode(), open_paths=OPEN_PATHS)


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
