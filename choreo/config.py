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

__all__ = ["setting"]

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
    except (OSError, tomllib.TOMLDecodeError) as exc:
        from broker.errors import ConfigurationError

        raise ConfigurationError(f"cannot read {path}: {exc}; fix or remove the file") from exc


def setting(name: str, flag: str | None = None) -> str:
    """The value of setting ``name`` (e.g. ``broker_url``) by precedence."""
    if flag:
        return flag
    env = os.environ.get(f"CHOREO_{name.upper()}")
    if env:
        return env
    value = _file_settings(os.environ.get("CHOREO_CONFIG", "choreo.toml")).get(name)
    if value:
        return str(value)
    return DEFAULTS[name]
