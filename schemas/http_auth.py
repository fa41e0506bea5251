"""HTTP authentication of choreograph's two servers, the schema registry and the saga web page.

One way to switch it on (HTTP basic with one user, or one bearer token) and one way to refuse:

* :func:`auth_from_settings` turns the command-line settings into an :data:`Auth`, and refuses
  what would switch auth off without a word or contradict itself (an empty or blank token, a
  token together with basic auth, a user without a password or the other way round, a user name
  holding ``:``);
* :class:`AuthMiddleware` answers every request without the credentials with a 401 whose
  ``WWW-Authenticate`` names the scheme and the server's realm, except the open paths (a health
  check): the API, ``/openapi.json`` and the docs pages alike.

Passwords and tokens stay out of the objects' ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import secrets
from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.errors import InvalidInputError

__all__ = ["Auth", "AuthMiddleware", "BasicAuth", "BearerAuth", "auth_from_settings"]


@dataclasses.dataclass(frozen=True)
class BasicAuth:
    """HTTP basic authentication with one user."""

    username: str
    password: str = dataclasses.field(repr=False)
    realm: str = "choreograph"

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of a refusal."""
        return f'Basic realm="{self.realm}", charset="UTF-8"'

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
    realm: str = "choreograph"

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of a refusal."""
        return f'Bearer realm="{self.realm}"'

    def accepts(self, header: str) -> bool:
        """Whether an ``Authorization`` header carries this token."""
        scheme, _, value = header.partition(" ")
        given = value.strip().encode("latin-1", "replace")
        return scheme.lower() == "bearer" and secrets.compare_digest(
            given, self.token.encode("utf-8")
        )


Auth = BasicAuth | BearerAuth


def auth_from_settings(
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    *,
    realm: str = "choreograph",
) -> Auth | None:
    """The authentication the settings ask for, ``None`` when none is set; contradictory or
    empty settings raise :class:`~schemas.errors.InvalidInputError` (auth never switches
    itself off)."""
    if token is not None and (user is not None or password is not None):
        raise InvalidInputError(
            "choose one authentication: a bearer token (--auth-token) or basic auth "
            "(--auth-user and --auth-password), not both"
        )
    if token is not None:
        if not token.strip() or token != token.strip():
            raise InvalidInputError("the auth token is empty or has spaces around it; set a token")
        return BearerAuth(token, realm)
    if user is None and password is None:
        return None
    if not user or not password:
        raise InvalidInputError("basic auth needs a non-empty --auth-user and --auth-password")
    if ":" in user:
        raise InvalidInputError(f"the auth user {user!r} cannot contain ':' (HTTP basic auth)")
    return BasicAuth(user, password, realm)


class AuthMiddleware:
    """Refuse every HTTP request without the credentials (401 with ``body``), except
    ``open_paths``."""

    def __init__(
        self,
        app: ASGIApp,
        auth: Auth,
        body: bytes,
        content_type: str = "application/json",
        open_paths: Collection[str] = (),
    ) -> None:
        self.app, self.auth, self.body = app, auth, body
        self.open_paths = frozenset(open_paths)
        self.headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", auth.challenge.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 401, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})

    def _allowed(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        return self.auth.accepts(header)
