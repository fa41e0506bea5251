"""Settings: command-line flag, then environment (``CHOREO_*``), then ``choreo.toml``, then default.

``choreo.toml`` in the working directory (or the file named by ``CHOREO_CONFIG``) may hold::

    broker_url = "kafka://127.0.0.1:9092"
    registry_url = "http://127.0.0.1:8081"
    store_url = "sqlite:///.choreo/sagas.db"
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from broker.errors import ConfigurationError
from broker.sqlstore import sqlite_file, sqlite_tables
from broker.urls import mask_url
from choreo.console import fail, reported
from choreo.errors import EXIT_FAILURE

__all__ = ["check_url", "existing", "setting"]

DEFAULTS = {
    "broker_url": "sqlite:///.choreo/broker.db",
    "registry_url": "sqlite:///.choreo/registry.db",
    "store_url": "sqlite:///.choreo/sagas.db",
}


@cache
def _file_settings(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        return {}
    try:
        return tomllib.loads(file.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}; fix or remove the file") from exc


_OPTIONS = {"broker_url": "--broker", "registry_url": "--registry", "store_url": "--store"}


def setting(name: str, flag: str | None = None) -> str:
    """The value of setting ``name`` (e.g. ``broker_url``) by precedence; a URL that does not
    parse, or an unreadable ``choreo.toml``, exits 2 with one line."""
    with reported():
        return check_url(_lookup(name, flag), f"the {_OPTIONS[name]} URL")


def _lookup(name: str, flag: str | None) -> str:
    if flag:
        return flag
    env = os.environ.get(f"CHOREO_{name.upper()}")
    if env:
        return env
    value = _file_settings(os.environ.get("CHOREO_CONFIG", "choreo.toml")).get(name)
    if value:
        return str(value)
    return DEFAULTS[name]


def check_url(url: str, what: str) -> str:
    """``url`` if each of its hosts and ports parses, else a :class:`ConfigurationError` naming
    ``what`` (and not the URL, which may hold a password where the parse went wrong)."""
    if "://" not in url:
        return url
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        raise ConfigurationError(
            f"{what} has a malformed host (an unclosed '['?); write it as scheme://host:port/..."
        ) from None
    for host in netloc.rpartition("@")[2].split(","):  # kafka://h1:9092,h2:9092
        try:
            _ = urlsplit(f"//{host}").port  # raises ValueError for a bad one
        except ValueError:
            raise ConfigurationError(
                f"{what} has a bad host or port (a port is a number from 0 to 65535); "
                "write it as scheme://host:port/..."
            ) from None
    return url


def existing(url: str, what: str, hint: str, *, marker: str | None = None) -> str:
    """``url``, unless it names a SQLite file that is not there: exit 1 with one line naming
    ``what`` and the URL, then ``hint``. A command that only reads would otherwise create an
    empty store (folders included), and a typo would read as 'nothing there'.

    With ``marker`` (a table every such store has), a SQLite file that holds tables but not
    that one is refused the same way: it is something else (the broker's file given as the
    saga store), which opening would fill with empty tables of ours."""
    path = sqlite_file(url)
    if path and not Path(path).exists():
        fail(f"no {what} at {mask_url(url)} (no such file); {hint}", EXIT_FAILURE)
    tables = sqlite_tables(path) if path and marker else None
    if tables and marker not in tables:
        names = ", ".join(sorted(tables)[:4]) + (", ..." if len(tables) > 4 else "")
        fail(f"{mask_url(url)} is not a {what} (it holds the tables {names}); {hint}")
    return url
