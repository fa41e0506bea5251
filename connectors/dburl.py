"""Database URLs for the outbox: ``postgresql://``, ``mysql://`` (or ``mariadb://``), ``sqlite:///``.

postgresql://postgres@127.0.0.1:5432/test
mysql://root@127.0.0.1:3306/test
sqlite:///path/to/app.db        (sqlite:////abs/path.db for an absolute path)
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from broker.urls import mask_url
from connectors.errors import OutboxConfigError

__all__ = ["DatabaseURL", "Dialect", "check_identifier"]

Dialect = Literal["postgresql", "mysql", "sqlite"]

_SCHEMES: dict[str, Dialect] = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


def check_identifier(name: str, what: str = "table") -> str:
    """``name`` if it is a plain SQL identifier, else an :class:`OutboxConfigError`."""
    if not _IDENTIFIER.match(name):
        raise OutboxConfigError(
            f"{what} name {name!r} is not a plain identifier: use letters, digits and "
            "underscores, starting with a letter, at most 63 characters"
        )
    return name


@dataclasses.dataclass(frozen=True, slots=True)
class DatabaseURL:
    """A parsed database URL."""

    url: str
    dialect: Dialect
    host: str = "127.0.0.1"
    port: int | None = None
    user: str | None = None
    password: str | None = None
    database: str = ""
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        """Parse ``url``; an unknown scheme raises :class:`OutboxConfigError`."""
        scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
        dialect = _SCHEMES.get(scheme)
        if dialect is None:
            raise OutboxConfigError(
                f"database URL {mask_url(url)!r} is not supported: use postgresql://, "
                "mysql:// (or mariadb://) or sqlite:///path.db"
            )
        parts = urlsplit(url)
        options = tuple(parse_qsl(parts.query))
        if dialect == "sqlite":
            path = url.split("://", 1)[1].split("?", 1)[0]
            path = path[1:] if path.startswith("/") else path
            if not path:
                raise OutboxConfigError(f"database URL {url!r} names no file: use sqlite:///app.db")
            return cls(url, dialect, host="", database=path, options=options)
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise OutboxConfigError(
                f"database URL {mask_url(url)!r} names no database: add it as the path, "
                f"e.g. {scheme}://user@host/mydb"
            )
        return cls(
            url,
            dialect,
            host=parts.hostname or "127.0.0.1",
            port=parts.port,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            database=database,
            options=options,
        )

    @property
    def masked(self) -> str:
        """The URL with its password masked, for messages."""
        return mask_url(self.url)

    @property
    def name(self) -> str:
        """A short name for the database, used in the default CloudEvent source."""
        if self.dialect == "sqlite":
            return self.database.rsplit("/", 1)[-1].removesuffix(".db")
        return self.database

    def psycopg_kwargs(self) -> dict[str, Any]:
        """Connection keywords for psycopg2 / psycopg 3."""
        kwargs: dict[str, Any] = {"host": self.host, "dbname": self.database}
        kwargs["port"] = self.port or 5432
        if self.user:
            kwargs["user"] = self.user
        if self.password:
            kwargs["password"] = self.password
        kwargs.update(dict(self.options))
        return kwargs

    def pymysql_kwargs(self) -> dict[str, Any]:
        """Connection keywords for PyMySQL (and mysql-replication)."""
        return {
            "host": self.host,
            "port": self.port or 3306,
            "user": self.user or "root",
            "password": self.password or "",
        }
