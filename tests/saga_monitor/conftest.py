"""Fixtures shared by the saga monitor tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from saga_monitor import SagaStore, open_saga_store
from tests.saga_monitor.helpers import populate


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SagaStore]:
    """A SQLite store with a completed, a compensated, a failed and a stuck order."""
    opened = open_saga_store(f"sqlite:///{tmp_path}/sagas.db")
    populate(opened)
    yield opened
    opened.close()
