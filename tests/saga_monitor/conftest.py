"""Fixtures shared by the saga monitor tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devservers.databases import POSTGRES_URL
from saga_monitor import SagaStore, SqlSagaStore, open_saga_store
from tests.saga_monitor.helpers import populate


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SagaStore]:
    """A SQLite store with a completed, a compensated, a failed and a stuck order."""
    opened = open_saga_store(f"sqlite:///{tmp_path}/sagas.db")
    populate(opened)
    yield opened
    opened.close()


def _fresh_schema() -> Iterator[str]:
    url = f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema=sagas_{uuid.uuid4().hex[:8]}"
    yield url
    store = open_saga_store(url)
    assert isinstance(store, SqlSagaStore)
    store.drop_schema()
    store.close()


@pytest.fixture
def shared_store() -> Iterator[str]:
    """A fresh PostgreSQL schema for the shared saga store (dropped afterwards)."""
    yield from _fresh_schema()


@pytest.fixture
def second_shared_store() -> Iterator[str]:
    """Another fresh PostgreSQL schema, beside :func:`shared_store` (dropped afterwards)."""
    yield from _fresh_schema()
