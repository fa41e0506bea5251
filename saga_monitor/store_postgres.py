"""``postgresql://user:pass@host:5432/db[?schema=name]``: a saga store several monitors share.

Uses psycopg 3 (``pip install 'choreograph[postgres]'``). The tables live in ``schema``
(default ``public``; created when missing). Each event's application is one transaction, and
``SELECT ... FOR UPDATE`` on the instance row keeps two monitors from overwriting each other
when a redelivery after a rebalance reaches the other one.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from broker.urls import mask_url
from saga_monitor.errors import StoreError
from saga_monitor.store_sql import SQLStore

__all__ = ["PostgresStore"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS saga_instances (saga TEXT NOT NULL, correlation_id TEXT NOT NULL, "
    "state TEXT NOT NULL, started DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL, "
    "due DOUBLE PRECISION, finished DOUBLE PRECISION, doc TEXT NOT NULL, "
    "PRIMARY KEY (saga, correlation_id))",
    "CREATE INDEX IF NOT EXISTS saga_instances_due ON saga_instances (due)",
    "CREATE INDEX IF NOT EXISTS saga_instances_updated ON saga_instances (updated)",
    "CREATE INDEX IF NOT EXISTS saga_instances_corr ON saga_instances (correlation_id)",
    "CREATE TABLE IF NOT EXISTS saga_orphans (saga TEXT NOT NULL, correlation_id TEXT NOT NULL, "
    "event_key TEXT NOT NULL, time DOUBLE PRECISION NOT NULL, doc TEXT NOT NULL, "
    "reported INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (saga, correlation_id, event_key))",
    "CREATE TABLE IF NOT EXISTS saga_alerts (seq BIGSERIAL PRIMARY KEY, doc TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS saga_monitors (name TEXT PRIMARY KEY, "
    "watermark DOUBLE PRECISION, lag DOUBLE PRECISION, updated DOUBLE PRECISION NOT NULL)",
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresStore(SQLStore):
    """The PostgreSQL saga store."""

    placeholder = "%s"
    schema_sql = _SCHEMA

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = mask_url(url)
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        self.schema = query.pop("schema", "public")
        if not _IDENTIFIER.match(self.schema):
            raise StoreError(f"saga store {self.url}: schema {self.schema!r} is not a plain name")
        scheme = "postgresql"
        dsn = urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), ""))
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError(
                "a postgresql:// saga store needs psycopg; install it with: "
                "pip install 'choreograph[postgres]'"
            ) from exc
        try:
            self._conn = psycopg.connect(dsn, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the saga store {self.url}: {str(exc).strip().splitlines()[0]}; "
                "check that PostgreSQL runs there and the credentials are right"
            ) from exc
        self._execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        self._execute(f'SET search_path TO "{self.schema}"')
        self._create_schema()

    def sql(self, text: str) -> str:
        text = text.replace("?", "%s")
        if text.startswith("SELECT doc FROM saga_instances WHERE saga = %s AND correlation_id"):
            return text + " FOR UPDATE"
        return text

    def _translate(self, exc: Exception) -> StoreError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreError(f"saga store {self.url}: {first}")

    def drop_schema(self) -> None:
        """Drop the schema and everything in it (for tests and ``--reset``)."""
        self._execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def _raw(self) -> Any:
        return self._conn
